//! Datagram endpoints (UDP and Unix datagram sockets).

use super::address::Address;
use super::buffer::ReadBuffer;
use super::slot::ProtocolSlot;
use super::stream::{closed_error, DEFAULT_HIGH_WATER};
use crate::EventLoop;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Datagrams read per readiness report at most, so one busy socket cannot starve the
/// others.
const MAX_READS_PER_WAKE: usize = 32;

/// The callbacks of a datagram endpoint, called on the loop's thread.
pub trait DatagramProtocol {
    /// The endpoint is ready. Keep `transport` to send.
    fn connection_made(&mut self, transport: DatagramTransport) {
        let _ = transport;
    }

    /// A datagram arrived from `addr`. `data` borrows the loop's shared read buffer.
    fn datagram_received(&mut self, data: &[u8], addr: Address);

    /// A send or receive failed without closing the endpoint: typically
    /// `ConnectionRefused` after an ICMP port-unreachable reply to an earlier
    /// datagram, or a queued datagram the system refused.
    fn error_received(&mut self, err: io::Error) {
        let _ = err;
    }

    /// The endpoint is closed (`None` after `close`/`abort`). Called once.
    fn connection_lost(&mut self, err: Option<io::Error>) {
        let _ = err;
    }

    /// Datagrams queued because the socket's send buffer was full passed the
    /// high-water mark (64 KiB): stop sending until `resume_writing`.
    fn pause_writing(&mut self) {}

    /// The send queue drained: sending may resume.
    fn resume_writing(&mut self) {}
}

enum DgSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl DgSocket {
    fn fd(&self) -> RawFd {
        match self {
            DgSocket::Udp(s) => s.as_raw_fd(),
            DgSocket::Unix(s) => s.as_raw_fd(),
        }
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Address)> {
        match self {
            DgSocket::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Address::Inet(a))),
            DgSocket::Unix(s) => s
                .recv_from(buf)
                .map(|(n, a)| (n, Address::Unix(a.as_pathname().map(Path::to_path_buf)))),
        }
    }

    /// Sends one datagram (std sends with `MSG_NOSIGNAL` where it exists).
    fn send_to(&self, data: &[u8], addr: Option<&Address>) -> io::Result<usize> {
        match (self, addr) {
            (DgSocket::Udp(s), None) => s.send(data),
            (DgSocket::Udp(s), Some(Address::Inet(a))) => s.send_to(data, a),
            (DgSocket::Unix(s), None) => s.send(data),
            (DgSocket::Unix(s), Some(Address::Unix(Some(p)))) => s.send_to(data, p),
            (_, Some(a)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send to {a} from this socket's address family"),
            )),
        }
    }

    fn local_addr(&self) -> io::Result<Address> {
        match self {
            DgSocket::Udp(s) => s.local_addr().map(Address::Inet),
            DgSocket::Unix(s) => s
                .local_addr()
                .map(|a| Address::Unix(a.as_pathname().map(Path::to_path_buf))),
        }
    }

    fn peer_addr(&self) -> io::Result<Address> {
        match self {
            DgSocket::Udp(s) => s.peer_addr().map(Address::Inet),
            DgSocket::Unix(s) => s
                .peer_addr()
                .map(|a| Address::Unix(a.as_pathname().map(Path::to_path_buf))),
        }
    }
}

struct State {
    sock: Option<DgSocket>,
    queue: VecDeque<(Vec<u8>, Option<Address>)>,
    queued_bytes: usize,
    writing: bool,
    closing: bool,
    closed: bool,
    /// A socket file this endpoint bound, removed on close if still ours.
    owned_path: Option<(PathBuf, u64, u64)>,
}

struct Inner {
    ev: EventLoop,
    fd: RawFd,
    read_buf: Rc<ReadBuffer>,
    state: RefCell<State>,
    protocol: ProtocolSlot<dyn DatagramProtocol>,
}

/// A datagram socket driven by the loop, handed to
/// [`DatagramProtocol::connection_made`]. Cheap to clone.
#[derive(Clone)]
pub struct DatagramTransport {
    inner: Rc<Inner>,
}

