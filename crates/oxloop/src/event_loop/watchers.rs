//! The fd table: which callback runs when an fd becomes readable or writable, or which
//! async source learns about it.
//!
//! Indexed by fd number (like Redis's `ae.c`), so dispatching a readiness report is one
//! index. Two kinds of entry share the table:
//!
//! - callback watchers (`add_reader`/`add_writer`), level-triggered. A callback is taken
//!   out of its slot while it runs, so it may add, replace or remove watchers (its own
//!   included) without aliasing the table;
//! - async sources (`crate::io::Async`), registered once, edge-triggered, for both
//!   directions. A report sets the source's readiness flags and hands back the wakers
//!   of the tasks waiting on it; the source clears a flag when an operation would block.

use crate::reactor::{Interest, Mode, Poller, Ready};
use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;

/// A callback run every time its fd is ready.
pub(crate) type FdCallback = Box<dyn FnMut() + 'static>;

/// Which side of an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

#[derive(Default)]
enum CallbackSlot {
    #[default]
    Empty,
    Idle(FdCallback),
    /// Taken out to run; put back afterwards unless removed or replaced meanwhile.
    Running,
}

impl CallbackSlot {
    fn is_set(&self) -> bool {
        !matches!(self, CallbackSlot::Empty)
    }
}

/// Readiness of an fd owned by an async source, and the tasks waiting on it.
#[derive(Default)]
pub(crate) struct IoSource {
    /// A hang-up or error was reported: see `Ready::closed`.
    pub closed: Cell<bool>,
    pub readable: Cell<bool>,
    pub writable: Cell<bool>,
    pub read_waker: Cell<Option<Waker>>,
    pub write_waker: Cell<Option<Waker>>,
}

impl IoSource {
    /// Wakes the tasks waiting for the directions that just became ready. The wakers
    /// stay registered: a task polled again with the same waker then costs no clone
    /// (it may see a spurious wake-up if it stopped waiting meanwhile, which futures
    /// allow).
    pub fn wake(&self, readable: bool, writable: bool) {
        fn wake_slot(slot: &Cell<Option<Waker>>) {
            if let Some(waker) = slot.take() {
                waker.wake_by_ref();
                // Waking only queues the task, so nothing replaced the waker meanwhile;
                // keep the newer one if something did.
                let newer = slot.take();
                slot.set(Some(newer.unwrap_or(waker)));
            }
        }
        if readable {
            wake_slot(&self.read_waker);
        }
        if writable {
            wake_slot(&self.write_waker);
        }
    }
}

#[derive(Default)]
struct FdEntry {
    reader: CallbackSlot,
    writer: CallbackSlot,
    source: Option<Rc<IoSource>>,
    /// What the poller currently watches this fd for.
    registered: Interest,
    /// How: level-triggered for `add_reader`/`add_writer`, any mode for event sources.
    mode: Mode,
    unreferenced: bool,
}

impl FdEntry {
    fn side(&mut self, dir: Direction) -> &mut CallbackSlot {
        match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }

    fn wanted(&self) -> Interest {
        Interest {
            read: self.reader.is_set(),
            write: self.writer.is_set(),
        }
    }
}

/// Every fd watched by one loop.
#[derive(Default)]
pub(crate) struct Watchers {
    entries: Vec<FdEntry>,
    /// fds with at least one callback.
    watched: usize,
    /// Of those, the ones marked as not keeping `run()` going.
    unreferenced: usize,
}

fn in_use(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("fd {fd} is already watched by the loop in another way"),
    )
}

fn check_fd(fd: RawFd) -> io::Result<usize> {
    usize::try_from(fd).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{fd} is not a file descriptor"),
        )
    })
}

