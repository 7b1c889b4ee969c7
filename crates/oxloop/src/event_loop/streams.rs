//! Stream and listening sockets served by the backend itself (io_uring's multishot
//! receive and queued sends, multishot accept), for the protocol layer's transports and
//! servers.

use super::EventLoop;
use crate::reactor::{Accepted, Received};
use std::io;
use std::os::fd::RawFd;

impl EventLoop {
    /// Serves stream socket `fd` through the backend's own reads and writes, if the
    /// backend has them; call before the fd's handler is added. Returns whether it
    /// does (then use [`stream_receive`](Self::stream_receive) and
    /// [`stream_send`](Self::stream_send) instead of `recv` and `send`).
    pub(crate) fn start_stream(&self, fd: RawFd) -> bool {
        self.inner.backend.start_stream(fd)
    }

    /// Passes the next buffer received on stream `fd` to `f`.
    pub(crate) fn stream_receive(&self, fd: RawFd, f: impl FnOnce(&[u8])) -> Received {
        self.inner.backend.receive(fd, f)
    }

    /// Queues `data` on stream `fd`, sent with the next wait; returns the bytes not
    /// yet taken by the kernel.
    pub(crate) fn stream_send(&self, fd: RawFd, data: &[u8]) -> io::Result<usize> {
        self.inner.backend.send(fd, data)
    }

    /// Bytes queued on stream `fd` and not yet taken by the kernel, or the error that
    /// ended sending.
    pub(crate) fn stream_backlog(&self, fd: RawFd) -> io::Result<usize> {
        self.inner.backend.backlog(fd)
    }

    /// Accepts connections on listening socket `fd` through the backend itself, if it
    /// can; call before the fd's reader is added. Returns whether it does (then take
    /// connections with [`listener_accept`](Self::listener_accept) instead of calling
    /// `accept`, and call [`stop_listener`](Self::stop_listener) before closing it).
    pub(crate) fn start_listener(&self, fd: RawFd) -> bool {
        self.inner.backend.start_listener(fd)
    }

    /// The next connection accepted on listener `fd`, if its fd is below `fd_limit`
    /// (the process's fd limit now; else `EMFILE`).
    pub(crate) fn listener_accept(&self, fd: RawFd, fd_limit: u64) -> Accepted {
        self.inner.backend.accept(fd, fd_limit)
    }

    /// Forgets started listener `fd` before it is closed: the connections accepted for
    /// it that nobody took are closed.
    pub(crate) fn stop_listener(&self, fd: RawFd) {
        self.inner.backend.stop_listener(fd)
    }
}
