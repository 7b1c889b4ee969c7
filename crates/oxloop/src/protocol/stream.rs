//! The stream transport (TCP and Unix stream sockets).

use super::address::Address;
use super::buffer::{send_file, ReadBuffer, WriteBuffer, MAX_IOVECS};
use super::send::{send, send_vectored, SEND_FLAGS};
use super::slot::ProtocolSlot;
use super::Protocol;
use crate::event_loop::FdHandler;
use crate::reactor::{Interest, Ready, Received, Trigger};
use crate::{EventLoop, Handle};
use rustix::io::Errno;
use rustix::net::RecvFlags;
use socket2::{SockRef, Socket};
use std::cell::{RefCell, RefMut};
use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Default high-water mark of the write buffer (asyncio's).
pub(crate) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// Prepares an accepted or connected stream socket: non-blocking, no `SIGPIPE`, and
/// `TCP_NODELAY` for TCP (a transport writes whole messages; Nagle only adds latency).
pub(crate) fn prepare_stream(sock: &Socket, tcp: bool) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    #[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
    sock.set_nosigpipe(true)?;
    if tcp {
        sock.set_tcp_nodelay(true)?;
    }
    Ok(())
}

pub(crate) fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the transport is closed")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Open,
    /// `close()` was called with data still buffered: flushing, then closing.
    Closing,
    Closed,
}

struct State {
    /// The socket. An `OwnedFd` rather than a `socket2::Socket` so the hot path's
    /// system calls borrow it inline; other operations go through a `SockRef`.
    sock: Option<OwnedFd>,
    phase: Phase,
    buf: WriteBuffer,
    /// Reading is on: the loop watches the fd for readability.
    reading: bool,
    /// `pause_reading()` is in effect.
    read_paused: bool,
    /// End of stream seen: reading is over for good.
    eof_seen: bool,
    /// Data waits to be sent: the loop watches the fd for writability.
    writing: bool,
    /// `write_eof()` was called; the shutdown happens once the buffer is empty.
    eof_requested: bool,
    /// `write` may send at once: the transport is open, `write_eof()` was not called
    /// and it is not a `ring` transport. One flag for `write`'s fast path to test
    /// instead of three; once false it stays false.
    sends_directly: bool,
    eof_sent: bool,
    high: usize,
    low: usize,
    timeouts: Vec<Handle>,
    /// Told `true` when the write buffer is next empty, `false` if the connection closes
    /// first (see [`Transport::when_flushed`]).
    flush_waiters: Vec<Box<dyn FnOnce(bool)>>,
    prune_at: usize,
}

struct Inner {
    ev: EventLoop,
    fd: RawFd,
    /// The loop reads and writes the socket itself (io_uring: multishot receive into
    /// provided buffers, sends queued and submitted with the next wait) instead of the
    /// transport calling `recv` and `send` on readiness.
    ring: bool,
    read_buf: Rc<ReadBuffer>,
    state: RefCell<State>,
    protocol: ProtocolSlot<dyn Protocol>,
}

/// The writing end and control of a stream connection, handed to
/// [`Protocol::connection_made`]. Cheap to clone; all clones are the same connection.
///
/// Every method is non-blocking and safe to call from any callback of the loop,
/// including the protocol's own callbacks and after the connection closed (then they
/// do nothing, or return an error for [`write`](Transport::write)).
#[derive(Clone)]
pub struct Transport {
    inner: Rc<Inner>,
}

/// A transport that does not keep the connection's state alive (a server's list of
/// its connections).
#[derive(Clone)]
pub(crate) struct WeakTransport(Weak<Inner>);

impl WeakTransport {
    /// The transport, if it still exists and is not closing.
    pub fn open(&self) -> Option<Transport> {
        let inner = self.0.upgrade()?;
        let open = inner.state.borrow().phase == Phase::Open;
        open.then_some(Transport { inner })
    }
}

impl Transport {
    pub(crate) fn downgrade(&self) -> WeakTransport {
        WeakTransport(Rc::downgrade(&self.inner))
    }

