//! Event sources: one interface for everything that can wake the loop.
//!
//! An [`EventSource`] says what it waits for — some fds, each with an [`Interest`] and
//! a trigger [`Trigger`], and optionally a deadline — and the loop calls
//! [`EventSource::dispatch`] with what happened. The source answers with a
//! [`PostAction`]: keep going, register again, disable itself or go away.
//!
//! ```
//! use oxloop::source::LoopSourceExt;
//! use oxloop::source::{Event, EventSource, PostAction, Registration};
//! use oxloop::source::{Interest, Trigger};
//! use oxloop::EventLoop;
//! use std::io::Read;
//! use std::os::unix::net::UnixStream;
//!
//! /// Counts the bytes arriving on a socket until the peer hangs up.
//! struct Counter {
//!     socket: UnixStream,
//!     total: usize,
//! }
//!
//! impl EventSource for Counter {
//!     fn register(&mut self, reg: &mut Registration) -> std::io::Result<()> {
//!         reg.watch(&self.socket, Interest::READ, Trigger::Level);
//!         Ok(())
//!     }
//!
//!     fn dispatch(&mut self, _event: Event) -> PostAction {
//!         let mut buf = [0; 64];
//!         match self.socket.read(&mut buf) {
//!             Ok(0) | Err(_) => PostAction::Remove, // end of stream
//!             Ok(n) => {
//!                 self.total += n;
//!                 PostAction::Continue
//!             }
//!         }
//!     }
//! }
//!
//! let ev = EventLoop::new()?;
//! let (a, mut b) = UnixStream::pair()?;
//! let handle = ev.insert_source(Counter { socket: a, total: 0 })?;
//! std::io::Write::write_all(&mut b, b"hello")?;
//! drop(b);
//! ev.run()?; // returns once the source has removed itself
//! assert!(!handle.is_inserted());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Ready-made sources: [`channel`] (messages from other threads), [`Timer`], [`ping`]
//! (a wake-up from anywhere), [`Signal`], [`ChildExit`] (a child process ended; Linux),
//! [`Generic`]
//! (any fd with a callback) and [`Nested`] (a second oxloop loop, on its own thread,
//! stepped by this one). Behind cargo features: `calloop` (a calloop loop inside
//! oxloop), `glib` (a GLib main context inside oxloop, and oxloop inside GLib) and
//! `tokio` (oxloop inside a tokio runtime, and tokio-only futures awaited from oxloop).
//!
//! # How a source is driven
//!
//! Each fd of a source becomes an fd watcher of the loop (the same table
//! [`EventLoop::add_reader`] uses, but with the source's trigger mode), and its deadline
//! a loop timer. So a source costs nothing extra per iteration: a ready fd is one index
//! into the fd table, as for any watcher. While a source is inserted and enabled, it
//! keeps [`EventLoop::run`] going, unless [`SourceHandle::set_ref`] says otherwise.
//!
//! - An fd watched for reading and writing that becomes both at once is dispatched
//!   twice, once per direction (readers first).
//! - [`Trigger::Oneshot`]: the kernel disarms the fd after one report. Return
//!   [`PostAction::Reregister`] to arm it again.
//! - [`EventSource::deadline`] is asked again after every dispatch, and when
//!   [`SourceHandle::update`] is called (for a deadline changed from outside).
//! - An fd belongs to one source (or one `add_reader`/`add_writer` pair): registering it
//!   twice replaces the first callback.

mod channel;
mod child;
mod generic;
mod nested;
mod ping;
mod signal;
mod timer;

#[cfg(feature = "calloop")]
pub mod calloop;
#[cfg(feature = "glib")]
pub mod glib;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use channel::{channel, Channel, ChannelEvent, Sender};
#[cfg(target_os = "linux")]
pub use child::ChildExit;
pub use generic::Generic;
pub use nested::Nested;
pub use ping::{ping, Ping, PingSender};
pub use signal::Signal;
pub use timer::{TimeoutAction, Timer};

/// What a source's fd is watched for, and how the kernel reports it.
pub use crate::reactor::{Interest, Trigger};

use crate::event_loop::{Direction, Inner};
use crate::{EventLoop, Handle};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Instant;

