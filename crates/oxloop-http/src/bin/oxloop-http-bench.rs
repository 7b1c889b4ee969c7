//! `oxloop-http-bench`: oxloop-http against hyper and a hand-written epoll responder,
//! all answering `Hello, World!`, measured with wrk.
//!
//! ```text
//! cargo run --release -p oxloop-http --features bench --bin oxloop-http-bench -- run
//! ```
//!
//! `run` starts each server in a child process pinned to one CPU (`taskset`), runs
//! wrk (`-t1 -c100`, plain and with 16 pipelined requests per connection) pinned to
//! another, and reads the server's CPU time (user + system) from `/proc/PID/stat`
//! before and after. Options: `--duration SECS` (10), `--connections N` (100),
//! `--server-cpu C` (0), `--client-cpu C` (1), `--servers a,b,c`, `--rounds N` (1;
//! the servers take turns each round and the medians are reported, because a shared
//! machine's kernel time varies by ±20 % from run to run).
//!
//! `serve KIND ADDR` runs one server in the foreground (`oxloop`, `hyper`, `epoll`)
//! and prints `listening on ADDR`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KINDS: [&str; 3] = ["oxloop", "hyper", "epoll"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() == 3 => serve(&args[1], &args[2]),
        Some("run") => run(&args[1..]),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: oxloop-http-bench run [--duration S] [--connections N] [--server-cpu C] \
             [--client-cpu C] [--servers oxloop,hyper,epoll] [--rounds N] | serve KIND ADDR",
        )),
    };
    if let Err(e) = result {
        eprintln!("oxloop-http-bench: {e}");
        std::process::exit(1);
    }
}

// ----- the servers --------------------------------------------------------------------

fn serve(kind: &str, addr: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let announce = |listener: &TcpListener| -> io::Result<()> {
        println!("listening on {}", listener.local_addr()?);
        io::stdout().flush()
    };
    match kind {
        "oxloop" => {
            let addr = listener.local_addr()?;
            drop(listener);
            let ev = oxloop::EventLoop::new()?;
            let server =
                oxloop_http::HttpServer::bind(&ev, addr, oxloop_http::Config::default(), |_req| {
                    oxloop_http::Response::text("Hello, World!").content_type("text/plain")
                })?;
            println!("listening on {}", server.local_addr());
            io::stdout().flush()?;
            ev.run_forever()
        }
        "hyper" => {
            announce(&listener)?;
            hyper_server(listener)
        }
        "epoll" => {
            announce(&listener)?;
            epoll_server(listener)
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown server {other:?}"),
        )),
    }
}

/// hyper 1.x, HTTP/1 only, on tokio's current-thread runtime: the usual way to run
/// hyper on one core. `pipeline_flush` lets it answer pipelined requests with one
/// write.
fn hyper_server(listener: TcpListener) -> io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use std::convert::Infallible;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::task::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(b"Hello, World!")))
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

struct RawConn {
    stream: TcpStream,
    /// How much of `\r\n\r\n` the last read ended with.
    matched: usize,
    /// Response bytes the socket did not take yet.
    pending: Vec<u8>,
}

