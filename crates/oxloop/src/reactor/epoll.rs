//! Linux backend: `epoll` through `rustix` (direct system calls, no libc wrapper).
//!
//! The fd number itself is the epoll user data, so a report maps back to its watcher
//! with one index into the loop's fd table.

use super::{Interest, Ready, Trigger};
use rustix::buffer::spare_capacity;
use rustix::event::{epoll, Timespec};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// How many reports one `epoll_wait` can return at first; doubled whenever a wait fills it.
const INITIAL_EVENTS: usize = 256;

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Backend {
    epoll: OwnedFd,
}

/// The buffer `epoll_wait` fills; kept by the loop and reused every iteration.
pub(crate) struct Events {
    list: Vec<epoll::Event>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            list: Vec::with_capacity(INITIAL_EVENTS),
        }
    }

    /// The reports of the last wait.
    #[inline]
    pub fn iter(&self) -> EventsIter<'_> {
        self.list.iter().map(report)
    }
}

/// The reports of one `epoll_wait`.
pub(crate) type EventsIter<'a> =
    std::iter::Map<std::slice::Iter<'a, epoll::Event>, fn(&epoll::Event) -> Ready>;

#[inline]
fn report(ev: &epoll::Event) -> Ready {
    let flags = ev.flags; // a copy: the kernel's struct is packed
    Ready::from_epoll(ev.data.u64() as RawFd, flags.bits())
}

fn flags(interest: Interest, mode: Trigger) -> epoll::EventFlags {
    use epoll::EventFlags as F;
    let mut flags = F::empty();
    if interest.read {
        flags |= F::IN | F::RDHUP;
    }
    if interest.write {
        flags |= F::OUT;
    }
    match mode {
        Trigger::Level => {}
        Trigger::Edge => flags |= F::ET,
        Trigger::Oneshot => flags |= F::ONESHOT,
    }
    flags
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the borrowed fd is only handed to one epoll_ctl call and never outlives it.
    // If the number is not an open fd the kernel answers EBADF, which is returned as an
    // error; no memory is touched through it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Backend {
    pub fn new() -> io::Result<Backend> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Backend { epoll })
    }

    /// Starts watching `fd`.
    pub fn add(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        let data = epoll::EventData::new_u64(fd as u64);
        epoll::add(&self.epoll, borrow(fd), data, flags(interest, mode))?;
        Ok(())
    }

    /// Changes what `fd` is watched for. An fd the kernel forgot (it was closed and its
    /// number reused) is added again.
    pub fn modify(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        let data = epoll::EventData::new_u64(fd as u64);
        match epoll::modify(&self.epoll, borrow(fd), data, flags(interest, mode)) {
            Err(Errno::NOENT) => self.add(fd, interest, mode),
            other => Ok(other?),
        }
    }

    /// Stops watching `fd`. An fd that is already closed is not an error.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        match epoll::delete(&self.epoll, borrow(fd)) {
            Err(Errno::BADF) | Err(Errno::NOENT) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Waits for readiness for at most `timeout` (`None`: until something happens).
    /// An interrupted wait (a signal arrived) returns with no reports.
    #[inline]
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.list.clear();
        let timespec = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        let n = match epoll::wait(
            &self.epoll,
            spare_capacity(&mut events.list),
            timespec.as_ref(),
        ) {
            Ok(n) => n,
            Err(Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if n == events.list.capacity() {
            // A full buffer: there may be more waiting. Grow so the next wait sees them
            // all. (Never by nothing: the optimiser then tests for an empty buffer
            // first, a test per wait.)
            events.list.reserve(n.max(INITIAL_EVENTS));
        }
        Ok(())
    }
}

impl AsFd for Backend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

impl AsRawFd for Backend {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A wait that fills the report buffer doubles it, so the next wait reports every
    /// ready fd at once.
    #[test]
    fn a_full_report_buffer_grows() {
        let backend = Backend::new().unwrap();
        let mut events = Events::new();
        let count = INITIAL_EVENTS + 44;
        let mut pairs = Vec::new();
        for _ in 0..count {
            let (a, mut b) = UnixStream::pair().unwrap();
            std::io::Write::write_all(&mut b, b"x").unwrap();
            backend
                .add(a.as_raw_fd(), Interest::READ, Trigger::Level)
                .unwrap();
            pairs.push((a, b));
        }
        backend.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), INITIAL_EVENTS);
        assert!(events.list.capacity() >= 2 * INITIAL_EVENTS);
        backend.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), count);
    }
}
