//! HTTP plaintext: servers answering every `GET` with `Hello, World!`, wrk when it is
//! installed, and a small built-in keep-alive load generator that checks every
//! response (status, `Content-Length`, body).

use crate::latency::Histogram;
use crate::loadgen::{LoadResult, STALL};
use crate::servers::Serve;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

/// The body every server answers with.
pub const BODY: &[u8] = b"Hello, World!";

/// oxloop-http answering with a closure handler, as its `http_hello` example does.
pub fn bind_oxloop(addr: SocketAddr) -> io::Result<(SocketAddr, Serve)> {
    serve_hello(oxloop::EventLoop::new()?, addr)
}

/// [`bind_oxloop`]'s server on a loop with the io_uring backend.
pub fn bind_oxloop_uring(addr: SocketAddr) -> io::Result<(SocketAddr, Serve)> {
    serve_hello(crate::servers::uring_loop()?, addr)
}

fn serve_hello(ev: oxloop::EventLoop, addr: SocketAddr) -> io::Result<(SocketAddr, Serve)> {
    let server =
        oxloop_http::HttpServer::bind(&ev, addr, oxloop_http::Config::default(), |_req| {
            oxloop_http::Response::text("Hello, World!").content_type("text/plain")
        })?;
    let bound = server.local_addr();
    Ok((
        bound,
        Box::new(move || {
            let _server = server;
            ev.run_forever()
        }),
    ))
}

/// [`bind_oxloop`]'s server on `loops` loops of a cluster sharing `addr` with
/// `SO_REUSEPORT` (`Config::reuse_port`), as `oxloop serve-http --threads N` runs;
/// returns the cluster and the address its loops share.
pub fn oxloop_cluster(
    addr: SocketAddr,
    loops: usize,
) -> io::Result<(oxloop::cluster::Cluster, SocketAddr)> {
    use oxloop::cluster::{Cluster, SharedAddrs};
    let shared = SharedAddrs::new(vec![addr]);
    let for_loops = shared.clone();
    let cluster = Cluster::start(loops, move |ev, _| {
        let shared = &for_loops;
        let config = oxloop_http::Config::default().reuse_port(true);
        let server = oxloop_http::HttpServer::bind(ev, &shared.get()[..], config, |_req| {
            oxloop_http::Response::text("Hello, World!").content_type("text/plain")
        })?;
        shared.set(vec![server.local_addr()]);
        // The hook owns the server, so it lives as long as the loop.
        Cluster::on_shutdown(move || server.shutdown(|| {}));
        Ok(())
    })?;
    let bound = shared.get()[0];
    Ok((cluster, bound))
}

/// hyper 1.x, HTTP/1 only, on tokio's `current_thread` runtime (the usual way to run
/// hyper on one core), one task per connection; `pipeline_flush` lets it answer
/// pipelined requests with one write.
pub fn bind_hyper(addr: SocketAddr) -> io::Result<(SocketAddr, Serve)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    Ok((bound, Box::new(move || hyper_server(listener))))
}

fn hyper_server(listener: TcpListener) -> io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use std::convert::Infallible;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(BODY)))
                            .expect("a valid response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The limit: level-triggered epoll, one read, one canned response per request head
/// seen (each `\r\n\r\n`), all written at once; what the socket refuses waits for
/// `EPOLLOUT`. No parsing beyond that, no allocation per request. The response
/// carries a `Date` header, re-formatted when the second changes, as real servers do.
pub fn bind_raw(addr: SocketAddr) -> io::Result<(SocketAddr, Serve)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    Ok((bound, Box::new(move || raw_server(listener))))
}

struct RawHttpConn {
    stream: TcpStream,
    /// How much of `\r\n\r\n` the previous read ended with.
    matched: usize,
    /// Response bytes the socket did not take yet.
    pending: Vec<u8>,
}

