//! Listening sockets: accept, one protocol per connection, back-off on fd exhaustion.

use super::address::Address;
use super::stream::{prepare_stream, Transport, WeakTransport};
use super::Protocol;
use crate::reactor::Accepted;
use crate::{EventLoop, Handle};
use socket2::{Domain, SockAddr, Socket, Type};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

pub(crate) type Factory = Box<dyn FnMut() -> Box<dyn Protocol>>;

pub(crate) fn boxed_factory<P, F>(mut factory: F) -> Factory
where
    P: Protocol + 'static,
    F: FnMut() -> P + 'static,
{
    Box::new(move || Box::new(factory()) as Box<dyn Protocol>)
}

/// At most this many connections are accepted per readiness report, so one busy
/// listener cannot starve the connections already open.
const MAX_ACCEPTS_PER_WAKE: usize = 128;

/// How a server listens. Build with [`ServerOptions::new`] (or `default()`) and the
/// setters.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    backlog: i32,
    reuse_address: bool,
    reuse_port: bool,
    accept_retry_delay: Duration,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
            accept_retry_delay: Duration::from_millis(100),
        }
    }
}

impl ServerOptions {
    /// The defaults: backlog 1024, `SO_REUSEADDR` on, `SO_REUSEPORT` off, 100 ms
    /// accept back-off.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// The listen backlog: connections the kernel queues before they are accepted.
    pub fn backlog(mut self, backlog: i32) -> ServerOptions {
        self.backlog = backlog;
        self
    }