/// Something the loop can wait for and dispatch.
pub trait EventSource: 'static {
    /// Declares the fds to watch (and how). Called when the source is inserted, when it
    /// asks to be registered again ([`PostAction::Reregister`]) and when it is enabled.
    fn register(&mut self, reg: &mut Registration) -> io::Result<()>;

    /// The instant at which the source wants a [`Event::Deadline`], if any. Asked after
    /// registering and after every dispatch. The default is none.
    fn deadline(&mut self) -> Option<Instant> {
        None
    }

    /// Handles one event; the answer says what the loop does with the source next.
    fn dispatch(&mut self, event: Event) -> PostAction;
}

/// What woke a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// One of the source's fds is ready (one direction per event).
    Io {
        /// The fd.
        fd: RawFd,
        /// It is readable (or at end of stream, hung up, in error).
        readable: bool,
        /// It is writable (or hung up, in error).
        writable: bool,
    },
    /// The instant returned by [`EventSource::deadline`] has passed.
    Deadline,
}

/// What a source wants after a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostAction {
    /// Keep everything as it is.
    Continue,
    /// Call [`EventSource::register`] again (a changed fd set, or to re-arm
    /// [`Trigger::Oneshot`] fds).
    Reregister,
    /// Stop watching until [`SourceHandle::enable`].
    Disable,
    /// Remove and drop the source.
    Remove,
}

/// One fd a source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    /// The fd.
    pub fd: RawFd,
    /// Which directions.
    pub interest: Interest,
    /// Level, edge or oneshot.
    pub mode: Trigger,
}

/// The fds a source asks for, filled in by [`EventSource::register`].
#[derive(Debug, Default)]
pub struct Registration {
    watches: Vec<Watch>,
}

impl Registration {
    /// Watch `fd` for `interest`, triggered as `mode` says. The source must keep the fd
    /// open while it is registered.
    pub fn watch(&mut self, fd: impl AsFd, interest: Interest, mode: Trigger) {
        self.watch_raw(fd.as_fd().as_raw_fd(), interest, mode);
    }

    /// [`watch`](Self::watch) for a raw fd number.
    pub fn watch_raw(&mut self, fd: RawFd, interest: Interest, mode: Trigger) {
        self.watches.push(Watch { fd, interest, mode });
    }

    /// The fds registered so far.
    pub fn watches(&self) -> &[Watch] {
        &self.watches
    }
}

/// The loop's record of one inserted source.
struct Slot<S> {
    /// `None` while the source is being dispatched or after it was removed.
    source: Option<S>,
    /// The fds currently given to the loop.
    watches: Vec<Watch>,
    /// The deadline timer, if one is set, and its instant.
    timer: Option<(Instant, Handle)>,
    enabled: bool,
    /// Whether the source keeps `run()` going.
    referenced: bool,
    removed: bool,
    /// Asked to be removed while it was being dispatched.
    remove_after_dispatch: bool,
}

/// A handle to an inserted source: disable, enable, update or remove it.
///
/// Dropping the handle leaves the source in the loop (it stays until it returns
/// [`PostAction::Remove`] or the loop is destroyed). Cloning is cheap.
pub struct SourceHandle<S: EventSource> {
    slot: Rc<RefCell<Slot<S>>>,
    owner: Weak<Inner>,
}

impl<S: EventSource> Clone for SourceHandle<S> {
    fn clone(&self) -> Self {
        SourceHandle {
            slot: self.slot.clone(),
            owner: self.owner.clone(),
        }
    }
}

impl<S: EventSource> fmt::Debug for SourceHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slot = self.slot.try_borrow();
        let mut d = f.debug_struct("SourceHandle");
        if let Ok(slot) = slot {
            d.field("enabled", &slot.enabled)
                .field("removed", &slot.removed)
                .field("watches", &slot.watches);
        }
        d.finish()
    }
}

/// Event-source methods for [`EventLoop`]. An extension trait, like every operation a
/// higher layer adds to the loop; import it with `use oxloop::source::LoopSourceExt;`.
pub trait LoopSourceExt {
    /// Inserts an event source: calls its [`EventSource::register`], watches its fds
    /// and sets its deadline. Fails (dropping the source) if an fd is refused.
    fn insert_source<S: EventSource>(&self, source: S) -> io::Result<SourceHandle<S>>;
}

