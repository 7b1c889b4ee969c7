//! The reactor: a thin layer over the operating system's readiness API.
//!
//! Everything that talks to the kernel about readiness lives here, one file per job:
//!
//! - [`epoll`](self) (Linux): `epoll` through `rustix`, level-triggered by default;
//! - `portable` (other Unixes): the `polling` crate (kqueue, event ports, poll);
//! - `waker`: an `eventfd` (or a socket pair) that wakes a sleeping poller from another
//!   thread or from a signal handler;
//! - `signal`: the process-wide `sigaction` plumbing that turns signals into wake-ups.
//!
//! The rest of the crate sees only [`Backend`], [`Events`], [`Ready`], [`Interest`] and
//! [`Trigger`], and never a raw syscall.

#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
mod epoll;
#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
pub(crate) use epoll::{Backend, Events};

// Other Unixes, and Linux with the `portable-backend` feature (so its tests run there).
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
mod portable;
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
pub(crate) use portable::{Backend, Events};

#[cfg(feature = "glib")]
pub(crate) mod glib;
pub(crate) mod signal;
mod waker;
pub(crate) use waker::Waker;

use std::os::fd::RawFd;

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

    /// A report from epoll's event flags.
    #[cfg_attr(
        any(not(target_os = "linux"), feature = "portable-backend"),
        allow(dead_code)
    )]
    pub fn from_epoll(fd: RawFd, flags: u32) -> Ready {
        Ready { fd, bits: flags }
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
