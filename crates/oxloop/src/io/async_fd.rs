//! `Async<T>`: any fd as a source of readiness futures.

use crate::event_loop::watchers::Readiness;
use crate::event_loop::Inner;
use crate::EventLoop;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

/// Wraps an fd-owning value (a socket, a pipe end, a character device, an inotify or
/// ZeroMQ fd…) so tasks can wait for it to become readable or writable.
///
/// The fd is put in non-blocking mode and registered once with the loop,
/// edge-triggered. Readiness is cached: an operation that would block clears it, and
/// the next readiness report from the kernel sets it again and wakes the waiting task,
/// so no system call is spent re-arming the fd.
///
/// ```
/// use oxloop::{io::Async, EventLoop};
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
///
/// let ev = EventLoop::new()?;
/// let (a, mut b) = UnixStream::pair()?;
/// let a = Async::new(a)?;
/// b.write_all(b"hi")?;
/// let mut buf = [0; 2];
/// let n = ev.block_on(a.read_with(|mut s| s.read(&mut buf)))??;
/// assert_eq!(&buf[..n], b"hi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Async<T: AsFd> {
    io: Option<T>,
    fd: RawFd,
    source: Rc<Readiness>,
    owner: Weak<Inner>,
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::ioctl_fionbio(fd, true)?;
    Ok(())
}

impl<T: AsFd> Async<T> {
    /// Registers `io` with the current thread's loop.
    pub fn new(io: T) -> io::Result<Async<T>> {
        let ev = EventLoop::current()?;
        Self::with_loop(&ev, io)
    }

    /// Registers `io` with `ev`.
    pub fn with_loop(ev: &EventLoop, io: T) -> io::Result<Async<T>> {
        let fd = io.as_fd().as_raw_fd();
        set_nonblocking(io.as_fd())?;
        let source = ev.add_readiness(fd)?;
        Ok(Async {
            io: Some(io),
            fd,
            source,
            owner: ev.downgrade(),
        })
    }

    /// The wrapped value.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("present until dropped")
    }

    /// The wrapped value, mutably. Do not replace its fd.
    pub fn get_mut(&mut self) -> &mut T {
        self.io.as_mut().expect("present until dropped")
    }

    /// Deregisters the fd and hands back the value (still in non-blocking mode).
    pub fn into_inner(mut self) -> T {
        self.deregister();
        self.io.take().expect("present until dropped")
    }

    fn deregister(&self) {
        if let Some(ev) = EventLoop::upgrade(&self.owner) {
            ev.remove_readiness(self.fd, &self.source);
        }
    }

    /// Ready when the fd is (or may be) readable; otherwise remembers the task.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_ready(&self.source.readable, &self.source.read_waker, cx)
    }

    /// Ready when the fd is (or may be) writable; otherwise remembers the task.
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_ready(&self.source.writable, &self.source.write_waker, cx)
    }

    /// Waits until the fd is readable.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Waits until the fd is writable.
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// Forgets cached readability (after an operation returned less than asked, for
    /// streams, or would block).
    pub(crate) fn clear_readable(&self) {
        self.source.readable.set(false);
    }

    /// Whether the kernel reported a hang-up or error on the fd.
    pub(crate) fn peer_closed(&self) -> bool {
        self.source.closed.get()
    }

    /// Forgets cached writability.
    pub(crate) fn clear_writable(&self) {
        self.source.writable.set(false);
    }

    /// Runs the non-blocking `op` once the fd is readable, retrying after each
    /// `WouldBlock`.
    pub fn poll_read_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            std::task::ready!(self.poll_readable(cx))?;
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_readable(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }

    /// Runs the non-blocking `op` once the fd is writable, retrying after each
    /// `WouldBlock`.
    pub fn poll_write_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            std::task::ready!(self.poll_writable(cx))?;
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_writable(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }

    /// Runs the non-blocking `op` until it does not return `WouldBlock`, waiting for
    /// readability in between.
    pub async fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        poll_fn(|cx| self.poll_read_with(cx, &mut op)).await
    }

    /// Runs the non-blocking `op` until it does not return `WouldBlock`, waiting for
    /// writability in between.
    pub async fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        poll_fn(|cx| self.poll_write_with(cx, &mut op)).await
    }
}

fn poll_ready(
    flag: &std::cell::Cell<bool>,
    waker: &std::cell::Cell<Option<std::task::Waker>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if flag.get() {
        return Poll::Ready(Ok(()));
    }
    let old = waker.take();
    waker.set(match old {
        Some(w) if w.will_wake(cx.waker()) => Some(w),
        _ => Some(cx.waker().clone()),
    });
    Poll::Pending
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        if self.io.is_some() {
            self.deregister();
        }
    }
}

impl<T: AsFd> AsFd for Async<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsFd> AsRawFd for Async<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl<T: AsFd + fmt::Debug> fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Async").field("io", &self.io).finish()
    }
}
