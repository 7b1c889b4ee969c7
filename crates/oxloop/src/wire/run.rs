//! Starting wires, cancelling them one by one or all at once, and running the loop
//! until they are done.
//!
//! Every wire started on a thread is recorded in a thread-local registry (one loop per
//! thread, so this is the loop's registry). A wire's task leaves the registry when it
//! is dropped, whichever way it ends, which is what lets [`WireLoop::run`] wait for
//! "all wires finished" and cancel them all when its timeout expires.

use super::{report, IntoWire, WireError};
use crate::task::{JoinError, JoinHandle};
use crate::EventLoop;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

#[derive(Default)]
struct Registry {
    /// The running wires' cancel flags.
    wires: Slab<Rc<Cancel>>,
    /// Tasks waiting for `wires` to become empty.
    idle: Vec<Waker>,
}

/// A request to stop one wire, seen by its task at its next poll.
#[derive(Default)]
struct Cancel {
    requested: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Cancel {
    fn request(&self) {
        self.requested.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The task of a started wire: runs its chain unless cancelled, and leaves the
/// registry when dropped (finished, cancelled, aborted, panicked or destroyed).
struct Tracked {
    chain: Pin<Box<dyn Future<Output = Result<(), WireError>>>>,
    cancel: Rc<Cancel>,
    key: usize,
}

impl Future for Tracked {
    type Output = Result<(), WireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.cancel.requested.get() {
            return Poll::Ready(Err(WireError::Cancelled));
        }
        let waker = match self.cancel.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        self.cancel.waker.set(Some(waker));
        self.chain.as_mut().poll(cx)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let waiters = REGISTRY.try_with(|registry| {
            let mut registry = registry.borrow_mut();
            registry.wires.try_remove(self.key);
            if registry.wires.is_empty() {
                std::mem::take(&mut registry.idle)
            } else {
                Vec::new()
            }
        });
        waiters
            .unwrap_or_default()
            .into_iter()
            .for_each(Waker::wake);
    }
}

/// Wire methods for [`EventLoop`]. An extension trait, like every operation a higher
/// layer adds to the loop; import it with `use oxloop::wire::LoopWireExt;`.
pub trait LoopWireExt {
    /// Starts `wire` (and the chain of wires it hands on) as a task on this loop, first
    /// run in the next iteration. The handle cancels it; dropping the handle lets it
    /// run on. See [`crate::wire`].
    fn start_wire(&self, wire: impl IntoWire) -> WireHandle;
}

impl LoopWireExt for EventLoop {
    fn start_wire(&self, wire: impl IntoWire) -> WireHandle {
        let wire = wire.into_wire();
        let cancel = Rc::new(Cancel::default());
        let key = REGISTRY.with(|r| r.borrow_mut().wires.insert(cancel.clone()));
        let ev = self.clone();
        let chain = Box::pin(async move {
            let outcome = wire.run(&ev).await;
            if let Err(error) = &outcome {
                report(&ev, error);
            }
            outcome
        });
        WireHandle {
            join: self.spawn(Tracked { chain, cancel, key }),
        }
    }
}

/// A started wire. Await it for the chain's outcome; [`cancel`](WireHandle::cancel)
/// stops it. Dropping the handle does not stop the wire.
pub struct WireHandle {
    join: JoinHandle<Result<(), WireError>>,
}

impl WireHandle {
    /// Cancels the wire: its current step is dropped now (with everything it holds) and
    /// the handle resolves to [`WireError::Cancelled`]. Does nothing to a finished wire.
    pub fn cancel(&self) {
        self.join.abort();
    }

    /// Whether the chain has ended (done, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl Future for WireHandle {
    type Output = Result<(), WireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join)
            .poll(cx)
            .map(|joined| match joined {
                Ok(outcome) => outcome,
                Err(JoinError::Cancelled) => Err(WireError::Cancelled),
                Err(JoinError::Panicked(msg)) => Err(WireError::Panicked(msg)),
            })
    }
}