    /// Wraps a connected, prepared socket, starts reading and calls `connection_made`.
    pub(crate) fn start(
        ev: &EventLoop,
        sock: Socket,
        protocol: Box<dyn Protocol>,
    ) -> io::Result<Transport> {
        let fd = sock.as_raw_fd();
        let ring = ev.start_stream(fd);
        let inner = Rc::new(Inner {
            ev: ev.clone(),
            fd,
            ring,
            read_buf: ReadBuffer::shared(),
            state: RefCell::new(State {
                sock: Some(sock.into()),
                phase: Phase::Open,
                buf: WriteBuffer::default(),
                reading: false,
                read_paused: false,
                eof_seen: false,
                writing: false,
                eof_requested: false,
                sends_directly: !ring,
                eof_sent: false,
                high: DEFAULT_HIGH_WATER,
                low: DEFAULT_HIGH_WATER / 4,
                timeouts: Vec::new(),
                flush_waiters: Vec::new(),
                prune_at: 8,
            }),
            protocol: ProtocolSlot::new(protocol),
        });
        ev.add_handler(fd, inner.clone(), Interest::READ, Trigger::Level, true)?;
        inner.state.borrow_mut().reading = true;
        let transport = Transport { inner };
        let t = transport.clone();
        transport.call_protocol(move |p| p.connection_made(t));
        Ok(transport)
    }

    /// Wraps a connected stream socket (TCP or Unix) made elsewhere, such as one that
    /// Python code accepted or connected: makes it non-blocking (and `TCP_NODELAY` for
    /// TCP), starts reading and calls `connection_made`. The transport owns the socket
    /// from now on and closes it.
    pub fn adopt(
        ev: &EventLoop,
        sock: Socket,
        protocol: impl Protocol + 'static,
    ) -> io::Result<Transport> {
        let tcp = matches!(
            sock.domain()?,
            socket2::Domain::IPV4 | socket2::Domain::IPV6
        );
        prepare_stream(&sock, tcp)?;
        Transport::start(ev, sock, Box::new(protocol))
    }

    /// Tells the loop what to watch the fd for, after `reading` or `writing` changed.
    fn sync_interest(&self) -> io::Result<()> {
        let interest = {
            let state = self.inner.state.borrow();
            if state.sock.is_none() {
                return Ok(());
            }
            Interest {
                read: state.reading,
                write: state.writing,
            }
        };
        self.inner.ev.set_interest(self.inner.fd, interest)
    }

    /// Reads what the socket has into the thread's shared buffer and hands it to the
    /// protocol.
    #[inline(always)]
    fn on_readable(&self) {
        if self.inner.ring {
            self.on_received();
            return;
        }
        self.read_socket();
    }

    /// [`on_readable`](Self::on_readable) for a transport that is not a `ring` one.
    #[inline(always)]
    fn read_socket(&self) {
        match self.inner.read_buf.try_borrow() {
            Some(mut buf) => self.read_into(&mut buf),
            None => self.read_into_temporary(),
        }
    }

    /// [`on_readable`](Self::on_readable) while the shared buffer is in use further up
    /// the stack (a protocol running a nested loop).
    #[cold]
    #[inline(never)]
    fn read_into_temporary(&self) {
        self.read_into(&mut ReadBuffer::temporary());
    }

    /// One `recv` into `buf`, then `data_received`, end of stream or the error.
    #[inline(always)]
    fn read_into(&self, buf: &mut [u8]) {
        let result = {
            // Mutably, though it only reads: a `RefCell`'s exclusive borrow takes fewer
            // instructions than a shared one, and nothing holds the state across a call
            // out of the transport.
            let state = self.inner.state.borrow_mut();
            match state.sock.as_ref() {
                Some(sock) if state.reading => {
                    rustix::net::recv(sock, &mut *buf, RecvFlags::empty())
                }
                _ => return,
            }
        };
        match result {
            Ok((0, _)) => self.on_eof(),
            Ok((n, _)) => {
                let data = &buf[..n];
                self.call_protocol(|p| p.data_received(data));
            }
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => self.fail(e.into()),
        }
    }

    /// Hands the protocol what the loop received for this socket (`ring` transports).
    /// Out of line, so the readiness handler's frame is the `recv` path's alone.
    #[inline(never)]
    fn on_received(&self) {
        while self.inner.state.borrow().reading {
            let received = self.inner.ev.stream_receive(self.inner.fd, |data| {
                self.call_protocol(|p| p.data_received(data));
            });
            match received {
                Received::Data => {}
                Received::Nothing => return,
                Received::End => return self.on_eof(),
                Received::Failed(e) => return self.fail(e),
            }
        }
    }

