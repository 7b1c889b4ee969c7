//! The echo servers compared by the benchmark. Each serves on one thread until
//! killed, or exits the process once `exit_after` connections have closed (for
//! instruction counting under callgrind, which writes its results at exit).

use crate::sys::{self, Epoll};
use oxloop::protocol::{LoopNetExt, Protocol, Transport};
use oxloop::EventLoop;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::str::FromStr;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// oxloop's protocol API (`create_server` and an echo [`Protocol`]).
    Oxloop,
    /// The same server on oxloop's io_uring backend (`OxloopUring`: the loop built with
    /// [`BackendKind::IoUring`](oxloop::BackendKind::IoUring)).
    OxloopUring,
    /// A hand-written level-triggered epoll loop: the no-abstraction limit.
    RawEpoll,
    /// tokio's `current_thread` runtime, one task per connection.
    Tokio,
    /// oxloop's tasks and async sockets, one task per connection (the tokio server's
    /// code on oxloop).
    Async,
    /// smol (async-io) on one thread: a `LocalExecutor`, one task per connection.
    Smol,
    /// libuv, in C: a separate program (see [`libuv_program`]), built when libuv's
    /// headers are installed.
    Libuv,
    /// HTTP: oxloop-http with a closure handler (what its `http_hello` example runs;
    /// not an echo server).
    HttpOxloop,
    /// HTTP: the same oxloop-http server on the io_uring backend.
    HttpOxloopUring,
    /// HTTP: hyper on tokio `current_thread` (not an echo server).
    HttpHyper,
    /// HTTP: a hand-written epoll responder, the limit (not an echo server).
    HttpRaw,
}

impl ServerKind {
    /// All of them, in report order.
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Oxloop,
        ServerKind::RawEpoll,
        ServerKind::Tokio,
        ServerKind::Async,
    ];

    /// Every kind, including the peers `oxloop bench` adds.
    pub const NAMED: [ServerKind; 11] = [
        ServerKind::Oxloop,
        ServerKind::OxloopUring,
        ServerKind::RawEpoll,
        ServerKind::Tokio,
        ServerKind::Async,
        ServerKind::Smol,
        ServerKind::Libuv,
        ServerKind::HttpOxloop,
        ServerKind::HttpOxloopUring,
        ServerKind::HttpHyper,
        ServerKind::HttpRaw,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Oxloop => "oxloop",
            ServerKind::OxloopUring => "oxloop-uring",
            ServerKind::RawEpoll => "raw-epoll",
            ServerKind::Tokio => "tokio",
            ServerKind::Async => "async",
            ServerKind::Smol => "smol",
            ServerKind::Libuv => "libuv",
            ServerKind::HttpOxloop => "http-oxloop",
            ServerKind::HttpOxloopUring => "http-oxloop-uring",
            ServerKind::HttpHyper => "http-hyper",
            ServerKind::HttpRaw => "http-raw",
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ServerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ServerKind, String> {
        ServerKind::NAMED
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ServerKind::NAMED.iter().map(|k| k.name()).collect();
                format!("unknown server {s:?} ({})", names.join(", "))
            })
    }
}

/// A loop on the io_uring backend, or why this machine cannot have one (the kernel
/// lacks io_uring or refuses it).
pub fn uring_loop() -> io::Result<EventLoop> {
    let ev = EventLoop::builder()
        .backend(oxloop::BackendKind::IoUring)
        .build()?;
    match ev.backend_fallback() {
        Some(reason) => Err(io::Error::new(io::ErrorKind::Unsupported, reason)),
        None => Ok(ev),
    }
}

/// Serves on a bound listener until the process ends (or fails).
pub type Serve = Box<dyn FnOnce() -> io::Result<()>>;

/// Binds `kind` on `loops` loops of an [`oxloop::cluster::Cluster`], each listening on
/// `addr` with `SO_REUSEPORT` (oxloop's echo server and oxloop-http only: the servers
/// `oxloop bench` measures for scaling). Returns the shared address and a function that
/// serves until the loops end.
pub fn bind_loops(
    kind: ServerKind,
    addr: SocketAddr,
    loops: usize,
) -> io::Result<(SocketAddr, Serve)> {
    use oxloop::cluster::Cluster;
    let (cluster, bound) = match kind {
        ServerKind::Oxloop => {
            let cluster = Cluster::serve(addr, loops, || Echo {
                transport: None,
                closed: Rc::new(Cell::new(0)),
                exit_after: None,
            })?;
            let bound = cluster.local_addrs()[0];
            (cluster, bound)
        }
        ServerKind::HttpOxloop => crate::http::oxloop_cluster(addr, loops)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{kind} has no several-loop version"),
            ))
        }
    };
    Ok((
        bound,
        Box::new(move || {
            for outcome in cluster.join() {
                outcome.map_err(io::Error::other)?;
            }
            Ok(())
        }),
    ))
}