pub(crate) fn create_udp(
    ev: &EventLoop,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    protocol: Box<dyn DatagramProtocol>,
) -> io::Result<DatagramTransport> {
    let local = match (local, remote) {
        (Some(local), _) => local,
        (None, Some(SocketAddr::V4(_))) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (None, Some(SocketAddr::V6(_))) => SocketAddr::from(([0u16; 8], 0)),
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a datagram endpoint needs a local or a remote address",
            ))
        }
    };
    let sock = UdpSocket::bind(local)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {local}: {e}")))?;
    sock.set_nonblocking(true)?;
    if let Some(remote) = remote {
        sock.connect(remote).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot connect UDP to {remote}: {e}"))
        })?;
    }
    DatagramTransport::start(ev, DgSocket::Udp(sock), None, protocol)
}

pub(crate) fn create_unix(
    ev: &EventLoop,
    local: Option<&Path>,
    remote: Option<&Path>,
    protocol: Box<dyn DatagramProtocol>,
) -> io::Result<DatagramTransport> {
    let (sock, owned) = match local {
        Some(path) => {
            let sock = UnixDatagram::bind(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
            })?;
            let owned = std::fs::metadata(path)
                .ok()
                .map(|m| (path.to_path_buf(), m.dev(), m.ino()));
            (sock, owned)
        }
        None => (UnixDatagram::unbound()?, None),
    };
    let cleanup = |owned: &Option<(PathBuf, u64, u64)>| {
        if let Some((path, _, _)) = owned {
            let _ = std::fs::remove_file(path);
        }
    };
    if let Err(e) = sock.set_nonblocking(true) {
        cleanup(&owned);
        return Err(e);
    }
    if let Some(remote) = remote {
        if let Err(e) = sock.connect(remote) {
            cleanup(&owned);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot connect to {}: {e}", remote.display()),
            ));
        }
    }
    DatagramTransport::start(ev, DgSocket::Unix(sock), owned, protocol)
}

impl DatagramTransport {
    fn start(
        ev: &EventLoop,
        sock: DgSocket,
        owned_path: Option<(PathBuf, u64, u64)>,
        protocol: Box<dyn DatagramProtocol>,
    ) -> io::Result<DatagramTransport> {
        let fd = sock.fd();
        let transport = DatagramTransport {
            inner: Rc::new(Inner {
                ev: ev.clone(),
                fd,
                read_buf: ReadBuffer::shared(),
                state: RefCell::new(State {
                    sock: Some(sock),
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    writing: false,
                    closing: false,
                    closed: false,
                    owned_path,
                }),
                protocol: ProtocolSlot::new(protocol),
            }),
        };
        let me = transport.clone();
        if let Err(e) = ev.add_reader(fd, move || me.on_readable()) {
            transport.finish(None);
            return Err(e);
        }
        let t = transport.clone();
        transport.call_protocol(move |p| p.connection_made(t));
        Ok(transport)
    }

    fn call_protocol(&self, f: impl FnOnce(&mut dyn DatagramProtocol)) {
        self.inner.protocol.call(|p| f(p));
    }

    fn sync_flow(&self) {
        self.inner.protocol.sync();
    }