    /// Bytes the loop still has to send for a `ring` transport (0 for others, and after
    /// a send failed: the failure is reported by the writer).
    fn unsent(&self) -> usize {
        if self.inner.ring {
            self.inner.ev.stream_backlog(self.inner.fd).unwrap_or(0)
        } else {
            0
        }
    }

    /// `write` for `ring` transports: the bytes are queued in the loop and sent with
    /// its next wait, several writes in one send.
    fn write_queued(&self, data: &[u8]) -> io::Result<()> {
        let mut state = self.open_for_output("write")?;
        if data.is_empty() {
            return Ok(());
        }
        if !state.buf.is_empty() {
            // Behind a file being sent: in order, through the transport's buffer.
            state.buf.push(data);
            return self.buffered(state);
        }
        let unsent = match self.inner.ev.stream_send(self.inner.fd, data) {
            Ok(unsent) => unsent,
            Err(e) => {
                drop(state);
                return Err(self.fail_with(e));
            }
        };
        if unsent > state.high {
            self.inner.protocol.set_paused(true);
            self.watch_flush(state)?;
            self.sync_flow();
        }
        Ok(())
    }

    /// Makes the writer run as the loop sends the queue (`ring` transports, which do
    /// not watch for writability while they write): after each send that took bytes,
    /// to resume a paused protocol at the low-water mark, and once everything is sent.
    fn watch_flush(&self, mut state: RefMut<'_, State>) -> io::Result<()> {
        let need_writer = !state.writing;
        state.writing = true;
        drop(state);
        if need_writer {
            self.sync_interest().map_err(|e| self.fail_with(e))?;
        }
        Ok(())
    }

    #[inline(never)]
    fn on_eof(&self) {
        {
            let mut state = self.inner.state.borrow_mut();
            state.eof_seen = true;
            state.reading = false;
        }
        if let Err(e) = self.sync_interest() {
            self.fail(e);
            return;
        }
        let mut keep_open = false;
        self.call_protocol(|p| keep_open = p.eof_received());
        if !keep_open {
            self.close();
        }
    }

    fn call_protocol(&self, f: impl FnOnce(&mut dyn Protocol)) {
        self.inner.protocol.call(|p| f(p));
    }

    fn sync_flow(&self) {
        self.inner.protocol.sync();
    }

