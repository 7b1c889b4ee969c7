//! The reactor: a thin layer over the operating system's readiness API.
//!
//! Everything that talks to the kernel about readiness lives here, one file per job:
//!
//! - [`epoll`](self) (Linux): `epoll` through `rustix`, level-triggered by default;
//! - `uring` (Linux, chosen per loop): `io_uring` through the `io-uring` crate;
//! - `portable` (other Unixes): the `polling` crate (kqueue, event ports, poll);
//! - `waker`: an `eventfd` (or a socket pair) that wakes a sleeping poller from another
//!   thread or from a signal handler;
//! - `signal`: the process-wide `sigaction` plumbing that turns signals into wake-ups.
//!
//! The rest of the crate sees only [`Backend`] (one of those, chosen when the loop is
//! created: [`BackendKind`]; waited on through [`Wait`]), [`Events`], [`Ready`],
//! [`Interest`] and [`Trigger`], and never a raw syscall.

#[cfg(target_os = "linux")]
mod epoll;
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
mod portable;
#[cfg(target_os = "linux")]
mod uring;
#[cfg(target_os = "linux")]
pub(crate) use uring::{Accepted, Received};

/// What [`Backend::receive`] found (no backend but io_uring receives by itself).
#[cfg(not(target_os = "linux"))]
pub(crate) enum Received {
    Nothing,
    Data,
    End,
    Failed(io::Error),
}

/// What [`Backend::accept`] found (no backend but io_uring accepts by itself).
#[cfg(not(target_os = "linux"))]
pub(crate) enum Accepted {
    Nothing,
    Socket(std::os::fd::OwnedFd),
    Failed(io::Error),
}

#[cfg(feature = "glib")]
pub(crate) mod glib;
pub(crate) mod signal;
mod waker;
pub(crate) use waker::Waker;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// The kernel interface a loop waits on (see [`EventLoop::backend`](crate::EventLoop::backend)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// `epoll` (Linux; the default there).
    Epoll,
    /// `io_uring` (Linux): one `io_uring_enter` per iteration both submits and waits.
    IoUring,
    /// The `polling` crate (other Unixes; on Linux with the `portable-backend` feature).
    Portable,
}

impl BackendKind {
    /// The backend a loop gets when nothing asks for another: epoll on Linux (the
    /// portable one with the `portable-backend` feature or on other Unixes).
    pub const DEFAULT: BackendKind =
        if cfg!(any(not(target_os = "linux"), feature = "portable-backend")) {
            BackendKind::Portable
        } else {
            BackendKind::Epoll
        };