impl LoopSourceExt for EventLoop {
    fn insert_source<S: EventSource>(&self, source: S) -> io::Result<SourceHandle<S>> {
        let handle = SourceHandle {
            slot: Rc::new(RefCell::new(Slot {
                source: Some(source),
                watches: Vec::new(),
                timer: None,
                enabled: true,
                referenced: true,
                removed: false,
                remove_after_dispatch: false,
            })),
            owner: self.downgrade(),
        };
        if let Err(e) = handle.arm(self) {
            let source = handle.take_removed(self);
            drop(source);
            return Err(e);
        }
        Ok(handle)
    }
}

impl<S: EventSource> SourceHandle<S> {
    fn event_loop(&self) -> Option<EventLoop> {
        EventLoop::upgrade(&self.owner)
    }

    /// Whether the source is still in its loop (it may be disabled).
    pub fn is_inserted(&self) -> bool {
        !self.slot.borrow().removed && self.event_loop().is_some_and(|ev| !ev.is_destroyed())
    }

    /// Whether the source is inserted and enabled.
    pub fn is_enabled(&self) -> bool {
        let slot = self.slot.borrow();
        !slot.removed && slot.enabled
    }

    /// Sets whether the source keeps [`EventLoop::run`] (and the tokio driver) going;
    /// the default is `true`. An unreferenced source still runs while the loop runs for
    /// other reasons, like a foreign loop riding along.
    pub fn set_ref(&self, referenced: bool) {
        let ev = self.event_loop();
        let slot = &mut *self.slot.borrow_mut();
        slot.referenced = referenced;
        if let Some(ev) = ev {
            for watch in &slot.watches {
                ev.set_fd_ref(watch.fd, referenced);
            }
        }
        if let Some((_, handle)) = &slot.timer {
            handle.set_ref(referenced);
        }
    }

    /// Stops watching the source's fds and deadline until [`enable`](Self::enable).
    pub fn disable(&self) {
        if let Some(ev) = self.event_loop() {
            self.disarm(&ev);
        }
        self.slot.borrow_mut().enabled = false;
    }

    /// Registers a disabled source again.
    pub fn enable(&self) -> io::Result<()> {
        let ev = self.event_loop().ok_or_else(gone)?;
        {
            let mut slot = self.slot.borrow_mut();
            if slot.removed {
                return Err(gone());
            }
            if slot.enabled {
                return Ok(());
            }
            slot.enabled = true;
        }
        self.arm(&ev)
    }

    /// Asks the source for its fds and deadline again (after they changed from
    /// outside a dispatch, e.g. a timer added to a foreign loop).
    pub fn update(&self) -> io::Result<()> {
        let ev = self.event_loop().ok_or_else(gone)?;
        if !self.is_enabled() {
            return Ok(());
        }
        self.disarm(&ev);
        self.arm(&ev)
    }

    /// Removes the source from its loop and hands it back. `None` when it was already
    /// removed, or when called from inside its own dispatch (it is then dropped as soon
    /// as the dispatch returns).
    pub fn remove(&self) -> Option<S> {
        match self.event_loop() {
            Some(ev) => self.take_removed(&ev),
            None => {
                let mut slot = self.slot.borrow_mut();
                slot.removed = true;
                slot.source.take()
            }
        }
    }

