//! `Poller`: run a wire whenever an fd is readable.

use super::{report, IntoWire, Step, Wire, WireError};
use crate::task::JoinHandle;
use crate::EventLoop;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::ops::{Mul, Shr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A wire built from a map of fds to wires: whenever one of the fds is readable, its
/// wire runs (aiowire's `Poller`, zmq's `Poller.poll` loop).
///
/// ```
/// use oxloop::wire::{Call, Poller, WireLoop};
/// use oxloop::EventLoop;
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use std::rc::Rc;
///
/// let ev = EventLoop::new()?;
/// let (ours, mut theirs) = UnixStream::pair()?;
/// ours.set_nonblocking(true)?;
/// let ours = Rc::new(ours);
/// let poller = Poller::new();
/// let handle = poller.handle();
/// let sock = ours.clone();
/// let poller = poller.on(&*ours, Call(move || {
///     let mut buf = [0; 64];
///     let n = (&*sock).read(&mut buf).unwrap();
///     println!("read {:?}", String::from_utf8_lossy(&buf[..n]));
///     handle.stop(); // one message is enough
/// }))?;
/// theirs.write_all(b"hello")?;
/// let wires = WireLoop::new(&ev);
/// wires.start(poller);
/// wires.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Semantics
///
/// - **Level-triggered.** While an fd's wire (and the chain it hands on) runs, that fd
///   is not watched; when the chain is done the fd is watched again, and if it is
///   still readable its wire runs again at once. A wire that does not consume what is
///   readable therefore runs over and over (a busy loop), and one that reads only part
///   of it runs again for the rest. Data a wire has read into its own buffer is not
///   "readable" to the Poller: consume complete messages from the buffer in the same
///   run. At end of stream an fd stays readable forever, so a wire that sees EOF
///   should [`remove`](PollerHandle::remove) its fd (or stop the Poller).
/// - Wires of different fds run concurrently (each fd has its own task); one fd's wire
///   never overlaps with itself.
/// - The Poller watches duplicates of the fds it is given (`dup`, made by
///   [`on`](Poller::on)), so the originals may be any oxloop or std socket, pipe or
///   raw fd, also ones registered with [`Async`](crate::io::Async). Each wait adds a
///   level-triggered reader to the loop and removes it once the fd is readable (two
///   `epoll_ctl` calls per event). The duplicates close when the Poller is dropped;
///   until then they keep the underlying socket or pipe open.
/// - If an fd's wire fails (or the fd cannot be watched, e.g. a regular file), the
///   error goes to the loop's exception handler and that fd is dropped from this run
///   of the Poller; the other fds go on.
/// - A Poller runs once at a time: starting its wire again while it runs fails that
///   second run (the error goes to the exception handler). Run after run is fine
///   (`Forever(poller)`); fds removed stay removed.
/// - The Poller, as a wire, is done when it is [stopped](PollerHandle::stop) or when
///   no fd is left. Cancelling it (its start handle, a loop timeout) cancels the fd
///   wires that are running.
pub struct Poller {
    entries: Vec<Entry>,
    shared: Rc<Shared>,
}

#[derive(Clone)]
struct Entry {
    fd: Rc<OwnedFd>,
    wire: Wire,
    watch: Rc<Watch>,
}

/// One fd's readiness and removal, shared by its task, its reader callback and the
/// Poller's handle.
#[derive(Default)]
struct Watch {
    /// The fd the user gave (the handle looks fds up by it).
    original: Cell<RawFd>,
    removed: Cell<bool>,
    ready: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Watch {
    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

#[derive(Default)]
struct Shared {
    stopped: Cell<bool>,
    /// A run is in progress (a Poller runs once at a time: its fds' watch states are
    /// shared by all runs).
    running: Cell<bool>,
    waker: Cell<Option<Waker>>,
    watches: RefCell<Vec<Rc<Watch>>>,
}

impl Poller {
    /// A Poller watching nothing yet.
    pub fn new() -> Poller {
        Poller {
            entries: Vec::new(),
            shared: Rc::default(),
        }
    }

    /// Adds `fd` (anything with an fd: a socket, a pipe end, `&stdin()`…): `wire` runs
    /// whenever it is readable. Fails if the fd cannot be duplicated.
    pub fn on(mut self, fd: impl AsFd, wire: impl IntoWire) -> io::Result<Poller> {
        let original = fd.as_fd().as_raw_fd();
        let watch = Rc::new(Watch::default());
        watch.original.set(original);
        self.shared.watches.borrow_mut().push(watch.clone());
        self.entries.push(Entry {
            fd: Rc::new(fd.as_fd().try_clone_to_owned()?),
            wire: wire.into_wire(),
            watch,
        });
        Ok(self)
    }

    /// A handle that stops the Poller or removes fds from it, also while it runs (for
    /// example from one of its own wires).
    pub fn handle(&self) -> PollerHandle {
        PollerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Default for Poller {
    fn default() -> Poller {
        Poller::new()
    }
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fds: Vec<RawFd> = self.entries.iter().map(|e| e.fd.as_raw_fd()).collect();
        f.debug_struct("Poller").field("fds", &fds).finish()
    }
}

impl IntoWire for Poller {
    fn into_wire(self) -> Wire {
        let entries: Rc<[Entry]> = self.entries.into();
        let shared = self.shared;
        Wire::from_fn(move |ev| Box::pin(poll_all(ev, entries.clone(), shared.clone())))
    }
}

/// `poller >> next`: the Poller until it is done, then `next`.
impl<W: IntoWire> Shr<W> for Poller {
    type Output = Wire;

    fn shr(self, next: W) -> Wire {
        self.into_wire().then(next)
    }
}

/// `poller * n`: the Poller until it is done, `n` times in a row.
impl Mul<usize> for Poller {
    type Output = Wire;

    fn mul(self, times: usize) -> Wire {
        self.into_wire().repeat(times)
    }
}

/// Stops a [`Poller`] or removes fds from it. Cheap to clone.
#[derive(Clone)]
pub struct PollerHandle {
    shared: Rc<Shared>,
}

impl PollerHandle {
    /// Ends the Poller: its running fd wires are cancelled and, as a wire, it is done.
    /// Permanent: a stopped Poller started again is done at once.
    pub fn stop(&self) {
        self.shared.stopped.set(true);
        if let Some(waker) = self.shared.waker.take() {
            waker.wake();
        }
    }

    /// Whether [`stop`](PollerHandle::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.get()
    }

    /// Stops watching `fd` (the fd given to [`Poller::on`]). Its wire, if running, runs
    /// to the end of its chain first. Permanent. Returns whether the fd was watched.
    pub fn remove(&self, fd: impl AsFd) -> bool {
        let fd = fd.as_fd().as_raw_fd();
        let mut found = false;
        for watch in self.shared.watches.borrow().iter() {
            if watch.original.get() == fd && !watch.removed.replace(true) {
                watch.wake();
                found = true;
            }
        }
        found
    }
}

impl fmt::Debug for PollerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollerHandle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// The Poller's step: one task per fd, until stopped or no fd is left.
async fn poll_all(ev: EventLoop, entries: Rc<[Entry]>, shared: Rc<Shared>) -> Step {
    if shared.running.replace(true) {
        return Err(WireError::Failed("this Poller is already running".into()));
    }
    let _running = Running(&shared);
    let mut tasks = Tasks(
        entries
            .iter()
            .filter(|entry| !entry.watch.removed.get())
            .map(|entry| ev.spawn(watch(ev.clone(), entry.clone())))
            .collect(),
    );
    poll_fn(|cx| {
        if shared.stopped.get() {
            return Poll::Ready(());
        }
        shared.waker.set(Some(cx.waker().clone()));
        tasks
            .0
            .retain_mut(|task| Pin::new(task).poll(cx).is_pending());
        if tasks.0.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    Ok(None)
}

/// Clears the Poller's running mark when its run ends or is dropped.
struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.set(false);
    }
}

/// The fd tasks of a running Poller, aborted when it ends or is dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

/// One fd: wait until readable, run its wire to the end, repeat.
async fn watch(ev: EventLoop, entry: Entry) {
    loop {
        let readable = Readable {
            ev: ev.clone(),
            fd: entry.fd.as_raw_fd(),
            watch: entry.watch.clone(),
            armed: false,
        };
        match readable.await {
            Ok(true) => {}
            Ok(false) => return, // removed
            Err(e) => {
                report(&ev, &WireError::Failed(format!("cannot poll fd: {e}")));
                return;
            }
        }
        if let Err(error) = entry.wire.clone().run(&ev).await {
            report(&ev, &error);
            return;
        }
    }
}

/// Level-triggered readability of one fd, through a loop reader that is present only
/// while waiting. `Ok(false)` when the fd was removed from the Poller.
struct Readable {
    ev: EventLoop,
    fd: RawFd,
    watch: Rc<Watch>,
    armed: bool,
}

impl Readable {
    fn disarm(&mut self) {
        if std::mem::take(&mut self.armed) {
            self.ev.remove_reader(self.fd);
        }
    }
}

impl Future for Readable {
    type Output = io::Result<bool>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.watch.removed.get() {
            self.disarm();
            return Poll::Ready(Ok(false));
        }
        if self.armed && self.watch.ready.replace(false) {
            self.disarm();
            return Poll::Ready(Ok(true));
        }
        self.watch.waker.set(Some(cx.waker().clone()));
        if !self.armed {
            self.watch.ready.set(false);
            let watch = self.watch.clone();
            self.ev.add_reader(self.fd, move || {
                watch.ready.set(true);
                watch.wake();
            })?;
            self.armed = true;
        }
        Poll::Pending
    }
}

impl Drop for Readable {
    fn drop(&mut self) {
        self.disarm();
    }
}