    /// The name used in `OXLOOP_BACKEND` and in messages: `epoll`, `io_uring`, `portable`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Epoll => "epoll",
            BackendKind::IoUring => "io_uring",
            BackendKind::Portable => "portable",
        }
    }

    /// Parses a name as [`name`](Self::name) gives it (`io-uring` and `uring` too).
    pub fn from_name(name: &str) -> Option<BackendKind> {
        match name.trim().to_ascii_lowercase().as_str() {
            "epoll" => Some(BackendKind::Epoll),
            "io_uring" | "io-uring" | "uring" => Some(BackendKind::IoUring),
            "portable" | "polling" => Some(BackendKind::Portable),
            _ => None,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the backends, behind one interface.
#[derive(Debug)]
pub(crate) enum Backend {
    #[cfg(target_os = "linux")]
    Epoll(epoll::Backend),
    /// Boxed: the ring's state is large, and the loop reaches it through one pointer.
    #[cfg(target_os = "linux")]
    IoUring(Box<uring::Backend>),
    #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
    Portable(portable::Backend),
}

/// The report buffer of one backend; kept by the loop and reused every iteration.
pub(crate) enum Events {
    #[cfg(target_os = "linux")]
    Epoll(epoll::Events),
    #[cfg(target_os = "linux")]
    IoUring(uring::Events),
    #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
    Portable(portable::Events),
}

/// Calls `$body` with `$b` bound to whichever backend `$e` holds.
macro_rules! each_backend {
    ($e:expr, $b:ident => $body:expr) => {
        match $e {
            #[cfg(target_os = "linux")]
            Backend::Epoll($b) => $body,
            #[cfg(target_os = "linux")]
            Backend::IoUring($b) => $body,
            #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
            Backend::Portable($b) => $body,
        }
    };
}

impl Backend {
    /// A backend of `kind`, or the reason it cannot be had here.
    pub fn new(kind: BackendKind) -> io::Result<Backend> {
        match kind {
            #[cfg(target_os = "linux")]
            BackendKind::Epoll => Ok(Backend::Epoll(epoll::Backend::new()?)),
            #[cfg(target_os = "linux")]
            BackendKind::IoUring => Ok(Backend::IoUring(Box::new(uring::Backend::new()?))),
            #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
            BackendKind::Portable => Ok(Backend::Portable(portable::Backend::new()?)),
            #[allow(unreachable_patterns)]
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the {other} backend is not available in this build"),
            )),
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Epoll(_) => BackendKind::Epoll,
            #[cfg(target_os = "linux")]
            Backend::IoUring(_) => BackendKind::IoUring,
            #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
            Backend::Portable(_) => BackendKind::Portable,
        }
    }

    /// An empty report buffer for this backend.
    pub fn events(&self) -> Events {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Epoll(_) => Events::Epoll(epoll::Events::new()),
            #[cfg(target_os = "linux")]
            Backend::IoUring(_) => Events::IoUring(uring::Events::new()),
            #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
            Backend::Portable(_) => Events::Portable(portable::Events::new()),
        }
    }

    /// Starts watching `fd`.
    #[inline]
    pub fn add(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        each_backend!(self, b => b.add(fd, interest, mode))
    }

    /// Changes what `fd` is watched for (adding it if the kernel forgot it).
    #[inline]
    pub fn modify(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        each_backend!(self, b => b.modify(fd, interest, mode))
    }

    /// Stops watching `fd`; an fd already closed or not watched is not an error.
    #[inline]
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        each_backend!(self, b => b.delete(fd))
    }

    /// Stops reporting on `fd` for now (its watcher wants nothing). A stream the
    /// backend serves itself stays known, with what it received and queued; other fds
    /// are deleted.
    pub fn unwatch(&self, fd: RawFd) -> io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.unwatch(fd),
            _ => self.delete(fd),
        }
    }

    /// Whether the backend keeps state for `fd` while it is not watched (a stream it
    /// serves itself, reading paused): then only [`delete`](Self::delete) forgets it.
    #[inline]
    pub fn keeps_state(&self, fd: RawFd) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.keeps_state(fd),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Hands the kernel whatever the backend queued, without waiting, so that the
    /// backend's fd tells a host loop the truth. Returns whether reports wait already
    /// that the fd does not show (the host must not sleep).
    pub fn flush(&self) -> io::Result<bool> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.flush(),
            #[allow(unreachable_patterns)]
            _ => Ok(false),
        }
    }

    /// Accepts connections on listening socket `fd` (not yet added) through the
    /// backend itself ([`Backend::accept`]) where it can (io_uring). Returns false where
    /// it does not: the caller accepts on readiness.
    pub fn start_listener(&self, fd: RawFd) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.start_listener(fd),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Forgets a started listener before it is closed, closing the connections it
    /// accepted that nobody took.
    pub fn stop_listener(&self, fd: RawFd) {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.stop_listener(fd),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Takes the next connection accepted on a started listener, if its fd is below
    /// `fd_limit` (the process's fd limit now; else `EMFILE`).
    pub fn accept(&self, fd: RawFd, fd_limit: u64) -> Accepted {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.accept(fd, fd_limit),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = (fd, fd_limit);
                Accepted::Nothing
            }
        }
    }

    /// Serves stream socket `fd` (not yet added) through the backend's own reads and
    /// writes ([`Backend::receive`], [`Backend::send`]) where it has them (io_uring).
    /// Returns false where it does not: the caller reads and writes itself.
    pub fn start_stream(&self, fd: RawFd) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.start_stream(fd),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Takes the next buffer received on a started stream and passes it to `f`.
    pub fn receive(&self, fd: RawFd, f: impl FnOnce(&[u8])) -> Received {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.receive(fd, f),
            #[allow(unreachable_patterns)]
            _ => Received::Nothing,
        }
    }

    /// Queues bytes to send on a started stream; returns the bytes not yet sent.
    pub fn send(&self, fd: RawFd, data: &[u8]) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.send(fd, data),
            #[allow(unreachable_patterns)]
            _ => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }

    /// The bytes queued on a started stream and not yet sent, or the error that ended
    /// sending.
    pub fn backlog(&self, fd: RawFd) -> io::Result<usize> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::IoUring(b) => b.backlog(fd),
            #[allow(unreachable_patterns)]
            _ => Ok(0),
        }
    }
}