/// The limit: level-triggered epoll, one read, count the request heads (every
/// `\r\n\r\n`), one write of that many canned responses (with a Date header kept per
/// second). No parsing, no allocation per request. Only for GET-style load.
fn epoll_server(listener: TcpListener) -> io::Result<()> {
    use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};

    const LISTENER: u64 = u64::MAX;
    listener.set_nonblocking(true)?;
    let ep = epoll::create(CreateFlags::CLOEXEC)?;
    epoll::add(&ep, &listener, EventData::new_u64(LISTENER), EventFlags::IN)?;
    let mut conns: slab::Slab<RawConn> = slab::Slab::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut date = DateCache::default();
    loop {
        events.clear();
        match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter().copied() {
            let key = ev.data.u64();
            if key == LISTENER {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true)?;
                    stream.set_nodelay(true)?;
                    let entry = conns.vacant_entry();
                    epoll::add(
                        &ep,
                        &stream,
                        EventData::new_u64(entry.key() as u64),
                        EventFlags::IN,
                    )?;
                    entry.insert(RawConn {
                        stream,
                        matched: 0,
                        pending: Vec::new(),
                    });
                }
                continue;
            }
            let key = key as usize;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let flags = ev.flags;
            let mut close = false;
            if flags.contains(EventFlags::OUT) && !conn.pending.is_empty() {
                match conn.stream.write(&conn.pending) {
                    Ok(n) => {
                        conn.pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => close = true,
                }
                if conn.pending.is_empty() {
                    epoll::modify(
                        &ep,
                        &conn.stream,
                        EventData::new_u64(key as u64),
                        EventFlags::IN,
                    )?;
                }
            }
            if !close && flags.intersects(EventFlags::IN | EventFlags::HUP | EventFlags::ERR) {
                match conn.stream.read(&mut buf) {
                    Ok(0) => close = true,
                    Ok(n) => {
                        let mut requests = 0;
                        for &b in &buf[..n] {
                            let want = b"\r\n\r\n"[conn.matched];
                            if b == want {
                                conn.matched += 1;
                                if conn.matched == 4 {
                                    requests += 1;
                                    conn.matched = 0;
                                }
                            } else {
                                conn.matched = usize::from(b == b'\r');
                            }
                        }
                        if requests > 0 {
                            out.clear();
                            let response = date.response();
                            for _ in 0..requests {
                                out.extend_from_slice(response);
                            }
                            if conn.pending.is_empty() {
                                match conn.stream.write(&out) {
                                    Ok(w) if w == out.len() => {}
                                    Ok(w) => conn.pending.extend_from_slice(&out[w..]),
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                        conn.pending.extend_from_slice(&out)
                                    }
                                    Err(_) => close = true,
                                }
                                if !conn.pending.is_empty() {
                                    epoll::modify(
                                        &ep,
                                        &conn.stream,
                                        EventData::new_u64(key as u64),
                                        EventFlags::IN | EventFlags::OUT,
                                    )?;
                                }
                            } else {
                                conn.pending.extend_from_slice(&out);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => close = true,
                }
            }
            if close {
                let conn = conns.remove(key);
                let _ = epoll::delete(&ep, &conn.stream);
            }
        }
    }
}

/// The canned response, its Date header rewritten when the second changes.
#[derive(Default)]
struct DateCache {
    second: u64,
    response: Vec<u8>,
}

impl DateCache {
    fn response(&mut self) -> &[u8] {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.response.is_empty() {
            self.second = second;
            self.response = format!(
                "HTTP/1.1 200 OK\r\nServer: epoll\r\nDate: {}\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!",
                httpdate::fmt_http_date(now)
            )
            .into_bytes();
        }
        &self.response
    }
}

// ----- the driver -----------------------------------------------------------------

struct Options {
    duration: u64,
    connections: usize,
    server_cpu: usize,
    client_cpu: usize,
    servers: Vec<String>,
    rounds: usize,
}

fn parse_options(args: &[String]) -> io::Result<Options> {
    let mut o = Options {
        duration: 10,
        connections: 100,
        server_cpu: 0,
        client_cpu: 1,
        servers: KINDS.iter().map(|s| s.to_string()).collect(),
        rounds: 1,
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("bad {what}"));
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = it.next().ok_or_else(|| bad(arg))?;
        match arg.as_str() {
            "--duration" => o.duration = value.parse().map_err(|_| bad(arg))?,
            "--connections" => o.connections = value.parse().map_err(|_| bad(arg))?,
            "--server-cpu" => o.server_cpu = value.parse().map_err(|_| bad(arg))?,
            "--client-cpu" => o.client_cpu = value.parse().map_err(|_| bad(arg))?,
            "--servers" => o.servers = value.split(',').map(str::to_string).collect(),
            "--rounds" => o.rounds = value.parse::<usize>().map_err(|_| bad(arg))?.max(1),
            _ => return Err(bad(arg)),
        }
    }
    Ok(o)
}

/// A server child process, killed when dropped.
struct ServerChild {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(kind: &str, cpu: usize) -> io::Result<ServerChild> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(exe)
        .args(["serve", kind, "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("server said {line:?}"))
        })?;
    Ok(ServerChild { child, addr })
}

/// User and system CPU time of `pid` (`/proc/PID/stat` fields 14 and 15).
fn cpu_time(pid: u32) -> io::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() != 2 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"));
    }
    // The kernel's USER_HZ is 100 on every Linux configuration in use.
    Ok((
        Duration::from_millis(fields[0] * 10),
        Duration::from_millis(fields[1] * 10),
    ))
}

const PIPELINE_LUA: &str = r#"
init = function(args)
   local r = {}
   for i = 1, 16 do
      r[i] = wrk.format(nil, "/")
   end
   req = table.concat(r)
end

request = function()
   return req
end
"#;

/// One measurement: requests/s, user and system ns per request.
type Run = (f64, f64, f64);

