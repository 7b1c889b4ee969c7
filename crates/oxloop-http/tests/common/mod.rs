//! Test helpers: a server on its own thread and loop, and a tiny raw-socket client.

#![allow(dead_code)]

use oxloop::{EventLoop, LoopRemote};
use oxloop_http::HttpServer;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A server running on a thread of its own; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    remote: LoopRemote,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Runs `make` on a new thread's loop and serves until dropped.
    pub fn start(
        make: impl FnOnce(&EventLoop) -> io::Result<HttpServer> + Send + 'static,
    ) -> TestServer {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ev = EventLoop::new().unwrap();
            let server = make(&ev).unwrap();
            tx.send((server.local_addr(), ev.remote())).unwrap();
            ev.run_forever().unwrap();
            drop(server);
            // The connections still open hold the loop (and the listener's callback
            // holds the server's state, which holds the loop): without this the loop
            // and all they hold would stay allocated after the test (valgrind reports
            // them lost).
            ev.destroy();
        });
        let (addr, remote) = rx.recv().unwrap();
        TestServer {
            addr,
            remote,
            thread: Some(thread),
        }
    }

    /// Whether the server thread is still running (a panic would have ended it).
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.remote.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `limit` times `$OXLOOP_TEST_TIME_SCALE` (a whole number, 1 when unset): time-outs
/// stretched where everything runs slower (`crates/oxloop/memcheck.sh` sets it, as
/// valgrind runs code 20-50 times slower).
pub fn time_limit(limit: Duration) -> Duration {
    let scale = std::env::var("OXLOOP_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    limit * scale
}

/// A connected client socket with a 5 s read timeout (times the time scale).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(time_limit(Duration::from_secs(5))))
        .unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `request` and reads until the server closes.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    read_to_close(&mut s)
}

/// Reads until end of stream (or a reset, or the timeout).
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    all
}

/// Whether the peer closed `s` (end of stream or reset) within the timeout.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Reads one response from `s`, carrying extra bytes in `pending`. `head_only`: the
/// request was HEAD (no body follows).
pub fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Option<Resp> {
    let fill = |s: &mut TcpStream, pending: &mut Vec<u8>| -> bool {
        let mut buf = [0u8; 16384];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                true
            }
        }
    };
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(s, pending) {
            return None;
        }
    };
    let head = String::from_utf8(pending[..end].to_vec()).unwrap();
    pending.drain(..end);
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let mut resp = Resp {
        status,
        head,
        body: Vec::new(),
    };
    if head_only || status < 200 || status == 204 || status == 304 {
        return Some(resp);
    }
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().unwrap();
        while pending.len() < len {
            if !fill(s, pending) {
                return None;
            }
        }
        resp.body = pending.drain(..len).collect();
    } else if resp.header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !fill(s, pending) {
                    return None;
                }
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&pending[..line_end]).unwrap(), 16)
                    .unwrap();
            pending.drain(..line_end + 2);
            while pending.len() < size + 2 {
                if !fill(s, pending) {
                    return None;
                }
            }
            resp.body.extend_from_slice(&pending[..size]);
            pending.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        // Delimited by the end of the connection.
        resp.body = std::mem::take(pending);
        resp.body.extend(read_to_close(s));
    }
    Some(resp)
}

/// All responses in `bytes` (a whole conversation read to the end).
pub fn parse_all(bytes: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..i + 4]).to_string();
        rest = &rest[i + 4..];
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut r = Resp {
            status,
            head,
            body: Vec::new(),
        };
        if let Some(len) = r.header("content-length") {
            let len: usize = len.parse().unwrap();
            let len = len.min(rest.len());
            r.body = rest[..len].to_vec();
            rest = &rest[len..];
        }
        out.push(r);
    }
    out
}

/// The file descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// This process's resident memory in bytes.
pub fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A fresh, empty directory in the system's temporary directory, named after the test
/// and this process; removed with its contents when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("oxloop-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