    /// Sends `data`, or as much as the socket takes now and buffers the rest; never
    /// blocks. Buffered bytes go out (several at a time, with vectored writes) when the
    /// socket becomes writable. Above the high-water mark the protocol gets
    /// [`Protocol::pause_writing`].
    ///
    /// Fails with [`io::ErrorKind::NotConnected`] once the transport is closing or
    /// closed, with [`io::ErrorKind::BrokenPipe`] after [`write_eof`](Self::write_eof),
    /// and with the socket's error if sending fails (then the connection is closed and
    /// the protocol also gets `connection_lost(Some(err))`).
    #[inline]
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        // The common case, kept small: nothing buffered and the socket takes it all.
        // (Borrowed mutably for the cheaper check, as in `read_into`.)
        let state = self.inner.state.borrow_mut();
        if state.sends_directly && state.buf.is_empty() && !data.is_empty() {
            if let Some(sock) = &state.sock {
                match rustix::net::send(sock, data, SEND_FLAGS) {
                    Ok(n) if n == data.len() => return Ok(()),
                    Ok(n) => {
                        drop(state);
                        return self.write_slow(&data[n..], false);
                    }
                    Err(Errno::AGAIN) => {
                        drop(state);
                        return self.write_slow(data, false);
                    }
                    // Retried (EINTR) or reported by the slow path.
                    Err(_) => {}
                }
            }
        }
        drop(state);
        self.write_slow(data, true)
    }

    /// Everything [`write`](Self::write) does besides a complete immediate send (and every
    /// write of a `ring` transport):
    /// errors, buffering, the writer, flow control. `try_send`: whether to attempt a
    /// send first (false when the socket just refused more).
    #[inline(never)]
    fn write_slow(&self, data: &[u8], try_send: bool) -> io::Result<()> {
        if self.inner.ring {
            return self.write_queued(data);
        }
        let mut state = self.open_for_output("write")?;
        if data.is_empty() {
            return Ok(());
        }
        let mut rest = data;
        if state.buf.is_empty() && try_send {
            let sock = state.sock.as_ref().expect("an open transport has a socket");
            loop {
                match send(sock, rest) {
                    Ok(n) if n == rest.len() => return Ok(()),
                    Ok(n) => {
                        rest = &rest[n..];
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        drop(state);
                        return Err(self.fail_with(e));
                    }
                }
            }
        }
        state.buf.push(rest);
        self.buffered(state)
    }

    /// Sends `len` bytes of `file`, starting at `offset`, after everything written
    /// before; later writes go after it. The bytes do not pass through user space:
    /// `sendfile(2)` on Linux (a positioned read and a send elsewhere). The transport
    /// owns the file until its range is sent, sends it as the socket takes it, and
    /// counts it in [`write_buffer_size`](Self::write_buffer_size) (so flow control
    /// applies). If the file turns out shorter than `offset + len`, the promised bytes
    /// cannot be delivered: the connection is closed and the protocol gets
    /// `connection_lost` with an [`io::ErrorKind::UnexpectedEof`] error.
    ///
    /// Fails like [`write`](Self::write) on a closing transport or after
    /// [`write_eof`](Self::write_eof).
    pub fn send_file(&self, file: File, offset: u64, len: u64) -> io::Result<()> {
        let mut state = self.open_for_output("send_file")?;
        let (mut offset, mut left) = (offset, len);
        if left > 0 && state.buf.is_empty() && self.unsent() == 0 {
            // One attempt now; the writer sends the rest as the socket drains, one
            // call per readiness report, so a large file does not hold up the loop.
            let sock = state.sock.as_ref().expect("an open transport has a socket");
            match send_file(sock, &file, offset, left) {
                Ok(0) => {
                    drop(state);
                    self.fail(file_ended());
                    return Err(file_ended());
                }
                Ok(n) => {
                    offset += n as u64;
                    left -= n as u64;
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    drop(state);
                    return Err(self.fail_with(e));
                }
            }
        }
        if left == 0 {
            return Ok(());
        }
        state.buf.push_file(file, offset, left);
        self.buffered(state)
    }

    /// The state, if more output may be queued: open, and no `write_eof` yet (`what`
    /// names the call in the error).
    fn open_for_output(&self, what: &str) -> io::Result<RefMut<'_, State>> {
        let state = self.inner.state.borrow_mut();
        if state.phase != Phase::Open {
            return Err(closed_error());
        }
        if state.eof_requested {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("{what} after write_eof()"),
            ));
        }
        Ok(state)
    }

    /// After something was added to the write buffer: watch for writability and apply
    /// the high-water mark.
    fn buffered(&self, mut state: RefMut<'_, State>) -> io::Result<()> {
        let need_writer = !state.writing;
        state.writing = true;
        if state.buf.len() + self.unsent() > state.high {
            self.inner.protocol.set_paused(true);
        }
        drop(state);
        if need_writer {
            self.sync_interest().map_err(|e| self.fail_with(e))?;
        }
        self.sync_flow();
        Ok(())
    }

    /// Closes because of `err` (see [`fail`](Self::fail)) and hands back a copy of it
    /// for the caller.
    fn fail_with(&self, err: io::Error) -> io::Error {
        let returned = io::Error::new(err.kind(), err.to_string());
        self.fail(err);
        returned
    }

    /// Writes every buffer in `parts` in order, as one [`write`](Self::write) would.
    pub fn writelines<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        for part in parts {
            self.write(part)?;
        }
        Ok(())
    }

    /// Sends what the write buffer holds (the socket became writable). Out of line: the
    /// read path, which runs for every message, stays small.
    #[inline(never)]
    fn on_writable(&self) {
        let mut state = self.inner.state.borrow_mut();
        if !state.writing {
            return;
        }
        if self.inner.ring {
            match self.inner.ev.stream_backlog(self.inner.fd) {
                Ok(0) => {} // sent: the transport's own buffer (files) is next
                Ok(backlog) => {
                    // Still sending; the protocol resumes once what is left is down to
                    // the low-water mark, as it would on a readiness backend.
                    if self.inner.protocol.is_paused() && backlog + state.buf.len() <= state.low {
                        self.inner.protocol.set_paused(false);
                        drop(state);
                        self.sync_flow();
                    }
                    return;
                }
                Err(e) => {
                    drop(state);
                    self.fail(e);
                    return;
                }
            }
        }
        let result = {
            let Some(fd) = state.sock.as_ref() else {
                return;
            };
            if let Some((file, offset, left)) = state.buf.front_file() {
                match send_file(fd, file, offset, left) {
                    Ok(0) => Err(file_ended()),
                    other => other,
                }
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = state.buf.slices(&mut slices);
                match n {
                    0 => Ok(0),
                    1 => send(fd, &slices[0]),
                    _ => send_vectored(fd, &slices[..n]),
                }
            }
        };
        match result {
            Ok(n) => state.buf.consume(n),
            Err(e) if is_transient(&e) => return,
            Err(e) => {
                drop(state);
                self.fail(e);
                return;
            }
        }
        if self.inner.protocol.is_paused() && state.buf.len() <= state.low {
            self.inner.protocol.set_paused(false);
        }
        if !state.buf.is_empty() {
            drop(state);
            self.sync_flow();
            return;
        }
        state.writing = false;
        let flushed = std::mem::take(&mut state.flush_waiters);
        let closing = state.phase == Phase::Closing;
        let mut shutdown_result = Ok(());
        if !closing && state.eof_requested && !state.eof_sent {
            state.eof_sent = true;
            if let Some(sock) = &state.sock {
                shutdown_result = SockRef::from(sock).shutdown(Shutdown::Write);
            }
        }
        drop(state);
        self.tell_flushed(flushed, true);
        if closing {
            self.finish(None);
        } else if let Err(e) = self.sync_interest() {
            self.fail(e);
        } else if let Err(e) = shutdown_result {
            self.fail(e);
        } else {
            self.sync_flow();
        }
    }

    /// Closes the writing side once the buffered data is sent (a TCP FIN); reading goes
    /// on. Further writes fail. Does nothing if already called or closed.
    pub fn write_eof(&self) {
        let mut state = self.inner.state.borrow_mut();
        if state.phase != Phase::Open || state.eof_requested {
            return;
        }
        state.eof_requested = true;
        state.sends_directly = false;
        if !state.buf.is_empty() || self.unsent() > 0 {
            // on_writable shuts down once the buffer drained
            if let Err(e) = self.watch_flush(state) {
                self.fail(e);
            }
            return;
        }
        state.eof_sent = true;
        let result = match &state.sock {
            Some(sock) => SockRef::from(sock).shutdown(Shutdown::Write),
            None => Ok(()),
        };
        drop(state);
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// Whether [`write_eof`](Self::write_eof) is supported (always, for stream sockets).
    pub fn can_write_eof(&self) -> bool {
        true
    }

    /// Stops reading, sends what is buffered, then closes the socket; the protocol gets
    /// `connection_lost(None)` afterwards. Does nothing if already closing.
    pub fn close(&self) {
        let mut state = self.inner.state.borrow_mut();
        if state.phase != Phase::Open {
            return;
        }
        if state.buf.is_empty() && self.unsent() == 0 {
            drop(state);
            self.finish(None);
            return;
        }
        let was_reading = std::mem::replace(&mut state.reading, false);
        let need_writer = !std::mem::replace(&mut state.writing, true);
        state.phase = Phase::Closing;
        state.sends_directly = false;
        drop(state);
        if was_reading || need_writer {
            if let Err(e) = self.sync_interest() {
                self.fail(e);
            }
        }
    }

    /// Closes the connection now, dropping any buffered data; the protocol gets
    /// `connection_lost(None)` afterwards.
    pub fn abort(&self) {
        self.finish(None);
    }

    /// Closes because of `err`: the protocol gets `connection_lost(Some(err))`. Errors
    /// after the transport is closed are not reported again.
    #[cold]
    #[inline(never)]
    fn fail(&self, err: io::Error) {
        self.finish(Some(err));
    }

    /// Tears the connection down: watchers off, socket closed, owned timeouts cancelled,
    /// `connection_lost` scheduled. Idempotent.
    fn finish(&self, err: Option<io::Error>) {
        let (sock, timeouts, buffer, flushed) = {
            let mut state = self.inner.state.borrow_mut();
            if state.phase == Phase::Closed {
                return;
            }
            state.phase = Phase::Closed;
            state.sends_directly = false;
            state.reading = false;
            state.writing = false;
            (
                state.sock.take(),
                std::mem::take(&mut state.timeouts),
                std::mem::take(&mut state.buf),
                std::mem::take(&mut state.flush_waiters),
            )
        };
        // Out of the loop before the fd is closed, so a new socket given the same
        // number never meets this transport.
        self.inner.ev.remove_handler(self.inner.fd);
        drop(sock);
        drop(buffer);
        for timeout in &timeouts {
            timeout.cancel();
        }
        drop(timeouts);
        self.tell_flushed(flushed, false);
        let me = LostPending(self.clone());
        self.inner.ev.call_soon(move || me.0.deliver_lost(err));
    }

    fn deliver_lost(&self, err: Option<io::Error>) {
        if let Err(err) = self.inner.protocol.deliver_lost(err) {
            let me = LostPending(self.clone());
            self.inner.ev.call_soon(move || me.0.deliver_lost(err));
        }
    }

    /// Calls `f(true)` once everything written so far has gone to the kernel (at once,
    /// in a later callback, if nothing is buffered), or `f(false)` if the connection
    /// closes first. For "drain"-style waits, such as a file sent with
    /// [`send_file`](Self::send_file) before the next step.
    pub fn when_flushed(&self, f: impl FnOnce(bool) + 'static) {
        let mut state = self.inner.state.borrow_mut();
        let result = match state.phase {
            Phase::Closed => false,
            _ if state.buf.is_empty() && self.unsent() == 0 => true,
            _ => {
                state.flush_waiters.push(Box::new(f));
                if self.inner.ring {
                    if let Err(e) = self.watch_flush(state) {
                        self.fail(e);
                    }
                }
                return;
            }
        };
        drop(state);
        self.inner.ev.call_soon(move || f(result));
    }

    fn tell_flushed(&self, waiters: Vec<Box<dyn FnOnce(bool)>>, flushed: bool) {
        for waiter in waiters {
            self.inner.ev.call_soon(move || waiter(flushed));
        }
    }

    /// Stops reading until [`resume_reading`](Self::resume_reading): no
    /// `data_received` calls meanwhile, and the kernel's buffer fills up, which slows
    /// the peer down.
    pub fn pause_reading(&self) {
        let mut state = self.inner.state.borrow_mut();
        if state.phase != Phase::Open || state.read_paused {
            return;
        }
        state.read_paused = true;
        let was_reading = std::mem::replace(&mut state.reading, false);
        drop(state);
        if was_reading {
            if let Err(e) = self.sync_interest() {
                self.fail(e);
            }
        }
    }

    /// Resumes reading after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        let mut state = self.inner.state.borrow_mut();
        if state.phase != Phase::Open || !state.read_paused {
            return;
        }
        state.read_paused = false;
        let start = !state.eof_seen && !state.reading;
        state.reading |= start;
        drop(state);
        if start {
            if let Err(e) = self.sync_interest() {
                self.fail(e);
            }
        }
    }

    /// Whether reading is on (not paused, not at end of stream, not closed).
    pub fn is_reading(&self) -> bool {
        self.inner.state.borrow().reading
    }

    /// Sets the write buffer's high- and low-water marks, in bytes: above `high` the
    /// protocol gets `pause_writing`, and `resume_writing` once the buffer drained to
    /// `low` or less. Defaults: 64 KiB and 16 KiB. `low > high` is an error.
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) -> io::Result<()> {
        if low > high {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("low-water mark {low} is above the high-water mark {high}"),
            ));
        }
        {
            let mut state = self.inner.state.borrow_mut();
            state.high = high;
            state.low = low;
            let size = state.buf.len() + self.unsent();
            if size > high {
                self.inner.protocol.set_paused(true);
            } else if size <= low {
                self.inner.protocol.set_paused(false);
            }
        }
        self.sync_flow();
        Ok(())
    }

    /// The write buffer's `(high, low)` water marks.
    pub fn write_buffer_limits(&self) -> (usize, usize) {
        let state = self.inner.state.borrow();
        (state.high, state.low)
    }

    /// Whether the write buffer went above its high-water mark and has not yet drained
    /// to the low-water mark: the protocol has been (or is about to be) told
    /// `pause_writing`, and will be told `resume_writing` when this turns false.
    pub fn is_writing_paused(&self) -> bool {
        self.inner.protocol.is_paused()
    }

    /// Bytes accepted by [`write`](Self::write) that the kernel has not taken yet.
    pub fn write_buffer_size(&self) -> usize {
        self.inner.state.borrow().buf.len() + self.unsent()
    }

    /// Whether [`close`](Self::close) or [`abort`](Self::abort) was called or the
    /// connection was lost.
    pub fn is_closing(&self) -> bool {
        self.inner.state.borrow().phase != Phase::Open
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<Address> {
        let state = self.inner.state.borrow();
        let sock = state.sock.as_ref().ok_or_else(closed_error)?;
        Ok(Address::from_sockaddr(&SockRef::from(sock).peer_addr()?))
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<Address> {
        let state = self.inner.state.borrow();
        let sock = state.sock.as_ref().ok_or_else(closed_error)?;
        Ok(Address::from_sockaddr(&SockRef::from(sock).local_addr()?))
    }

    /// The socket's fd, while the connection is open (for socket options).
    pub fn raw_fd(&self) -> Option<RawFd> {
        let state = self.inner.state.borrow();
        state.sock.as_ref().map(|_| self.inner.fd)
    }

    /// The loop this transport runs on.
    pub fn event_loop(&self) -> &EventLoop {
        &self.inner.ev
    }

    /// Runs `f` after `delay`, unless the connection closes first: a timeout owned by
    /// the connection, cancelled automatically when it closes (by `close`, `abort`, the
    /// peer or an error). The returned handle cancels it earlier. On a closed
    /// transport nothing is scheduled (the handle refers to nothing).
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> Handle {
        let mut state = self.inner.state.borrow_mut();
        if state.phase == Phase::Closed {
            return Handle::inert();
        }
        if state.timeouts.len() >= state.prune_at {
            // Forget handles that fired or were cancelled, so re-armed timeouts do not
            // accumulate.
            state.timeouts.retain(Handle::is_pending);
            state.prune_at = (state.timeouts.len() * 2).max(8);
        }
        let handle = self.inner.ev.call_later(delay, f);
        state.timeouts.push(handle.clone());
        handle
    }

    /// Whether two handles are the same connection.
    pub fn ptr_eq(&self, other: &Transport) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

/// A closed transport as the pending call that gives its protocol `connection_lost`
/// holds it. Dropped by a destroyed loop, the call never made, it drops the protocol
/// (without a call, as [`FdHandler::loop_destroyed`] does): the protocol may hold the
/// transport, which is out of the loop's fd handlers by then, so nothing else would
/// break that cycle.
struct LostPending(Transport);

impl Drop for LostPending {
    fn drop(&mut self) {
        if self.0.inner.ev.is_destroyed() {
            self.0.inner.protocol.discard();
        }
    }
}

impl FdHandler for Inner {
    fn loop_destroyed(self: Rc<Self>) {
        // The protocol may hold this transport, which holds the loop: dropped, as
        // everything else the loop holds is, without a call (as asyncio's `close()`
        // calls no protocol).
        self.protocol.discard();
    }

    fn on_ready(self: Rc<Self>, ready: Ready) {
        let transport = Transport { inner: self };
        if ready.only_readable() {
            // The common report, one test instead of two. A readiness backend's: the
            // io_uring backend's never take this path (see `Ready::RING`), so the
            // bytes are in the socket.
            debug_assert!(!transport.inner.ring, "a ring stream's report without RING");
            transport.read_socket();
            return;
        }
        if ready.readable() {
            transport.on_readable();
        }
        if ready.writable() {
            transport.on_writable();
        }
    }
}

fn file_ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ended before the range given to send_file",
    )
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Transport");
        d.field("fd", &self.inner.fd);
        if let Ok(state) = self.inner.state.try_borrow() {
            d.field("phase", &state.phase)
                .field("buffered", &state.buf.len())
                .field("reading", &state.reading);
        }
        d.finish()
    }
}