/// Binds a listener for `kind` on `addr` and returns the bound address and a function
/// that serves on it (never returning unless it fails).
pub fn bind(
    kind: ServerKind,
    addr: SocketAddr,
    exit_after: Option<u64>,
) -> io::Result<(SocketAddr, Serve)> {
    match kind {
        ServerKind::Oxloop | ServerKind::OxloopUring => {
            let ev = match kind {
                ServerKind::OxloopUring => uring_loop()?,
                _ => EventLoop::new()?,
            };
            let closed = Rc::new(Cell::new(0u64));
            let server = ev.create_server(addr, move || Echo {
                transport: None,
                closed: closed.clone(),
                exit_after,
            })?;
            let bound = server.socket_addrs()[0];
            Ok((bound, Box::new(move || ev.run_forever())))
        }
        ServerKind::RawEpoll => {
            let listener = TcpListener::bind(addr)?;
            let bound = listener.local_addr()?;
            Ok((bound, Box::new(move || raw_epoll(listener, exit_after))))
        }
        ServerKind::Tokio => {
            let listener = TcpListener::bind(addr)?;
            let bound = listener.local_addr()?;
            Ok((bound, Box::new(move || tokio_echo(listener, exit_after))))
        }
        ServerKind::Async => {
            let listener = TcpListener::bind(addr)?;
            let bound = listener.local_addr()?;
            Ok((bound, Box::new(move || async_echo(listener, exit_after))))
        }
        ServerKind::Smol => {
            let listener = TcpListener::bind(addr)?;
            let bound = listener.local_addr()?;
            Ok((bound, Box::new(move || smol_echo(listener, exit_after))))
        }
        ServerKind::HttpOxloop => crate::http::bind_oxloop(addr),
        ServerKind::HttpOxloopUring => crate::http::bind_oxloop_uring(addr),
        ServerKind::HttpHyper => crate::http::bind_hyper(addr),
        ServerKind::HttpRaw => crate::http::bind_raw(addr),
        ServerKind::Libuv => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the libuv server is a separate program (servers::libuv_program)",
        )),
    }
}

/// The libuv echo server program, if it was built (libuv's headers were installed
/// when this crate was compiled). It takes `serve libuv <ip:port> [--cpu N]
/// [--exit-after N]` like `oxloop-bench serve`.
pub fn libuv_program() -> Option<&'static std::path::Path> {
    option_env!("OXLOOP_BENCH_UV_ECHO")
        .map(std::path::Path::new)
        .filter(|p| p.exists())
}

fn count_close(closed: &Cell<u64>, exit_after: Option<u64>) {
    closed.set(closed.get() + 1);
    if exit_after.is_some_and(|n| closed.get() >= n) {
        std::process::exit(0);
    }
}

/// The oxloop echo protocol: every byte back as it arrives.
pub struct Echo {
    transport: Option<Transport>,
    closed: Rc<Cell<u64>>,
    exit_after: Option<u64>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            let _ = t.write(data);
        }
    }
    fn connection_lost(&mut self, _err: Option<io::Error>) {
        count_close(&self.closed, self.exit_after);
    }
}

/// One connection of the raw server: its socket (closed when dropped), and the bytes
/// it refused (empty, so unallocated, except after a short send).
struct RawConn {
    _socket: TcpStream,
    pending: Vec<u8>,
}

