//! Portable backend for Unixes other than Linux: the `polling` crate (kqueue, event
//! ports or poll underneath), used in level-triggered mode.

use super::{Interest, Ready, Trigger};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// A `polling` poller.
#[derive(Debug)]
pub(crate) struct Backend {
    poller: polling::Poller,
}

/// The buffer a wait fills; kept by the loop and reused every iteration.
pub(crate) struct Events {
    list: polling::Events,
    /// The last wait's reports, converted once.
    reports: Vec<Ready>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            list: polling::Events::new(),
            reports: Vec::new(),
        }
    }

    /// The reports of the last wait.
    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, Ready>> {
        self.reports.iter().copied()
    }
}

fn event(fd: RawFd, interest: Interest) -> polling::Event {
    polling::Event::new(fd as usize, interest.read, interest.write)
}

fn mode(mode: Trigger) -> polling::PollMode {
    match mode {
        Trigger::Level => polling::PollMode::Level,
        Trigger::Edge => polling::PollMode::Edge,
        Trigger::Oneshot => polling::PollMode::Oneshot,
    }
}

impl Backend {
    pub fn new() -> io::Result<Backend> {
        Ok(Backend {
            poller: polling::Poller::new()?,
        })
    }

    pub fn add(&self, fd: RawFd, interest: Interest, m: Trigger) -> io::Result<()> {
        // SAFETY: the loop deletes an fd from the poller before it forgets the watcher, and
        // an fd closed behind its back is answered with an error by the kernel, not UB.
        unsafe { self.poller.add_with_mode(fd, event(fd, interest), mode(m)) }
    }

    pub fn modify(&self, fd: RawFd, interest: Interest, m: Trigger) -> io::Result<()> {
        // SAFETY: see `borrow` in the Linux backend: the borrow lasts one call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match self
            .poller
            .modify_with_mode(borrowed, event(fd, interest), mode(m))
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.add(fd, interest, m),
            other => other,
        }
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: see `borrow` in the Linux backend: the borrow lasts one call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match self.poller.delete(borrowed) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
            other => other,
        }
    }

    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.list.clear();
        events.reports.clear();
        match self.poller.wait(&mut events.list, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // `polling` does not report hang-ups; assume the worst so short reads are not
        // trusted.
        events.reports.extend(
            events
                .list
                .iter()
                .map(|ev| Ready::new(ev.key as RawFd, ev.readable, ev.writable, true)),
        );
        Ok(())
    }
}

impl AsFd for Backend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }
}

impl AsRawFd for Backend {
    fn as_raw_fd(&self) -> RawFd {
        self.poller.as_raw_fd()
    }
}