/// One backend's wait and report buffer as concrete types. A loop matches its
/// [`Backend`] and [`Events`] once per run (`with_backend!`) and then waits and walks
/// the reports of that backend directly, with no match per iteration or per report.
pub(crate) trait Wait {
    /// The buffer a wait fills.
    type Events;

    /// Blocks for at most `timeout` (`None`: until something happens), filling `events`.
    fn wait(&self, events: &mut Self::Events, timeout: Option<Duration>) -> io::Result<()>;

    /// The reports of the last wait.
    fn reports(events: &Self::Events) -> impl Iterator<Item = Ready> + '_;
}

#[cfg(target_os = "linux")]
impl Wait for epoll::Backend {
    type Events = epoll::Events;

    #[inline(always)]
    fn wait(&self, events: &mut epoll::Events, timeout: Option<Duration>) -> io::Result<()> {
        epoll::Backend::wait(self, events, timeout)
    }

    #[inline(always)]
    fn reports(events: &epoll::Events) -> impl Iterator<Item = Ready> + '_ {
        events.iter()
    }
}

#[cfg(target_os = "linux")]
impl Wait for uring::Backend {
    type Events = uring::Events;

    #[inline(always)]
    fn wait(&self, events: &mut uring::Events, timeout: Option<Duration>) -> io::Result<()> {
        uring::Backend::wait(self, events, timeout)
    }

    #[inline(always)]
    fn reports(events: &uring::Events) -> impl Iterator<Item = Ready> + '_ {
        events.iter()
    }
}

#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
impl Wait for portable::Backend {
    type Events = portable::Events;

    #[inline(always)]
    fn wait(&self, events: &mut portable::Events, timeout: Option<Duration>) -> io::Result<()> {
        portable::Backend::wait(self, events, timeout)
    }

    #[inline(always)]
    fn reports(events: &portable::Events) -> impl Iterator<Item = Ready> + '_ {
        events.iter()
    }
}

/// Evaluates `$body` with `$b` bound to the loop's backend and `$e` to its report
/// buffer, both as their concrete types ([`Wait`]): the body is compiled once per
/// backend, so a loop running it pays the match once, not once per iteration.
macro_rules! with_backend {
    ($backend:expr, $events:expr, |$b:ident, $e:ident| $body:expr) => {
        match ($backend, $events) {
            #[cfg(target_os = "linux")]
            ($crate::reactor::Backend::Epoll($b), $crate::reactor::Events::Epoll($e)) => $body,
            #[cfg(target_os = "linux")]
            ($crate::reactor::Backend::IoUring($b), $crate::reactor::Events::IoUring($e)) => {
                let $b = &**$b;
                $body
            }
            #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
            ($crate::reactor::Backend::Portable($b), $crate::reactor::Events::Portable($e)) => {
                $body
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("a report buffer is used with the backend that made it"),
        }
    };
}
pub(crate) use with_backend;

impl AsFd for Backend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        each_backend!(self, b => b.as_fd())
    }
}

impl AsRawFd for Backend {
    fn as_raw_fd(&self) -> RawFd {
        each_backend!(self, b => b.as_raw_fd())
    }
}