impl Watchers {
    /// Makes sure the poller watches `fd` for `dir`; the first step of adding a watcher,
    /// done before the callback is stored so that a refused fd leaves nothing behind.
    pub fn register(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        dir: Direction,
        mode: Mode,
    ) -> io::Result<()> {
        let index = check_fd(fd)?;
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, FdEntry::default);
        }
        let entry = &mut self.entries[index];
        if entry.source.is_some() {
            return Err(in_use(fd));
        }
        let mut wanted = entry.wanted();
        match dir {
            Direction::Read => wanted.read = true,
            Direction::Write => wanted.write = true,
        }
        // Always tell the kernel, even when the interest looks unchanged: the fd may have
        // been closed and its number reused behind the loop's back, and then the kernel
        // no longer knows it (`modify` falls back to adding it).
        if entry.registered.is_empty() {
            poller.add(fd, wanted, mode)?;
        } else {
            poller.modify(fd, wanted, mode)?;
        }
        entry.registered = wanted;
        entry.mode = mode;
        Ok(())
    }

    /// Stores `callback` for one side of a registered `fd`, replacing any previous one,
    /// which is handed back to be dropped by the caller outside the loop's borrow.
    pub fn install(
        &mut self,
        fd: RawFd,
        dir: Direction,
        callback: FdCallback,
    ) -> Option<FdCallback> {
        let entry = &mut self.entries[fd as usize];
        if entry.wanted().is_empty() {
            self.watched += 1;
            if entry.unreferenced {
                self.unreferenced += 1;
            }
        }
        match std::mem::replace(entry.side(dir), CallbackSlot::Idle(callback)) {
            CallbackSlot::Idle(old) => Some(old),
            _ => None,
        }
    }

    /// Removes the callback for one side of `fd`. Returns whether there was one and the
    /// callback itself (when it was not running) for the caller to drop.
    pub fn remove(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        dir: Direction,
    ) -> (bool, Option<FdCallback>) {
        let Some(entry) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return (false, None);
        };
        let old = std::mem::take(entry.side(dir));
        let callback = match old {
            CallbackSlot::Empty => return (false, None),
            CallbackSlot::Idle(cb) => Some(cb),
            CallbackSlot::Running => None,
        };
        let wanted = entry.wanted();
        if wanted.is_empty() {
            // The fd may already be closed; the poller treats that as done.
            let _ = poller.delete(fd);
            self.watched -= 1;
            if entry.unreferenced {
                self.unreferenced -= 1;
            }
            entry.unreferenced = false;
        } else {
            // Narrowing the interest cannot fail on a live fd; if the fd is gone the
            // kernel dropped it from the poller already.
            let _ = poller.modify(fd, wanted, entry.mode);
        }
        entry.registered = wanted;
        (true, callback)
    }

    /// Takes the callback of one side of `fd` out to run it.
    pub fn begin(&mut self, fd: RawFd, dir: Direction) -> Option<FdCallback> {
        let entry = self.entries.get_mut(usize::try_from(fd).ok()?)?;
        let slot = entry.side(dir);
        match std::mem::replace(slot, CallbackSlot::Running) {
            CallbackSlot::Idle(cb) => Some(cb),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Puts a callback back after it ran. If it was removed or replaced while running it
    /// is handed back to be dropped.
    pub fn end(&mut self, fd: RawFd, dir: Direction, callback: FdCallback) -> Option<FdCallback> {
        let Some(entry) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return Some(callback);
        };
        let slot = entry.side(dir);
        if matches!(slot, CallbackSlot::Running) {
            *slot = CallbackSlot::Idle(callback);
            None
        } else {
            Some(callback)
        }
    }

    /// Registers `fd` as an async source (edge-triggered, both directions).
    pub fn add_source(&mut self, poller: &Poller, fd: RawFd) -> io::Result<Rc<IoSource>> {
        let index = check_fd(fd)?;
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, FdEntry::default);
        }
        let entry = &mut self.entries[index];
        if entry.source.is_some() || !entry.wanted().is_empty() {
            return Err(in_use(fd));
        }
        if entry.registered.is_empty() {
            poller.add(fd, Interest::BOTH, Mode::Edge)?;
        } else {
            poller.modify(fd, Interest::BOTH, Mode::Edge)?;
        }
        entry.registered = Interest::BOTH;
        // Optimistic: the first operation tries the syscall; a would-block clears it.
        let source = Rc::new(IoSource {
            readable: Cell::new(true),
            writable: Cell::new(true),
            ..IoSource::default()
        });
        entry.source = Some(source.clone());
        Ok(source)
    }

    /// Deregisters an async source; its waiting tasks are handed back to be woken.
    pub fn remove_source(&mut self, poller: &Poller, fd: RawFd) -> [Option<Waker>; 2] {
        let Some(entry) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return [None, None];
        };
        let Some(source) = entry.source.take() else {
            return [None, None];
        };
        let _ = poller.delete(fd);
        entry.registered = Interest::NONE;
        [source.read_waker.take(), source.write_waker.take()]
    }

    /// Records a readiness report for an async source. `None` when `fd` is not one;
    /// otherwise the source, whose waiting tasks the caller wakes with
    /// [`IoSource::wake`] after the loop's borrow is released.
    pub fn source_ready(&mut self, ready: Ready) -> Option<Rc<IoSource>> {
        let Ready {
            fd,
            readable,
            writable,
            closed,
        } = ready;
        let source = self
            .entries
            .get(usize::try_from(fd).ok()?)?
            .source
            .as_ref()?;
        if closed {
            source.closed.set(true);
        }
        if readable {
            source.readable.set(true);
        }
        if writable {
            source.writable.set(true);
        }
        Some(source.clone())
    }

    /// Marks whether `fd`'s watchers keep `run()` going. Returns false when `fd` is not
    /// watched.
    pub fn set_referenced(&mut self, fd: RawFd, referenced: bool) -> bool {
        let Some(entry) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return false;
        };
        if entry.wanted().is_empty() {
            return false;
        }
        if entry.unreferenced == referenced {
            entry.unreferenced = !referenced;
            if referenced {
                self.unreferenced -= 1;
            } else {
                self.unreferenced += 1;
            }
        }
        true
    }

    /// fds with a callback.
    pub fn len(&self) -> usize {
        self.watched
    }

    /// fds whose watchers keep `run()` going.
    pub fn referenced(&self) -> usize {
        self.watched - self.unreferenced
    }

    /// Removes every watcher, deregistering it, and hands back the callbacks to drop.
    pub fn take_all(&mut self, poller: &Poller) -> Vec<FdCallback> {
        let mut dropped = Vec::new();
        for (fd, entry) in self.entries.iter_mut().enumerate() {
            entry.source = None;
            if !entry.registered.is_empty() {
                let _ = poller.delete(fd as RawFd);
            }
            for slot in [&mut entry.reader, &mut entry.writer] {
                if let CallbackSlot::Idle(cb) = std::mem::take(slot) {
                    dropped.push(cb);
                }
            }
        }
        self.entries = Vec::new();
        self.watched = 0;
        self.unreferenced = 0;
        dropped
    }
}
