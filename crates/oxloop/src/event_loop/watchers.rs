//! The fd table: which callback runs when an fd becomes readable or writable, or which
//! handler learns about it.
//!
//! Indexed by fd number (like Redis's `ae.c`), so dispatching a readiness report is one
//! index. Two kinds of entry share the table:
//!
//! - callback watchers (`add_reader`/`add_writer`), level-triggered. A callback is taken
//!   out of its slot while it runs, so it may add, replace or remove watchers (its own
//!   included) without aliasing the table;
//! - handlers ([`FdHandler`]): one shared object per fd that gets every report for it.
//!   The loop clones the `Rc` out of the table and calls it, so the handler may change
//!   its own registration freely. The protocol layer's transports are handlers
//!   (level-triggered, interest changed as they need), and so are async sources
//!   (`crate::io::Async`: registered once, edge-triggered, both directions; a report
//!   sets the source's readiness flags and wakes the tasks waiting on it, and the
//!   source clears a flag when an operation would block).

use crate::reactor::{Backend, Interest, Ready, Trigger};
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

/// An object the loop calls for every readiness report of its fd.
pub(crate) trait FdHandler {
    /// The fd is ready as `ready` says. Runs outside the loop's borrow, so it may call
    /// any method of the loop, including changing or removing its own registration.
    fn on_ready(self: Rc<Self>, ready: Ready);

    /// The loop is being destroyed and is about to drop this handler: let go of what
    /// could keep the handler (and through it the loop) alive, such as a user's
    /// protocol holding its own transport.
    fn loop_destroyed(self: Rc<Self>) {}
}

/// Readiness of an fd owned by an async source, and the tasks waiting on it.
#[derive(Default)]
pub(crate) struct Readiness {
    /// A hang-up or error was reported: see `Ready::closed`.
    pub closed: Cell<bool>,
    pub readable: Cell<bool>,
    pub writable: Cell<bool>,
    pub read_waker: Cell<Option<Waker>>,
    pub write_waker: Cell<Option<Waker>>,
}

impl Readiness {
    /// Wakes the tasks waiting for the directions that just became ready. The wakers
    /// stay registered: a task polled again with the same waker then costs no clone
    /// (it may see a spurious wake-up if it stopped waiting meanwhile, which futures
    /// allow).
    fn wake(&self, readable: bool, writable: bool) {
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

impl FdHandler for Readiness {
    fn on_ready(self: Rc<Self>, ready: Ready) {
        if ready.closed() {
            self.closed.set(true);
        }
        if ready.readable() {
            self.readable.set(true);
        }
        if ready.writable() {
            self.writable.set(true);
        }
        self.wake(ready.readable(), ready.writable());
    }
}

#[derive(Default)]
struct FdEntry {
    reader: CallbackSlot,
    writer: CallbackSlot,
    handler: Option<Rc<dyn FdHandler>>,
    /// Whether the handler keeps `run()` going while it watches something.
    handler_counts: bool,
    /// What the backend currently watches this fd for.
    registered: Interest,
    /// How: level-triggered for `add_reader`/`add_writer`, any mode for handlers.
    mode: Trigger,
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

    /// Whether this fd counts as watched (keeps `run()` going unless unreferenced).
    fn counted(&self) -> bool {
        match self.handler {
            Some(_) => self.handler_counts && !self.registered.is_empty(),
            None => !self.wanted().is_empty(),
        }
    }
}

/// What a readiness report leads to, taken out of the table under the loop's borrow
/// and run after it is released.
pub(crate) enum Target {
    Nothing,
    Handler(Rc<dyn FdHandler>),
    /// The reader callback (the writer, if also ready, is looked up after it ran).
    Reader(FdCallback),
    Writer,
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
    /// Makes sure the backend watches `fd` for `dir`; the first step of adding a watcher,
    /// done before the callback is stored so that a refused fd leaves nothing behind.
    pub fn watch(
        &mut self,
        backend: &Backend,
        fd: RawFd,
        dir: Direction,
        mode: Trigger,
    ) -> io::Result<()> {
        let index = check_fd(fd)?;
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, FdEntry::default);
        }
        let entry = &mut self.entries[index];
        if entry.handler.is_some() {
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
            backend.add(fd, wanted, mode)?;
        } else {
            backend.modify(fd, wanted, mode)?;
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
        let before = entry.counted();
        let old = std::mem::replace(entry.side(dir), CallbackSlot::Idle(callback));
        self.recount(fd as usize, before);
        match old {
            CallbackSlot::Idle(old) => Some(old),
            _ => None,
        }
    }

    /// Keeps `watched` and `unreferenced` right after entry `index` changed; `before`
    /// is whether it counted before the change.
    fn recount(&mut self, index: usize, before: bool) {
        let entry = &mut self.entries[index];
        let after = entry.counted();
        if before == after {
            return;
        }
        if after {
            self.watched += 1;
            if entry.unreferenced {
                self.unreferenced += 1;
            }
        } else {
            self.watched -= 1;
            if entry.unreferenced {
                self.unreferenced -= 1;
            }
            entry.unreferenced = false;
        }
    }

    /// Removes the callback for one side of `fd`. Returns whether there was one and the
    /// callback itself (when it was not running) for the caller to drop.
    pub fn remove(
        &mut self,
        backend: &Backend,
        fd: RawFd,
        dir: Direction,
    ) -> (bool, Option<FdCallback>) {
        let Some(entry) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return (false, None);
        };
        if entry.handler.is_some() {
            return (false, None);
        }
        let before = entry.counted();
        let old = std::mem::take(entry.side(dir));
        let callback = match old {
            CallbackSlot::Empty => return (false, None),
            CallbackSlot::Idle(cb) => Some(cb),
            CallbackSlot::Running => None,
        };
        let wanted = entry.wanted();
        if wanted.is_empty() {
            // The fd may already be closed; the backend treats that as done.
            let _ = backend.delete(fd);
        } else {
            // Narrowing the interest cannot fail on a live fd; if the fd is gone the
            // kernel dropped it from the backend already.
            let _ = backend.modify(fd, wanted, entry.mode);
        }
        entry.registered = wanted;
        self.recount(fd as usize, before);
        (true, callback)
    }