struct WrkResult {
    requests: u64,
    rps: f64,
    errors: String,
}

fn wrk(
    addr: SocketAddr,
    o: &Options,
    duration: u64,
    script: Option<&std::path::Path>,
) -> io::Result<WrkResult> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(o.client_cpu.to_string())
        .arg("wrk")
        .args([
            "-t1",
            &format!("-c{}", o.connections),
            &format!("-d{duration}s"),
        ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://{addr}/"));
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("wrk said: {text}")))?;
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    Ok(WrkResult {
        requests,
        rps,
        errors,
    })
}

fn run(args: &[String]) -> io::Result<()> {
    let o = parse_options(args)?;
    let script =
        std::env::temp_dir().join(format!("oxloop-http-pipeline-{}.lua", std::process::id()));
    std::fs::File::create(&script)?.write_all(PIPELINE_LUA.as_bytes())?;
    println!(
        "wrk -t1 -c{} -d{}s, servers on CPU {}, wrk on CPU {}, {} round(s)\n",
        o.connections, o.duration, o.server_cpu, o.client_cpu, o.rounds
    );
    println!(
        "| round | server | load | requests/s | server CPU per request (user + system) | errors |"
    );
    println!("|---|---|---|---|---|---|");
    // (server, load) -> per round: (requests/s, user ns, system ns)
    let mut results: Vec<(String, &str, Vec<Run>)> = Vec::new();
    for round in 1..=o.rounds {
        for kind in &o.servers {
            for (mode, script) in [("plain", None), ("pipelined x16", Some(script.as_path()))] {
                let server = start_server(kind, o.server_cpu)?;
                check_hello(server.addr)?;
                wrk(server.addr, &o, 1, script)?; // warm-up
                let before = cpu_time(server.child.id())?;
                let r = wrk(server.addr, &o, o.duration, script)?;
                let after = cpu_time(server.child.id())?;
                let per = |d: Duration| d.as_nanos() as f64 / r.requests.max(1) as f64;
                let (user, system) = (per(after.0 - before.0), per(after.1 - before.1));
                println!(
                    "| {round} | {kind} | {mode} | {:.0} | {:.0} ns ({:.0} + {:.0}) | {} |",
                    r.rps,
                    user + system,
                    user,
                    system,
                    if r.errors.is_empty() {
                        "none"
                    } else {
                        &r.errors
                    }
                );
                match results.iter_mut().find(|(k, m, _)| k == kind && *m == mode) {
                    Some(entry) => entry.2.push((r.rps, user, system)),
                    None => results.push((kind.clone(), mode, vec![(r.rps, user, system)])),
                }
            }
        }
    }
    let _ = std::fs::remove_file(&script);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\nMedians over the rounds:\n");
    println!("| server | load | requests/s | CPU per request | user | system |");
    println!("|---|---|---|---|---|---|");
    let mut totals = Vec::new();
    for (kind, mode, runs) in &results {
        let rps = median(runs.iter().map(|r| r.0).collect());
        let total = median(runs.iter().map(|r| r.1 + r.2).collect());
        let user = median(runs.iter().map(|r| r.1).collect());
        let system = median(runs.iter().map(|r| r.2).collect());
        println!("| {kind} | {mode} | {rps:.0} | {total:.0} ns | {user:.0} ns | {system:.0} ns |");
        totals.push((kind.clone(), *mode, total, user));
    }
    println!();
    for mode in ["plain", "pipelined x16"] {
        let get = |k: &str| {
            totals
                .iter()
                .find(|(kind, m, _, _)| kind == k && *m == mode)
                .map(|r| (r.2, r.3))
        };
        if let (Some(ox), Some(hy)) = (get("oxloop"), get("hyper")) {
            println!(
                "{mode}: oxloop / hyper CPU per request = {:.2} (target <= 0.75); user space only {:.2}",
                ox.0 / hy.0,
                ox.1 / hy.1
            );
        }
        if let (Some(ox), Some(ep)) = (get("oxloop"), get("epoll")) {
            println!(
                "{mode}: oxloop / epoll CPU per request = {:.2} (target <= 1.10); user space only {:.2}",
                ox.0 / ep.0,
                ox.1 / ep.1
            );
        }
    }
    Ok(())
}

/// One request by hand: the server must answer `Hello, World!`.
fn check_hello(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    while !text.ends_with("Hello, World!") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    if !text.starts_with("HTTP/1.1 200") || !text.ends_with("Hello, World!") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer: {text:?}"),
        ));
    }
    Ok(())
}