    /// `SO_REUSEADDR` (TCP only): rebind a port whose old connections are in
    /// `TIME_WAIT`. On by default.
    pub fn reuse_address(mut self, on: bool) -> ServerOptions {
        self.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT` (TCP only): several sockets (threads, processes) may listen on
    /// the same port, the kernel spreading connections among them. Off by default.
    pub fn reuse_port(mut self, on: bool) -> ServerOptions {
        self.reuse_port = on;
        self
    }

    /// How long accepting pauses when the process is out of fds (`EMFILE`, `ENFILE`)
    /// or memory for sockets; open connections are not disturbed. Default 100 ms.
    pub fn accept_retry_delay(mut self, delay: Duration) -> ServerOptions {
        self.accept_retry_delay = delay;
        self
    }
}

struct Listener {
    sock: Socket,
    addr: Address,
    /// The loop accepts for this listener itself ([`EventLoop::start_listener`]):
    /// connections are taken from the loop, already non-blocking and close-on-exec,
    /// and the loop is told before the socket closes.
    ring: Option<EventLoop>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(ev) = self.ring.take() {
            ev.stop_listener(self.sock.as_raw_fd());
        }
    }
}

/// A Unix socket file the server created, removed again on close if it is still ours.
struct OwnedPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

struct Inner {
    ev: EventLoop,
    /// TCP (as opposed to Unix) listeners.
    tcp: bool,
    listeners: RefCell<Vec<Listener>>,
    factory: RefCell<Option<Factory>>,
    serving: Cell<bool>,
    /// Accept readers are installed.
    watching: Cell<bool>,
    closed: Cell<bool>,
    retry: RefCell<Option<Handle>>,
    retry_delay: Duration,
    accepted: Cell<u64>,
    unix_path: RefCell<Option<OwnedPath>>,
    /// The connections accepted, pruned of closed ones now and then.
    clients: RefCell<Vec<WeakTransport>>,
    prune_at: Cell<usize>,
}

/// A listening server, from [`LoopNetExt::create_server`](super::LoopNetExt::create_server)
/// or [`create_unix_server`](super::LoopNetExt::create_unix_server).
///
/// It accepts until [`close`](Server::close) (or
/// [`stop_accepting`](Server::stop_accepting)); dropping the handle does not stop it.
/// Closing the server does not close the connections it accepted: for a shutdown,
/// call [`close`](Server::close) and then [`close_clients`](Server::close_clients) (or
/// [`abort_clients`](Server::abort_clients)). Close connections before
/// [`EventLoop::destroy`](crate::EventLoop::destroy): a protocol holding its transport
/// keeps the socket open until the transport closes.
#[derive(Clone)]
pub struct Server {
    inner: Rc<Inner>,
}

/// A failure to listen that names the address; the system's error is its `source`,
/// so its error number stays readable.
#[derive(Debug)]
struct BindError {
    addr: String,
    source: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.source)
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The server as its accept readers hold it. Dropped by a destroyed loop (with every
/// reader), it closes the server: that drops the factory, which may hold what holds the
/// server (oxloop-http's server state holds its listener), a cycle no one else breaks,
/// and closes the listening sockets.
struct ClosedWithItsLoop(Server);

impl Drop for ClosedWithItsLoop {
    fn drop(&mut self) {
        if self.0.inner.ev.is_destroyed() {
            // The destroyed loop has dropped the readers already.
            self.0.inner.watching.set(false);
            self.0.close();
        }
    }
}

fn bind_error(addr: &dyn fmt::Display, e: io::Error) -> io::Error {
    let kind = e.kind();
    let addr = addr.to_string();
    io::Error::new(kind, BindError { addr, source: e })
}

pub(crate) fn create_tcp(
    ev: &EventLoop,
    addrs: &[SocketAddr],
    options: &ServerOptions,
    factory: Factory,
) -> io::Result<Server> {
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to listen on",
        ));
    }
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let sock = listen_tcp(*addr, options).map_err(|e| bind_error(addr, e))?;
        let local = Address::from_sockaddr(&sock.local_addr()?);
        listeners.push(Listener {
            sock,
            addr: local,
            ring: None,
        });
    }
    Server::start(ev, listeners, options, factory, None)
}

fn listen_tcp(addr: SocketAddr, options: &ServerOptions) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        // Each address gets its own socket; a dual-stack one would collide with an
        // IPv4 socket on the same port.
        sock.set_only_v6(true)?;
    }
    if options.reuse_address {
        sock.set_reuse_address(true)?;
    }
    if options.reuse_port {
        #[cfg(not(any(target_os = "solaris", target_os = "illumos")))]
        sock.set_reuse_port(true)?;
        #[cfg(any(target_os = "solaris", target_os = "illumos"))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not available on this system",
        ));
    }
    // Accepted sockets inherit it (Linux), so those the loop accepts itself need no
    // `setsockopt` of their own.
    sock.set_tcp_nodelay(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(options.backlog)?;
    Ok(sock)
}

pub(crate) fn create_unix(
    ev: &EventLoop,
    path: &Path,
    options: &ServerOptions,
    factory: Factory,
) -> io::Result<Server> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A socket file left by an earlier server: replace it.
            std::fs::remove_file(path).map_err(|e| bind_error(&shown, e))?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("cannot listen on {shown}: a file that is not a socket exists there"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(&shown, e)),
    }
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::unix(path)?)
        .map_err(|e| bind_error(&shown, e))?;
    let owned = std::fs::metadata(path).ok().map(|meta| OwnedPath {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    });
    if let Err(e) = sock.listen(options.backlog) {
        if let Some(owned) = &owned {
            let _ = std::fs::remove_file(&owned.path);
        }
        return Err(bind_error(&shown, e));
    }
    let listeners = vec![Listener {
        sock,
        addr: Address::Unix(Some(path.to_path_buf())),
        ring: None,
    }];
    Server::start(ev, listeners, options, factory, owned)
}

impl Server {
    fn start(
        ev: &EventLoop,
        mut listeners: Vec<Listener>,
        options: &ServerOptions,
        factory: Factory,
        unix_path: Option<OwnedPath>,
    ) -> io::Result<Server> {
        for listener in &mut listeners {
            if ev.start_listener(listener.sock.as_raw_fd()) {
                listener.ring = Some(ev.clone());
            }
        }
        let server = Server {
            inner: Rc::new(Inner {
                ev: ev.clone(),
                tcp: listeners.iter().all(|l| matches!(l.addr, Address::Inet(_))),
                listeners: RefCell::new(listeners),
                factory: RefCell::new(Some(factory)),
                serving: Cell::new(true),
                watching: Cell::new(false),
                closed: Cell::new(false),
                retry: RefCell::new(None),
                retry_delay: options.accept_retry_delay,
                accepted: Cell::new(0),
                unix_path: RefCell::new(unix_path),
                clients: RefCell::new(Vec::new()),
                prune_at: Cell::new(64),
            }),
        };
        if let Err(e) = server.watch() {
            server.close();
            return Err(e);
        }
        Ok(server)
    }

    /// The listening sockets' fds (collected, so no borrow is held while the loop is
    /// told about them).
    fn listener_fds(&self) -> Vec<RawFd> {
        let listeners = self.inner.listeners.borrow();
        listeners.iter().map(|l| l.sock.as_raw_fd()).collect()
    }

    /// Installs the accept readers.
    fn watch(&self) -> io::Result<()> {
        if self.inner.watching.get() {
            return Ok(());
        }
        let fds = self.listener_fds();
        for (index, fd) in fds.iter().enumerate() {
            let me = ClosedWithItsLoop(self.clone());
            if let Err(e) = self
                .inner
                .ev
                .add_reader(*fd, move || me.0.on_acceptable(index))
            {
                for fd in &fds[..index] {
                    self.inner.ev.remove_reader(*fd);
                }
                return Err(e);
            }
        }
        self.inner.watching.set(true);
        Ok(())
    }

    fn unwatch(&self) {
        if !self.inner.watching.replace(false) {
            return;
        }
        let fds = self.listener_fds();
        for fd in fds {
            self.inner.ev.remove_reader(fd);
        }
    }

    /// Serves the connections the loop accepted for the listeners and the server did
    /// not take yet (on close: they are accepted already, so they are served rather
    /// than reset; a listener on readiness leaves its backlog to the kernel, which
    /// resets it).
    fn serve_accepted(&self) {
        if self.inner.ev.is_destroyed() {
            // Nothing can be served: closing the listeners closes them.
            return;
        }
        for index in 0..self.inner.listeners.borrow().len() {
            let ring = self.inner.listeners.borrow()[index].ring.is_some();
            if !ring {
                continue;
            }
            let mut unlimited = Some(u64::MAX);
            while let Some(next) = self.next_connection(index, &mut unlimited) {
                match next {
                    Ok((sock, prepare)) => self.serve(sock, prepare),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {} // an error the accept ended with: the next one
                }
            }
        }
    }

    /// The next connection waiting on listener `index` (`WouldBlock`: none), from the
    /// loop if it accepts for the listener, else from `accept`; with whether it still
    /// needs [`prepare_stream`]. `None`: the listener is gone. `fd_limit`: the
    /// process's fd limit, read at the first connection the loop accepted.
    fn next_connection(
        &self,
        index: usize,
        fd_limit: &mut Option<u64>,
    ) -> Option<io::Result<(Socket, bool)>> {
        let listeners = self.inner.listeners.borrow();
        let listener = listeners.get(index)?;
        let Some(ev) = &listener.ring else {
            return Some(listener.sock.accept().map(|(sock, _)| (sock, true)));
        };
        // Read once per report: the kernel checked each connection against the limit
        // of the time its accept was made, which may have been higher.
        let fd_limit = *fd_limit.get_or_insert_with(|| {
            rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX)
        });
        Some(
            match ev.listener_accept(listener.sock.as_raw_fd(), fd_limit) {
                Accepted::Nothing => Err(io::ErrorKind::WouldBlock.into()),
                Accepted::Socket(fd) => Ok((Socket::from(fd), false)),
                Accepted::Failed(e) => Err(e),
            },
        )
    }

    fn on_acceptable(&self, index: usize) {
        let mut fd_limit = None;
        for _ in 0..MAX_ACCEPTS_PER_WAKE {
            let Some(result) = self.next_connection(index, &mut fd_limit) else {
                return;
            };
            match result {
                Ok((sock, prepare)) => self.serve(sock, prepare),
                Err(e) => match classify_accept_error(&e) {
                    AcceptError::Empty => return,
                    AcceptError::Skip => continue,
                    AcceptError::Exhausted => {
                        tracing::warn!(
                            target: "oxloop::protocol",
                            "accept failed ({e}); pausing accepting for {:?}",
                            self.inner.retry_delay
                        );
                        self.back_off();
                        return;
                    }
                    AcceptError::Other => {
                        tracing::error!(
                            target: "oxloop::protocol",
                            "accept failed: {e}; pausing accepting for {:?}",
                            self.inner.retry_delay
                        );
                        self.back_off();
                        return;
                    }
                },
            }
        }
    }

    /// Starts a protocol on an accepted connection. `prepare`: it still needs making
    /// non-blocking and `TCP_NODELAY` (accepted by `accept`, not by the loop with the
    /// listener's flags, whose `TCP_NODELAY` it inherited).
    fn serve(&self, sock: Socket, prepare: bool) {
        if prepare {
            if let Err(e) = prepare_stream(&sock, self.inner.tcp) {
                // Setting options on a connection the peer already reset can fail: drop
                // that one connection.
                tracing::debug!(target: "oxloop::protocol", "dropping accepted socket: {e}");
                return;
            }
        }
        let protocol = {
            let mut factory = self.inner.factory.borrow_mut();
            match factory.as_mut() {
                Some(factory) => factory(),
                None => return,
            }
        };
        self.inner.accepted.set(self.inner.accepted.get() + 1);
        match Transport::start(&self.inner.ev, sock, protocol) {
            Ok(transport) => {
                let mut clients = self.inner.clients.borrow_mut();
                if clients.len() >= self.inner.prune_at.get() {
                    clients.retain(|c| c.open().is_some());
                    self.inner.prune_at.set((clients.len() * 2).max(64));
                }
                clients.push(transport.downgrade());
            }
            Err(e) => {
                tracing::error!(target: "oxloop::protocol", "cannot watch an accepted socket: {e}");
            }
        }
    }

    /// The connections this server accepted that are still open.
    pub fn connections(&self) -> Vec<Transport> {
        let mut clients = self.inner.clients.borrow_mut();
        clients.retain(|c| c.open().is_some());
        clients.iter().filter_map(WeakTransport::open).collect()
    }

    /// Closes every open connection this server accepted ([`Transport::close`]: buffered
    /// data is sent first). With [`close`](Self::close), a graceful shutdown.
    pub fn close_clients(&self) {
        for t in self.connections() {
            t.close();
        }
    }

    /// Aborts every open connection this server accepted ([`Transport::abort`]).
    pub fn abort_clients(&self) {
        for t in self.connections() {
            t.abort();
        }
    }

    /// Stops accepting for the retry delay. The listening sockets stay open, so the
    /// kernel keeps queueing connections (up to the backlog) meanwhile.
    fn back_off(&self) {
        self.unwatch();
        if self.inner.retry.borrow().is_some() {
            return;
        }
        let me = self.clone();
        let handle = self.inner.ev.call_later(self.inner.retry_delay, move || {
            me.inner.retry.borrow_mut().take();
            if me.inner.serving.get() && !me.inner.closed.get() {
                if let Err(e) = me.watch() {
                    tracing::error!(target: "oxloop::protocol", "cannot resume accepting: {e}");
                    me.back_off();
                }
            }
        });
        *self.inner.retry.borrow_mut() = Some(handle);
    }

    /// Stops accepting new connections; the listening sockets stay bound (the kernel
    /// still queues up to the backlog). Open connections are not touched.
    pub fn stop_accepting(&self) {
        self.inner.serving.set(false);
        self.cancel_retry();
        self.unwatch();
    }

    /// Accepts again after [`stop_accepting`](Self::stop_accepting). Fails on a
    /// closed server.
    pub fn resume_accepting(&self) -> io::Result<()> {
        if self.inner.closed.get() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the server is closed",
            ));
        }
        self.inner.serving.set(true);
        if self.inner.retry.borrow().is_some() {
            return Ok(()); // the back-off timer resumes
        }
        self.watch()
    }

    fn cancel_retry(&self) {
        let retry = self.inner.retry.borrow_mut().take();
        if let Some(handle) = retry {
            handle.cancel();
        }
    }

    /// Stops accepting and closes the listening sockets (removing the socket file of
    /// a Unix server). Connections already accepted stay open. Idempotent.
    pub fn close(&self) {
        if self.inner.closed.replace(true) {
            return;
        }
        self.inner.serving.set(false);
        self.cancel_retry();
        self.unwatch();
        self.serve_accepted();
        let listeners = std::mem::take(&mut *self.inner.listeners.borrow_mut());
        drop(listeners);
        let factory = self.inner.factory.borrow_mut().take();
        drop(factory);
        if let Some(owned) = self.inner.unix_path.borrow_mut().take() {
            let ours = std::fs::symlink_metadata(&owned.path)
                .map(|m| m.dev() == owned.dev && m.ino() == owned.ino)
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(&owned.path);
            }
        }
    }

    /// Whether the server accepts connections (not stopped or closed; a temporary
    /// back-off after fd exhaustion still counts as serving).
    pub fn is_serving(&self) -> bool {
        self.inner.serving.get() && !self.inner.closed.get()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// The addresses the server listens on, with the ports the system picked for
    /// port 0. Empty once closed.
    pub fn local_addrs(&self) -> Vec<Address> {
        self.inner
            .listeners
            .borrow()
            .iter()
            .map(|l| l.addr.clone())
            .collect()
    }

    /// The internet addresses among [`local_addrs`](Self::local_addrs).
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs()
            .iter()
            .filter_map(Address::as_inet)
            .collect()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.get()
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.local_addrs())
            .field("serving", &self.is_serving())
            .field("accepted", &self.accepted())
            .finish()
    }
}

enum AcceptError {
    /// No connection waiting.
    Empty,
    /// This one connection failed (aborted before it was accepted): try the next.
    Skip,
    /// Out of fds or socket memory: back off, retry later.
    Exhausted,
    /// Anything else: log it and back off, so a persistent error cannot spin.
    Other,
}

fn classify_accept_error(e: &io::Error) -> AcceptError {
    match e.kind() {
        io::ErrorKind::WouldBlock => return AcceptError::Empty,
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => return AcceptError::Skip,
        _ => {}
    }
    match e.raw_os_error() {
        Some(libc::EPROTO | libc::ECONNABORTED | libc::EPERM) => AcceptError::Skip,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptError::Exhausted,
        _ => AcceptError::Other,
    }
}