impl fmt::Debug for WireHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Runs a loop until all its wires have finished, optionally under a loop-wide
/// timeout (aiowire's `EventLoop(timeout=…)`).
///
/// ```
/// use oxloop::wire::{Forever, Call, RunError, WireLoop};
/// use oxloop::{task, EventLoop};
/// use std::time::Duration;
///
/// let ev = EventLoop::new()?;
/// let wires = WireLoop::new(&ev).timeout(Duration::from_millis(20));
/// wires.start(Forever(Call(|| task::sleep(Duration::from_millis(1)))));
/// assert!(matches!(wires.run(), Err(RunError::TimedOut(_))));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct WireLoop {
    ev: EventLoop,
    timeout: Option<Duration>,
}

impl WireLoop {
    /// Runs the wires of `ev`, without a timeout.
    pub fn new(ev: &EventLoop) -> WireLoop {
        WireLoop {
            ev: ev.clone(),
            timeout: None,
        }
    }

    /// Cancels every wire still running `timeout` after [`run`](WireLoop::run) starts.
    pub fn timeout(mut self, timeout: Duration) -> WireLoop {
        self.timeout = Some(timeout);
        self
    }

    /// Starts a wire on the loop (the same as [`EventLoop::start`]).
    pub fn start(&self, wire: impl IntoWire) -> WireHandle {
        self.ev.start_wire(wire)
    }

    /// Runs the loop until every wire started on it has finished (wires started while
    /// it runs included): `Ok(())`. When the timeout expires first, every running wire
    /// is cancelled (its step and what it holds are dropped before this returns) and
    /// the result is [`RunError::TimedOut`]. Other tasks and callbacks of the loop run
    /// meanwhile but are not waited for.
    pub fn run(&self) -> Result<(), RunError> {
        let timeout = self.timeout;
        self.ev.block_on(async move {
            let Some(limit) = timeout else {
                all_finished().await;
                return Ok(());
            };
            match crate::task::timeout(limit, all_finished()).await {
                Ok(()) => Ok(()),
                Err(_) => {
                    cancel_all().await;
                    Err(RunError::TimedOut(limit))
                }
            }
        })?
    }
}

/// Completes once no wire is running on this thread.
fn all_finished() -> impl Future<Output = ()> {
    poll_fn(poll_all_finished)
}

fn poll_all_finished(cx: &mut Context<'_>) -> Poll<()> {
    REGISTRY.with(|registry| {
        let mut registry = registry.borrow_mut();
        if registry.wires.is_empty() {
            Poll::Ready(())
        } else {
            if !registry.idle.iter().any(|w| w.will_wake(cx.waker())) {
                registry.idle.push(cx.waker().clone());
            }
            Poll::Pending
        }
    })
}

/// Cancels every running wire and completes once all are gone. Wires started while
/// this waits (say, from a `Drop`) are cancelled too.
fn cancel_all() -> impl Future<Output = ()> {
    poll_fn(|cx| {
        let wires: Vec<Rc<Cancel>> =
            REGISTRY.with(|r| r.borrow().wires.iter().map(|(_, c)| c.clone()).collect());
        wires
            .iter()
            .filter(|cancel| !cancel.requested.get())
            .for_each(|cancel| cancel.request());
        poll_all_finished(cx)
    })
}

/// Why [`WireLoop::run`] did not end with every wire finished.
#[derive(Debug)]
pub enum RunError {
    /// The timeout expired; the wires still running were cancelled.
    TimedOut(Duration),
    /// The loop could not run (already running, destroyed or stopped).
    Loop(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::TimedOut(limit) => write!(f, "wires timed out after {limit:?}"),
            RunError::Loop(e) => write!(f, "event loop error: {e}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::TimedOut(_) => None,
            RunError::Loop(e) => Some(e),
        }
    }
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> RunError {
        RunError::Loop(e)
    }
}

impl From<RunError> for io::Error {
    fn from(e: RunError) -> io::Error {
        match e {
            RunError::TimedOut(_) => io::Error::new(io::ErrorKind::TimedOut, e),
            RunError::Loop(e) => e,
        }
    }
}