/// The raw epoll echo server, written as tightly as a C programmer would: one
/// level-triggered epoll set, `recv` into one buffer, `send` straight back, with libc's
/// calls and no allocation or bookkeeping on the way; only bytes the socket refuses are
/// kept (with `EPOLLOUT` watched until they are sent).
pub fn raw_epoll(listener: TcpListener, exit_after: Option<u64>) -> io::Result<()> {
    const IN: u32 = libc::EPOLLIN as u32;
    const IN_OUT: u32 = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
    const READABLE: u32 = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32;
    const WRITABLE: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
    listener.set_nonblocking(true)?;
    let listener_fd = listener.as_raw_fd();
    let ep = Epoll::new()?;
    ep.add(listener_fd, IN, listener_fd as u64)?;
    let mut conns: Vec<Option<RawConn>> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
    let closed = Cell::new(0u64);
    loop {
        let n = ep.wait(&mut events, -1)?;
        for ev in &events[..n] {
            let (fd, flags) = (ev.u64 as i32, ev.events);
            if fd == listener_fd {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true)?;
                    s.set_nodelay(true)?;
                    let fd = s.as_raw_fd();
                    ep.add(fd, IN, fd as u64)?;
                    let i = fd as usize;
                    if conns.len() <= i {
                        conns.resize_with(i + 1, || None);
                    }
                    conns[i] = Some(RawConn {
                        _socket: s,
                        pending: Vec::new(),
                    });
                }
                continue;
            }
            let Some(conn) = conns[fd as usize].as_mut() else {
                continue;
            };
            let mut close = false;
            if !conn.pending.is_empty() && flags & WRITABLE != 0 {
                match sys::send(fd, &conn.pending) {
                    Ok(w) => {
                        conn.pending.drain(..w);
                        if conn.pending.is_empty() {
                            ep.modify(fd, IN, fd as u64)?;
                        }
                    }
                    Err(e) => close = e.kind() != io::ErrorKind::WouldBlock,
                }
            }
            if !close && flags & READABLE != 0 {
                match sys::recv(fd, &mut buf) {
                    Ok(0) => close = true,
                    Ok(r) if conn.pending.is_empty() => match sys::send(fd, &buf[..r]) {
                        Ok(w) if w == r => {}
                        Ok(w) => {
                            conn.pending.extend_from_slice(&buf[w..r]);
                            ep.modify(fd, IN_OUT, fd as u64)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            conn.pending.extend_from_slice(&buf[..r]);
                            ep.modify(fd, IN_OUT, fd as u64)?;
                        }
                        Err(_) => close = true,
                    },
                    Ok(r) => conn.pending.extend_from_slice(&buf[..r]),
                    Err(e) => close = e.kind() != io::ErrorKind::WouldBlock,
                }
            }
            if close {
                ep.delete(fd)?;
                conns[fd as usize] = None; // closes the socket
                count_close(&closed, exit_after);
            }
        }
    }
}

/// tokio's `current_thread` runtime: a task per connection reading into its own
/// 64 KiB buffer and `write_all`-ing it back.
pub fn tokio_echo(listener: TcpListener, exit_after: Option<u64>) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (mut sock, _) = listener.accept().await?;
            sock.set_nodelay(true)?;
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let n = closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if exit_after.is_some_and(|limit| n >= limit) {
                    std::process::exit(0);
                }
            });
        }
    })
}

/// smol on one thread: a `LocalExecutor` driven by `smol::block_on` (which also
/// drives async-io's reactor), a task per connection reading into its own 64 KiB
/// buffer and `write_all`-ing it back.
pub fn smol_echo(listener: TcpListener, exit_after: Option<u64>) -> io::Result<()> {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let ex = smol::LocalExecutor::new();
    let closed = Rc::new(Cell::new(0u64));
    smol::block_on(ex.run(async {
        let listener = smol::Async::new(listener)?;
        loop {
            let (mut sock, _) = listener.accept().await?;
            sock.get_ref().set_nodelay(true)?;
            let closed = closed.clone();
            ex.spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                count_close(&closed, exit_after);
            })
            .detach();
        }
    }))
}

/// oxloop's tasks: the tokio server above, line for line, on oxloop's `TcpListener`,
/// `TcpStream` and `task::spawn`.
pub fn async_echo(listener: TcpListener, exit_after: Option<u64>) -> io::Result<()> {
    use oxloop::io::{AsyncReadExt, AsyncWriteExt};
    let ev = EventLoop::new()?;
    let closed = Rc::new(Cell::new(0u64));
    ev.block_on(async move {
        let listener = oxloop::net::TcpListener::from_std(listener)?;
        loop {
            let (mut sock, _) = listener.accept().await?;
            sock.set_nodelay(true)?;
            let closed = closed.clone();
            oxloop::task::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                count_close(&closed, exit_after);
            });
        }
    })?
}