/// Which readiness a watcher wants to hear about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Wake when the fd is readable (or at end of file, hang-up or error).
    pub read: bool,
    /// Wake when the fd is writable (or on hang-up or error).
    pub write: bool,
}

impl Interest {
    /// Readable only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Writable only.
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
    /// Readable and writable.
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };
    /// Neither.
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };

    /// True when neither direction is wanted.
    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }
}

/// How the kernel reports readiness for a registered fd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Trigger {
    /// Reported on every poll while the fd stays ready (like `select`, asyncio, libuv).
    #[default]
    Level,
    /// Reported once per change from not-ready to ready.
    Edge,
    /// Reported once, then disabled until registered again.
    Oneshot,
}

/// One readiness report, in the backend-neutral form the loop dispatches.
///
/// The bits use epoll's layout (a fixed Linux ABI), so the Linux backend copies them
/// as they come and each handler tests only what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ready {
    pub fd: RawFd,
    bits: u32,
}

impl Ready {
    const IN: u32 = 0x001;
    const PRI: u32 = 0x002;
    const OUT: u32 = 0x004;
    const ERR: u32 = 0x008;
    const HUP: u32 = 0x010;
    const RDHUP: u32 = 0x2000;
    /// Not an epoll bit: "closed" without implying readable or writable (the portable
    /// backend's reports).
    const CLOSED: u32 = 1 << 27;
    /// Not an epoll bit: reported by the io_uring backend, whose streams' bytes wait in
    /// the loop (received through the ring), not in the socket. Keeps such a report off
    /// [`Ready::only_readable`]'s path, which reads the socket.
    const RING: u32 = 1 << 28;

    /// A report from epoll's event flags.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn from_epoll(fd: RawFd, flags: u32) -> Ready {
        Ready { fd, bits: flags }
    }

    /// A report of the io_uring backend, with epoll's bits for what it says.
    #[cfg(target_os = "linux")]
    pub fn from_ring(fd: RawFd, bits: u32) -> Ready {
        Ready {
            fd,
            bits: bits | Ready::RING,
        }
    }

    /// A report from its three facts.
    #[cfg_attr(
        all(target_os = "linux", not(feature = "portable-backend")),
        allow(dead_code)
    )]
    pub fn new(fd: RawFd, readable: bool, writable: bool, closed: bool) -> Ready {
        let mut bits = 0;
        if readable {
            bits |= Ready::IN;
        }
        if writable {
            bits |= Ready::OUT;
        }
        if closed {
            bits |= Ready::CLOSED;
        }
        Ready { fd, bits }
    }

    /// Readable, or at end of stream, hung up or in error (a read will not block).
    #[inline]
    pub fn readable(self) -> bool {
        self.bits & (Ready::IN | Ready::PRI | Ready::HUP | Ready::ERR | Ready::RDHUP) != 0
    }

    /// Readable and nothing else: plain data waiting in the socket, no writability,
    /// hang-up or error (the common report of a connection that is read from on a
    /// readiness backend; one test for `readable() && !writable()`). Never true of the
    /// io_uring backend's reports.
    #[inline]
    pub fn only_readable(self) -> bool {
        self.bits == Ready::IN
    }

    /// Writable, or hung up or in error (a write will not block).
    #[inline]
    pub fn writable(self) -> bool {
        self.bits & (Ready::OUT | Ready::HUP | Ready::ERR) != 0
    }

    /// The peer hung up or the fd has an error: no later edge will announce the end of
    /// the stream, so a short read must not be taken as "drained".
    #[inline]
    pub fn closed(self) -> bool {
        self.bits & (Ready::HUP | Ready::RDHUP | Ready::ERR | Ready::CLOSED) != 0
    }
}

/// Registers an owned fd with the current tokio runtime's reactor (for
/// `crate::source::tokio`).
#[cfg(feature = "tokio")]
pub(crate) fn tokio_async_fd(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the `AsyncFd` takes ownership of the `OwnedFd`, so the fd stays open and
    // refers to the same file description until the `AsyncFd` is dropped, and
    // `OwnedFd::as_raw_fd` always returns that same number.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    Ok(registered?)
}