fn raw_server(listener: TcpListener) -> io::Result<()> {
    const LISTENER: u64 = u64::MAX;
    const END: &[u8] = b"\r\n\r\n";
    const IN: u32 = libc::EPOLLIN as u32;
    const IN_OUT: u32 = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
    listener.set_nonblocking(true)?;
    let ep = crate::sys::Epoll::new()?;
    ep.add(listener.as_raw_fd(), IN, LISTENER)?;
    let mut conns: Vec<Option<RawHttpConn>> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut response = CannedResponse::default();
    loop {
        let n = ep.wait(&mut events, -1)?;
        for ev in &events[..n] {
            let (token, flags) = (ev.u64, ev.events);
            if token == LISTENER {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true)?;
                    s.set_nodelay(true)?;
                    let fd = s.as_raw_fd();
                    ep.add(fd, IN, fd as u64)?;
                    if conns.len() <= fd as usize {
                        conns.resize_with(fd as usize + 1, || None);
                    }
                    conns[fd as usize] = Some(RawHttpConn {
                        stream: s,
                        matched: 0,
                        pending: Vec::new(),
                    });
                }
                continue;
            }
            let fd = token as usize;
            let Some(c) = conns[fd].as_mut() else {
                continue;
            };
            let mut close = false;
            if flags & libc::EPOLLOUT as u32 != 0 && !c.pending.is_empty() {
                match (&c.stream).write(&c.pending) {
                    Ok(w) => {
                        c.pending.drain(..w);
                        if c.pending.is_empty() {
                            ep.modify(fd as i32, IN, token)?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => close = true,
                }
            }
            if !close && flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                match (&c.stream).read(&mut buf) {
                    Ok(0) => close = true,
                    Ok(r) => {
                        let mut requests = 0;
                        for &b in &buf[..r] {
                            if b == END[c.matched] {
                                c.matched += 1;
                                if c.matched == END.len() {
                                    requests += 1;
                                    c.matched = 0;
                                }
                            } else {
                                c.matched = usize::from(b == END[0]);
                            }
                        }
                        if requests > 0 {
                            out.clear();
                            let response = response.get();
                            for _ in 0..requests {
                                out.extend_from_slice(response);
                            }
                            if !c.pending.is_empty() {
                                c.pending.extend_from_slice(&out);
                            } else {
                                match (&c.stream).write(&out) {
                                    Ok(w) if w == out.len() => {}
                                    Ok(w) => c.pending.extend_from_slice(&out[w..]),
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                        c.pending.extend_from_slice(&out)
                                    }
                                    Err(_) => close = true,
                                }
                                if !c.pending.is_empty() {
                                    ep.modify(fd as i32, IN_OUT, token)?;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => close = true,
                }
            }
            if close {
                ep.delete(fd as i32)?;
                conns[fd] = None;
            }
        }
    }
}

/// The raw responder's response, its `Date` header rewritten when the second changes.
#[derive(Default)]
struct CannedResponse {
    second: u64,
    bytes: Vec<u8>,
}

impl CannedResponse {
    fn get(&mut self) -> &[u8] {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.bytes.is_empty() {
            self.second = second;
            self.bytes = format!(
                "HTTP/1.1 200 OK\r\nServer: raw\r\nDate: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{}",
                httpdate::fmt_http_date(now),
                BODY.len(),
                std::str::from_utf8(BODY).expect("ASCII")
            )
            .into_bytes();
        }
        &self.bytes
    }
}

/// What wrk reported.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Response bytes read per second.
    pub bytes_per_s: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Wall time.
    pub elapsed: Duration,
}

/// Whether `wrk` can be run.
pub fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains("wrk")
                || String::from_utf8_lossy(&o.stderr).contains("wrk")
        })
}

/// wrk's Lua script that sends `depth` requests in one write (the usual
/// `pipeline.lua`: `depth` `wrk.format()` requests concatenated).
fn pipeline_script(depth: usize) -> String {
    format!(
        "init = function(args)\n  local r = {{}}\n  for i = 1, {depth} do\n    r[i] = wrk.format(nil, \"/\")\n  end\n  req = table.concat(r)\nend\n\nrequest = function()\n  return req\nend\n"
    )
}

/// Runs `wrk -t1 -c<connections> -d<secs>s --latency` against `addr` (it inherits
/// this thread's CPU affinity), with `pipeline` requests sent per write on each
/// connection (1: plain keep-alive; more: a pipelining Lua script). wrk counts every
/// response. Socket errors or non-2xx responses are an error.
pub fn run_wrk(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    pipeline: usize,
) -> io::Result<WrkResult> {
    let secs = duration.as_secs().max(1);
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    let script = if pipeline > 1 {
        let path = std::env::temp_dir().join(format!(
            "oxloop-bench-pipeline-{pipeline}-{}.lua",
            std::process::id()
        ));
        std::fs::write(&path, pipeline_script(pipeline))?;
        cmd.arg("-s").arg(&path);
        Some(path)
    } else {
        None
    };
    let out = cmd.arg(format!("http://{addr}/")).output();
    if let Some(path) = script {
        let _ = std::fs::remove_file(path);
    }
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    parse_wrk(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{e} in wrk output:\n{text}"),
        )
    })
}

fn parse_time(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    num.parse::<f64>()
        .ok()
        .map(|v| Duration::from_secs_f64(v * scale))
}