    /// Runs `f` with the source (for instance to reach a foreign loop it wraps).
    /// `None` while the source is being dispatched or after it was removed.
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        let mut source = self.slot.borrow_mut().source.take()?;
        let result = f(&mut source);
        let mut slot = self.slot.borrow_mut();
        if slot.removed {
            drop(slot);
            drop(source);
        } else {
            slot.source = Some(source);
        }
        Some(result)
    }

    fn take_removed(&self, ev: &EventLoop) -> Option<S> {
        self.disarm(ev);
        let mut slot = self.slot.borrow_mut();
        slot.removed = true;
        if slot.source.is_none() {
            slot.remove_after_dispatch = true;
        }
        slot.source.take()
    }

    /// Registers the source's fds and deadline with the loop.
    fn arm(&self, ev: &EventLoop) -> io::Result<()> {
        let mut reg = Registration::default();
        let deadline = {
            let mut slot = self.slot.borrow_mut();
            let Some(source) = slot.source.as_mut() else {
                return Ok(()); // being dispatched: its `PostAction` decides
            };
            source.register(&mut reg)?;
            source.deadline()
        };
        for watch in reg.watches.iter().copied() {
            for (wanted, dir) in [
                (watch.interest.read, Direction::Read),
                (watch.interest.write, Direction::Write),
            ] {
                if !wanted {
                    continue;
                }
                // The loop's callbacks own the source; removing it drops them.
                let this = self.clone();
                let result = ev.add_watcher(
                    watch.fd,
                    dir,
                    watch.mode,
                    Box::new(move || {
                        this.dispatch_now(Event::Io {
                            fd: watch.fd,
                            readable: dir == Direction::Read,
                            writable: dir == Direction::Write,
                        })
                    }),
                );
                if let Err(e) = result {
                    self.disarm(ev);
                    return Err(e);
                }
                if !self.slot.borrow().referenced {
                    ev.set_fd_ref(watch.fd, false);
                }
                self.slot.borrow_mut().watches.push(Watch {
                    fd: watch.fd,
                    interest: match dir {
                        Direction::Read => Interest::READ,
                        Direction::Write => Interest::WRITE,
                    },
                    mode: watch.mode,
                });
            }
        }
        self.set_deadline(ev, deadline);
        Ok(())
    }

    /// Sets (or clears) the deadline timer, leaving it alone when unchanged.
    fn set_deadline(&self, ev: &EventLoop, deadline: Option<Instant>) {
        let mut slot = self.slot.borrow_mut();
        if slot.timer.as_ref().map(|(when, _)| *when) == deadline {
            return;
        }
        let old = slot.timer.take();
        drop(slot);
        if let Some((_, handle)) = old {
            handle.cancel();
        }
        if let Some(when) = deadline {
            let this = self.clone();
            let handle = ev.call_at(when, move || {
                this.slot.borrow_mut().timer = None;
                this.dispatch_now(Event::Deadline);
            });
            let mut slot = self.slot.borrow_mut();
            if !slot.referenced {
                handle.set_ref(false);
            }
            slot.timer = Some((when, handle));
        }
    }

    /// Unregisters the fds and the deadline timer.
    fn disarm(&self, ev: &EventLoop) {
        let (watches, timer) = {
            let mut slot = self.slot.borrow_mut();
            (std::mem::take(&mut slot.watches), slot.timer.take())
        };
        for watch in watches {
            if watch.interest.read {
                ev.remove_reader(watch.fd);
            }
            if watch.interest.write {
                ev.remove_writer(watch.fd);
            }
        }
        if let Some((_, handle)) = timer {
            handle.cancel();
        }
    }

    /// Dispatches one event and carries out the source's answer.
    fn dispatch_now(&self, event: Event) {
        let Some(ev) = self.event_loop() else {
            return;
        };
        let Some(mut source) = self.slot.borrow_mut().source.take() else {
            return;
        };
        let action = source.dispatch(event);
        let removed = {
            let mut slot = self.slot.borrow_mut();
            if slot.remove_after_dispatch || slot.removed {
                true
            } else {
                slot.source = Some(source);
                false
            }
        };
        if removed {
            // Removed (or disabled and removed) from inside its own dispatch.
            drop(self.take_removed(&ev));
            return;
        }
        let result = match action {
            PostAction::Continue => {
                let deadline = self.slot.borrow_mut().source.as_mut().and_then(S::deadline);
                if self.slot.borrow().enabled {
                    self.set_deadline(&ev, deadline);
                }
                Ok(())
            }
            PostAction::Reregister => {
                self.disarm(&ev);
                if self.slot.borrow().enabled {
                    self.arm(&ev)
                } else {
                    Ok(())
                }
            }
            PostAction::Disable => {
                self.disable();
                Ok(())
            }
            PostAction::Remove => {
                drop(self.take_removed(&ev));
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(target: "oxloop", "an event source failed to register again and was removed: {e}");
            drop(self.take_removed(&ev));
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        "the event source was removed or its loop destroyed",
    )
}
