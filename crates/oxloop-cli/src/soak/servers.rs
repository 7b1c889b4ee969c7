//! The echo servers `oxloop soak` runs, one per target, each counting what happened
//! to its connections.
//!
//! Each guards itself the way its API offers: the protocol server sets the transport's
//! water marks, pauses reading while writing is paused and cuts (aborts) a connection
//! whose peer takes nothing for the stall timeout, with timeouts owned by the
//! transport (`Transport::call_later`); the async server wraps its first read and
//! every write in `task::timeout`; oxloop-http has both built in (`Config`'s
//! `idle_timeout`, `head_timeout`, `body_timeout`). A connection whose first bytes
//! are the panic marker makes the protocol panic after echoing them (the async task
//! when the client closes; HTTP uses `/panic`).

use super::load::PANIC_MAGIC;
use super::Target;
use oxloop::io::{AsyncReadExt, AsyncWriteExt};
use oxloop::protocol::{LoopNetExt, Protocol, Server, ServerOptions, Transport};
use oxloop::{task, EventLoop, Handle};
use oxloop_http::{Config, HttpServer, Response};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// The protocol server's write-buffer high-water mark.
pub const HIGH_WATER: usize = 64 * 1024;
/// Its low-water mark.
pub const LOW_WATER: usize = 16 * 1024;
/// The listen backlog of the protocol and async servers: the most Linux allows by
/// default (`net.core.somaxconn`). With 1,024, thousands of connections arriving
/// at once overflow the accept queue and the kernel drops some before the server
/// sees them. oxloop-http listens with its own 1,024.
const BACKLOG: i32 = 4096;
/// The most one read can add to a write buffer: the transport's read buffer.
pub const READ_CHUNK: usize = 64 * 1024;

/// What a server counted.
#[derive(Debug, Default, Serialize, Deserialize, Clone)]
#[serde(default)]
pub struct ServerCounts {
    /// Connections accepted (HTTP: requests answered, as oxloop-http does not count
    /// connections).
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections that ended without an error (client close or the server's cut).
    pub closed_clean: u64,
    /// Connections that ended with an error (mostly resets).
    pub closed_with_error: u64,
    /// Connections cut for sending nothing within the timeout.
    pub idle_cuts: u64,
    /// Connections cut for taking none of the server's output within the timeout.
    pub stall_cuts: u64,
    /// Panics raised on purpose (protocol, task or handler).
    pub panics_raised: u64,
    /// The largest write buffer seen on any transport (protocol target).
    pub max_write_buffer: u64,
    /// Bytes echoed (HTTP: request bodies answered).
    pub bytes_echoed: u64,
    /// HTTP requests answered.
    pub requests: u64,
    /// Accept errors seen by the async accept loop (it sleeps 100 ms after each).
    pub accept_errors: u64,
}

/// Counters shared by a server's connections (all on the loop's thread).
#[derive(Default)]
pub struct Counters(RefCell<ServerCounts>);

impl Counters {
    fn with(&self, f: impl FnOnce(&mut ServerCounts)) {
        f(&mut self.0.borrow_mut())
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> ServerCounts {
        self.0.borrow().clone()
    }
}

/// A running server.
pub enum RunningServer {
    /// The protocol API's server.
    Protocol(Server),
    /// The async accept loop's task.
    Async(task::JoinHandle<()>),
    /// oxloop-http.
    Http(HttpServer),
}

impl RunningServer {
    /// Stops listening (open connections are not touched).
    pub fn close(self) {
        match self {
            RunningServer::Protocol(s) => s.close(),
            RunningServer::Async(t) => t.abort(),
            RunningServer::Http(s) => s.shutdown(|| {}),
        }
    }