fn parse_size(s: &str) -> Option<f64> {
    for (suffix, scale) in [
        ("KB", 1024.0),
        ("MB", 1048576.0),
        ("GB", 1073741824.0),
        ("B", 1.0),
    ] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// Reads wrk's report; errors on socket errors or non-2xx/3xx responses.
pub fn parse_wrk(text: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult::default();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        match cols.as_slice() {
            ["50%", t] => r.p50 = parse_time(t).ok_or("bad p50")?,
            ["99%", t] => r.p99 = parse_time(t).ok_or("bad p99")?,
            [n, "requests", "in", t, ..] => {
                r.requests = n.parse().map_err(|_| "bad request count")?;
                r.elapsed = parse_time(t.trim_end_matches(',')).ok_or("bad time")?;
            }
            ["Requests/sec:", v] => r.requests_per_s = v.parse().map_err(|_| "bad rate")?,
            ["Transfer/sec:", v] => r.bytes_per_s = parse_size(v).ok_or("bad transfer")?,
            ["Socket", "errors:", ..] => {
                let total: u64 = cols
                    .iter()
                    .filter_map(|c| c.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
                if total > 0 {
                    return Err(format!("wrk saw socket errors ({line})"));
                }
            }
            ["Non-2xx", ..] => return Err(format!("wrk saw failed responses ({line})")),
            _ => {}
        }
    }
    if r.requests == 0 {
        return Err("no request completed".into());
    }
    Ok(r)
}

struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    sent_at: Instant,
    done: bool,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// If `buf` starts with a whole response, checks it and returns its length.
fn take_response(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err(bad("response head over 16 KiB".into()));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head not UTF-8".into()))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(bad(format!(
            "unexpected response: {:?}",
            head.lines().next()
        )));
    }
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or_else(|| bad("no Content-Length".into()))?;
    let total = head_end + 4 + len;
    if buf.len() < total {
        return Ok(None);
    }
    if &buf[head_end + 4..total] != BODY {
        return Err(bad(format!(
            "unexpected body {:?}",
            String::from_utf8_lossy(&buf[head_end + 4..total])
        )));
    }
    Ok(Some(total))
}

/// Keep-alive `GET /` on `connections` connections, one request in flight on each,
/// for `duration`; every response must be `200` with the body [`BODY`]. `bytes` in
/// the result counts response bytes.
pub fn http_load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
) -> io::Result<LoadResult> {
    let ep = crate::sys::Epoll::new()?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.write_all(REQUEST)?;
        stream.set_nonblocking(true)?;
        ep.add(stream.as_raw_fd(), libc::EPOLLIN as u32, i as u64)?;
        conns.push(HttpConn {
            stream,
            buf: Vec::with_capacity(1024),
            sent_at: Instant::now(),
            done: false,
        });
    }
    let deadline = start + duration;
    let mut latency = Histogram::new();
    let (mut requests, mut bytes) = (0u64, 0u64);
    let mut active = connections;
    let mut last_progress = start;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while active > 0 {
        let n = ep.wait(&mut events, 100)?;
        let now = Instant::now();
        if n == 0 && now.duration_since(last_progress) > STALL {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP response for 10 s",
            ));
        }
        for ev in &events[..n] {
            let c = &mut conns[ev.u64 as usize];
            if c.done {
                continue;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the HTTP server",
                    ))
                }
                Ok(r) => c.buf.extend_from_slice(&chunk[..r]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            last_progress = now;
            if let Some(len) = take_response(&c.buf)? {
                if len != c.buf.len() {
                    return Err(bad("bytes after the response".into()));
                }
                c.buf.clear();
                latency.record(now.duration_since(c.sent_at));
                requests += 1;
                bytes += len as u64;
                if now >= deadline {
                    c.done = true;
                    active -= 1;
                } else {
                    c.sent_at = now;
                    // The previous response was read whole: the socket buffer is empty.
                    c.stream.write_all(REQUEST)?;
                }
            }
        }
    }
    Ok(LoadResult {
        messages: requests,
        bytes,
        elapsed: start.elapsed(),
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 10 connections\n  Latency Distribution\n     50%  120.00us\n     75%  200.00us\n     90%  1.00ms\n     99%    2.50ms\n  12345 requests in 1.00s, 1.50MB read\nRequests/sec:  12345.00\nTransfer/sec:      1.50MB\n";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 12345);
        assert_eq!(r.p50, Duration::from_micros(120));
        assert_eq!(r.p99, Duration::from_micros(2500));
        assert!((r.bytes_per_s - 1.5 * 1048576.0).abs() < 1.0);
        assert!(parse_wrk(&format!("{text}  Non-2xx or 3xx responses: 3\n")).is_err());
        assert!(parse_wrk(&format!(
            "{text}  Socket errors: connect 0, read 2, write 0, timeout 0\n"
        ))
        .is_err());
    }

    #[test]
    fn responses_are_checked() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nHello, World!";
        assert_eq!(take_response(ok).unwrap(), Some(ok.len()));
        assert_eq!(take_response(&ok[..20]).unwrap(), None);
        assert!(take_response(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n").is_err());
        assert!(
            take_response(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nHello, world!").is_err()
        );
    }
}