    /// What a readiness report for `ready.fd` runs.
    #[inline]
    pub fn target(&mut self, ready: Ready) -> Target {
        let Some(entry) = self.entries.get_mut(ready.fd as usize) else {
            return Target::Nothing;
        };
        if let Some(handler) = &entry.handler {
            return Target::Handler(handler.clone());
        }
        if ready.readable() && matches!(entry.reader, CallbackSlot::Idle(_)) {
            if let CallbackSlot::Idle(cb) =
                std::mem::replace(&mut entry.reader, CallbackSlot::Running)
            {
                return Target::Reader(cb);
            }
        }
        if ready.writable() && entry.writer.is_set() {
            return Target::Writer;
        }
        Target::Nothing
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

    /// Makes `handler` receive every report for `fd`, watched for `interest` in `mode`.
    /// `counts`: whether it keeps `run()` going while its interest is not empty.
    pub fn add_handler(
        &mut self,
        backend: &Backend,
        fd: RawFd,
        handler: Rc<dyn FdHandler>,
        interest: Interest,
        mode: Trigger,
        counts: bool,
    ) -> io::Result<()> {
        let index = check_fd(fd)?;
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, FdEntry::default);
        }
        let entry = &mut self.entries[index];
        if entry.handler.is_some() || !entry.wanted().is_empty() {
            return Err(in_use(fd));
        }
        if !interest.is_empty() {
            if entry.registered.is_empty() {
                backend.add(fd, interest, mode)?;
            } else {
                backend.modify(fd, interest, mode)?;
            }
        } else if !entry.registered.is_empty() {
            let _ = backend.delete(fd);
        }
        let before = entry.counted();
        entry.registered = interest;
        entry.mode = mode;
        entry.handler = Some(handler);
        entry.handler_counts = counts;
        self.recount(index, before);
        Ok(())
    }

    /// Changes what a handler's fd is watched for. An empty interest takes the fd out
    /// of the backend (a hang-up would otherwise be reported forever).
    pub fn set_interest(
        &mut self,
        backend: &Backend,
        fd: RawFd,
        interest: Interest,
    ) -> io::Result<()> {
        let Some(entry) = self.entries.get_mut(fd as usize) else {
            return Err(in_use(fd));
        };
        if entry.handler.is_none() {
            return Err(in_use(fd));
        }
        if entry.registered == interest {
            return Ok(());
        }
        if interest.is_empty() {
            let _ = backend.unwatch(fd);
        } else if entry.registered.is_empty() {
            backend.add(fd, interest, entry.mode)?;
        } else {
            backend.modify(fd, interest, entry.mode)?;
        }
        let before = entry.counted();
        entry.registered = interest;
        self.recount(fd as usize, before);
        Ok(())
    }

    /// Takes `fd`'s handler out of the table and the backend; handed back to be
    /// dropped outside the loop's borrow.
    pub fn remove_handler(&mut self, backend: &Backend, fd: RawFd) -> Option<Rc<dyn FdHandler>> {
        let entry = self.entries.get_mut(usize::try_from(fd).ok()?)?;
        entry.handler.as_ref()?;
        let before = entry.counted();
        // A stream the backend serves keeps its state while not watched (its receive
        // cancelled, a send perhaps still in the kernel): it must go too, before the
        // fd is closed and its number reused.
        if !entry.registered.is_empty() || backend.keeps_state(fd) {
            let _ = backend.delete(fd);
        }
        entry.registered = Interest::NONE;
        let handler = entry.handler.take();
        self.recount(fd as usize, before);
        handler
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
        if !entry.counted() {
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

    /// Removes every watcher, deregistering it, and hands back the callbacks and
    /// handlers to drop.
    pub fn take_all(&mut self, backend: &Backend) -> (Vec<FdCallback>, Vec<Rc<dyn FdHandler>>) {
        let mut dropped = Vec::new();
        let mut handlers = Vec::new();
        for (fd, entry) in self.entries.iter_mut().enumerate() {
            handlers.extend(entry.handler.take());
            if !entry.registered.is_empty() || backend.keeps_state(fd as RawFd) {
                let _ = backend.delete(fd as RawFd);
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
        (dropped, handlers)
    }
}