    /// Connections open now, by the server's own count where it keeps one.
    pub fn open(&self, counters: &Counters) -> u64 {
        match self {
            RunningServer::Http(s) => s.connections() as u64,
            _ => counters.snapshot().open,
        }
    }
}

/// Starts `target`'s echo server on an ephemeral port of 127.0.0.1.
pub fn start(
    ev: &EventLoop,
    target: Target,
    counters: Rc<Counters>,
    timeout: Duration,
    max_connections: usize,
) -> io::Result<(RunningServer, SocketAddr)> {
    match target {
        Target::Protocol => {
            let options = ServerOptions::new().backlog(BACKLOG);
            let server = ev.create_server_with("127.0.0.1:0", &options, move || SoakEcho {
                counters: counters.clone(),
                timeout,
                transport: None,
                first: Vec::new(),
                idle: None,
                stall: Rc::new(RefCell::new(None)),
            })?;
            let addr = server.socket_addrs()[0];
            Ok((RunningServer::Protocol(server), addr))
        }
        Target::Async => {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
            socket.listen(BACKLOG)?;
            let listener: std::net::TcpListener = socket.into();
            let addr = listener.local_addr()?;
            // Registered with the thread's current loop: `ev`, the newest one.
            let listener = oxloop::net::TcpListener::from_std(listener)?;
            let accept = ev.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((sock, _)) => {
                            let counters = counters.clone();
                            task::spawn(serve_async(sock, counters, timeout));
                        }
                        Err(_) => {
                            // Out of fds (EMFILE) or a connection reset before it was
                            // accepted: back off instead of spinning.
                            counters.with(|c| c.accept_errors += 1);
                            task::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            Ok((RunningServer::Async(accept), addr))
        }
        Target::Python => Err(io::Error::other("the python target runs its own server")),
        Target::Http => {
            let config = Config::default()
                .idle_timeout(timeout)
                .head_timeout(timeout)
                .body_timeout(timeout * 2)
                .max_connections(max_connections);
            let server = HttpServer::bind(ev, "127.0.0.1:0", config, move |req| {
                if req.path() == "/panic" {
                    counters.with(|c| c.panics_raised += 1);
                    panic!("soak: handler panic");
                }
                counters.with(|c| {
                    c.requests += 1;
                    c.bytes_echoed += req.body().len() as u64;
                });
                Response::bytes("application/octet-stream", req.body().to_vec())
            })?;
            let addr = server.local_addr();
            Ok((RunningServer::Http(server), addr))
        }
    }
}

/// The protocol API's echo, guarded against idle and stalled peers.
struct SoakEcho {
    counters: Rc<Counters>,
    timeout: Duration,
    transport: Option<Transport>,
    /// The connection's first bytes, up to the panic marker's length.
    first: Vec<u8>,
    idle: Option<Handle>,
    /// The pending stall check, re-armed by itself while the peer makes progress.
    stall: Rc<RefCell<Option<Handle>>>,
}

impl Protocol for SoakEcho {
    fn connection_made(&mut self, transport: Transport) {
        self.counters.with(|c| {
            c.accepted += 1;
            c.open += 1;
        });
        let _ = transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER);
        let t = transport.clone();
        let counters = self.counters.clone();
        self.idle = Some(transport.call_later(self.timeout, move || {
            counters.with(|c| c.idle_cuts += 1);
            t.abort();
        }));
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(idle) = self.idle.take() {
            idle.cancel();
        }
        let Some(t) = &self.transport else { return };
        let _ = t.write(data);
        let buffered = t.write_buffer_size() as u64;
        self.counters.with(|c| {
            c.bytes_echoed += data.len() as u64;
            c.max_write_buffer = c.max_write_buffer.max(buffered);
        });
        if self.first.len() < PANIC_MAGIC.len() {
            let take = (PANIC_MAGIC.len() - self.first.len()).min(data.len());
            self.first.extend_from_slice(&data[..take]);
            if self.first == PANIC_MAGIC {
                self.counters.with(|c| c.panics_raised += 1);
                panic!("soak: protocol panic");
            }
        }
    }

    fn pause_writing(&mut self) {
        let Some(t) = &self.transport else { return };
        t.pause_reading();
        arm_stall_check(t, &self.counters, self.timeout, &self.stall);
    }

    fn resume_writing(&mut self) {
        if let Some(h) = self.stall.borrow_mut().take() {
            h.cancel();
        }
        if let Some(t) = &self.transport {
            t.resume_reading();
        }
    }

    fn connection_lost(&mut self, err: Option<io::Error>) {
        self.counters.with(|c| {
            c.open -= 1;
            match err {
                None => c.closed_clean += 1,
                Some(_) => c.closed_with_error += 1,
            }
        });
        self.stall.borrow_mut().take();
        self.transport = None;
    }
}

/// Cuts the connection if, `timeout` from now, writing is still paused and the peer
/// took nothing of the write buffer meanwhile; re-arms itself while it takes some.
fn arm_stall_check(
    t: &Transport,
    counters: &Rc<Counters>,
    timeout: Duration,
    slot: &Rc<RefCell<Option<Handle>>>,
) {
    let size_now = t.write_buffer_size();
    let (t2, counters2, slot2) = (t.clone(), counters.clone(), slot.clone());
    let handle = t.call_later(timeout, move || {
        slot2.borrow_mut().take();
        if !t2.is_writing_paused() || t2.is_closing() {
            return;
        }
        if t2.write_buffer_size() >= size_now {
            counters2.with(|c| c.stall_cuts += 1);
            t2.abort();
        } else {
            arm_stall_check(&t2, &counters2, timeout, &slot2);
        }
    });
    if let Some(old) = slot.borrow_mut().replace(handle) {
        old.cancel();
    }
}

/// Counts an async connection's end, also when its task panics.
struct AsyncConnGuard {
    counters: Rc<Counters>,
    error: bool,
}

impl Drop for AsyncConnGuard {
    fn drop(&mut self) {
        let error = self.error;
        self.counters.with(|c| {
            c.open -= 1;
            if error {
                c.closed_with_error += 1;
            } else {
                c.closed_clean += 1;
            }
        });
    }
}

/// The async API's echo: the first read and every write have the timeout.
async fn serve_async(mut sock: oxloop::net::TcpStream, counters: Rc<Counters>, timeout: Duration) {
    counters.with(|c| {
        c.accepted += 1;
        c.open += 1;
    });
    let mut guard = AsyncConnGuard {
        counters: counters.clone(),
        error: false,
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let mut first = Vec::new();
    loop {
        let read = if first.is_empty() {
            match task::timeout(timeout, sock.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    counters.with(|c| c.idle_cuts += 1);
                    return;
                }
            }
        } else {
            sock.read(&mut buf).await
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => {
                guard.error = true;
                return;
            }
        };
        if first.len() < PANIC_MAGIC.len() {
            let take = (PANIC_MAGIC.len() - first.len()).min(n);
            first.extend_from_slice(&buf[..take]);
        }
        let mut pos = 0;
        while pos < n {
            match task::timeout(timeout, sock.write(&buf[pos..n])).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    guard.error = true;
                    return;
                }
                Ok(Ok(w)) => pos += w,
                Err(_) => {
                    counters.with(|c| c.stall_cuts += 1);
                    return;
                }
            }
        }
        counters.with(|c| c.bytes_echoed += n as u64);
    }
    if first == PANIC_MAGIC {
        counters.with(|c| c.panics_raised += 1);
        panic!("soak: task panic");
    }
    drop(guard);
}