    fn on_readable(&self) {
        self.inner.read_buf.with(|buf| {
            for _ in 0..MAX_READS_PER_WAKE {
                let result = {
                    let state = self.inner.state.borrow();
                    match &state.sock {
                        Some(sock) => sock.recv_from(buf),
                        None => return,
                    }
                };
                match result {
                    Ok((n, addr)) => {
                        let data = &buf[..n];
                        self.call_protocol(|p| p.datagram_received(data, addr));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => self.call_protocol(|p| p.error_received(e)),
                }
            }
        });
    }

    /// Sends `data` to `addr` (`None`: to the connected remote address). Never blocks:
    /// if the socket's send buffer is full the datagram is queued and sent, in order,
    /// when it drains. An error from the system for this datagram (a too-large
    /// datagram, an unreachable address, `ConnectionRefused` reported for an earlier
    /// one) is returned; errors for queued datagrams go to
    /// [`DatagramProtocol::error_received`]. Fails with `NotConnected` once closing.
    pub fn sendto(&self, data: &[u8], addr: Option<&Address>) -> io::Result<()> {
        let mut state = self.inner.state.borrow_mut();
        if state.closed || state.closing {
            return Err(closed_error());
        }
        if state.queue.is_empty() {
            let sock = state.sock.as_ref().expect("an open endpoint has a socket");
            loop {
                match sock.send_to(data, addr) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        state.queue.push_back((data.to_vec(), addr.cloned()));
        state.queued_bytes += data.len();
        if state.queued_bytes > DEFAULT_HIGH_WATER {
            self.inner.protocol.set_paused(true);
        }
        let need_writer = !state.writing;
        state.writing = true;
        drop(state);
        if need_writer {
            let me = self.clone();
            if let Err(e) = self
                .inner
                .ev
                .add_writer(self.inner.fd, move || me.on_writable())
            {
                self.inner.state.borrow_mut().writing = false;
                return Err(e);
            }
        }
        self.sync_flow();
        Ok(())
    }

    /// Sends `data` to the connected remote address.
    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        self.sendto(data, None)
    }

    fn on_writable(&self) {
        loop {
            let result = {
                let state = self.inner.state.borrow();
                let (Some(sock), Some((data, addr))) = (&state.sock, state.queue.front()) else {
                    break;
                };
                sock.send_to(data, addr.as_ref())
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(_) | Err(_) => {
                    let mut state = self.inner.state.borrow_mut();
                    if let Some((data, _)) = state.queue.pop_front() {
                        state.queued_bytes -= data.len();
                    }
                    if self.inner.protocol.is_paused()
                        && state.queued_bytes <= DEFAULT_HIGH_WATER / 4
                    {
                        self.inner.protocol.set_paused(false);
                    }
                    drop(state);
                    if let Err(e) = result {
                        self.call_protocol(|p| p.error_received(e));
                    }
                }
            }
        }
        let closing = {
            let mut state = self.inner.state.borrow_mut();
            state.writing = false;
            state.queue = VecDeque::new();
            state.closing
        };
        self.inner.ev.remove_writer(self.inner.fd);
        if closing {
            self.finish(None);
        } else {
            self.sync_flow();
        }
    }

    /// Closes once the queued datagrams are sent; the protocol gets
    /// `connection_lost(None)`.
    pub fn close(&self) {
        let mut state = self.inner.state.borrow_mut();
        if state.closed || state.closing {
            return;
        }
        if state.queue.is_empty() {
            drop(state);
            self.finish(None);
        } else {
            state.closing = true;
            drop(state);
            self.inner.ev.remove_reader(self.inner.fd);
        }
    }

    /// Closes now, dropping queued datagrams.
    pub fn abort(&self) {
        self.finish(None);
    }

    fn finish(&self, err: Option<io::Error>) {
        let (sock, queue, writing, owned) = {
            let mut state = self.inner.state.borrow_mut();
            if state.closed {
                return;
            }
            state.closed = true;
            state.queued_bytes = 0;
            (
                state.sock.take(),
                std::mem::take(&mut state.queue),
                std::mem::replace(&mut state.writing, false),
                state.owned_path.take(),
            )
        };
        self.inner.ev.remove_reader(self.inner.fd);
        if writing {
            self.inner.ev.remove_writer(self.inner.fd);
        }
        drop(sock);
        drop(queue);
        if let Some((path, dev, ino)) = owned {
            let ours = std::fs::symlink_metadata(&path)
                .map(|m| m.dev() == dev && m.ino() == ino)
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(&path);
            }
        }
        let me = self.clone();
        self.inner.ev.call_soon(move || me.deliver_lost(err));
    }

    fn deliver_lost(&self, err: Option<io::Error>) {
        if let Err(err) = self.inner.protocol.deliver_lost(err) {
            let me = self.clone();
            self.inner.ev.call_soon(move || me.deliver_lost(err));
        }
    }

    /// Whether `close` or `abort` was called.
    pub fn is_closing(&self) -> bool {
        let state = self.inner.state.borrow();
        state.closed || state.closing
    }

    /// Bytes of datagrams queued because the socket's buffer was full.
    pub fn write_buffer_size(&self) -> usize {
        self.inner.state.borrow().queued_bytes
    }

    /// The local address (with the port the system picked for port 0).
    pub fn local_addr(&self) -> io::Result<Address> {
        let state = self.inner.state.borrow();
        state.sock.as_ref().ok_or_else(closed_error)?.local_addr()
    }

    /// The connected remote address; an error if the endpoint is not connected.
    pub fn peer_addr(&self) -> io::Result<Address> {
        let state = self.inner.state.borrow();
        state.sock.as_ref().ok_or_else(closed_error)?.peer_addr()
    }

    /// The loop this endpoint runs on.
    pub fn event_loop(&self) -> &EventLoop {
        &self.inner.ev
    }
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DatagramTransport");
        d.field("fd", &self.inner.fd);
        if let Ok(state) = self.inner.state.try_borrow() {
            d.field("closed", &state.closed)
                .field("queued", &state.queue.len());
        }
        d.finish()
    }
}
