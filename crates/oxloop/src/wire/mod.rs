//! Wires: small coroutines that run, then name the coroutine to run next.
//!
//! A *wire* is one asynchronous step that is given the loop. When the step finishes it
//! says what happens next: nothing (`None`, the wire is done) or another wire (`Some`),
//! which the loop then runs in its place. A chain of steps started with
//! [`EventLoop::start`] runs concurrently with everything else on the loop, and any
//! step may start more wires. The idea comes from Python's aiowire (itself inspired by
//! Haskell's netwire).
//!
//! ```
//! use oxloop::wire::{Wire, WireLoop};
//! use oxloop::{task, EventLoop};
//! use std::time::Duration;
//!
//! // A plain async fn of the loop is a wire. This one runs three times: each run
//! // returns the wire to run next.
//! async fn tick(_ev: EventLoop) -> Option<Wire> {
//!     thread_local!(static TICKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
//!     task::sleep(Duration::from_millis(1)).await;
//!     let n = TICKS.with(|t| { t.set(t.get() + 1); t.get() });
//!     (n < 3).then(|| Wire::new(tick))
//! }
//!
//! let ev = EventLoop::new()?;
//! let wires = WireLoop::new(&ev).timeout(Duration::from_secs(5));
//! wires.start(tick);
//! wires.run()?; // every wire finished before the timeout
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # One type, re-runnable
//!
//! [`Wire`] is a cheap-to-clone handle to a function `Fn(EventLoop) -> future of
//! Step` (an `Rc<dyn Fn…>`). Every call makes a fresh future, so the same wire can
//! run any number of times, which is what [`Repeat`], [`Forever`] and `*` need. A
//! closure or `async fn` taking an [`EventLoop`] and returning `Option<Wire>` (or `()`,
//! or a `Result` of either, see [`IntoStep`]) is accepted wherever a wire is expected,
//! through [`IntoWire`]; [`Wire::new`] makes the conversion explicit.
//!
//! # Combinators
//!
//! | expression | runs |
//! |---|---|
//! | `Wire::new(f)` | the async function `f(ev)`: the identity, as a `Wire` |
//! | `a >> b` | `a` (and the wires it hands on) to the end, then `b` |
//! | `Repeat(w, n)`, `w * n` | `w` to the end, `n` times in a row |
//! | `Forever(w)` | `w` to the end, again and again, until cancelled or it fails |
//! | `Call(f)` | the sync function `f()`, or the future `f()` returns; then done |
//! | [`Poller`] | a wire per fd, whenever that fd is readable |
//!
//! ```
//! use oxloop::wire::{Call, WireLoop};
//! use oxloop::{task, EventLoop};
//! use std::time::{Duration, Instant};
//!
//! let ev = EventLoop::new()?;
//! let start = Instant::now();
//! let beeps = (Call(|| task::sleep(Duration::from_millis(10))) >> Call(|| println!("beep"))) * 4;
//! let wires = WireLoop::new(&ev);
//! wires.start(beeps);
//! wires.run()?;
//! assert!(start.elapsed() >= Duration::from_millis(40));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `Repeat`, `Forever` and `Call` are functions named like constructors, to read like
//! the Python originals; each returns a plain [`Wire`] (the methods [`Wire::then`],
//! [`Wire::repeat`] and [`Wire::forever`] do the same). The operators are implemented
//! on `Wire`, so the left operand of `>>` or `*` must be a `Wire` (wrap a bare closure
//! in [`Wire::new`]); the right operand of `>>` may be anything that is a wire. As in
//! Python, `*` binds tighter than `>>`: `a >> b * 2` is `a >> (b * 2)`.
//!
//! Between two steps a wire always gives way to the rest of the loop (one
//! [`yield_now`]), so even `Forever(Call(|| ...))` of a
//! function that never waits cannot starve other wires, timers or I/O.
//!
//! # Running and stopping
//!
//! [`EventLoop::start`] spawns the chain as a task and returns a [`WireHandle`]:
//! [`cancel`](WireHandle::cancel) drops the running step (and everything it holds)
//! right away; awaiting the handle gives the chain's outcome. Dropping the handle lets
//! the wire run on. [`WireLoop`] runs the loop until every started wire has finished
//! (including wires started by other wires), optionally under a loop-wide timeout:
//! when it expires every running wire is cancelled, its resources are dropped, and
//! [`WireLoop::run`] returns [`RunError::TimedOut`].
//!
//! # Failure
//!
//! A wire fails by returning `Err` from a step (any `Result<_, E>` with `E: Display`
//! is a valid step output) or by panicking. Either way its own chain ends (an
//! enclosing `>>`, `Repeat` or `Forever` ends too, since the failure belongs to it),
//! the error goes to the loop's exception handler
//! ([`EventLoop::set_exception_handler`]) as a [`CallbackPanic`](crate::CallbackPanic)
//! whose message starts with `wire failed:` (or the panic's own message), and every
//! other wire keeps running. The [`WireHandle`] of the chain resolves to the
//! [`WireError`]. (With [`EventLoop::set_propagate_panics`] the failure unwinds out of
//! the run instead, like any panic.)

mod poller;
mod run;

pub use poller::{Poller, PollerHandle};
pub use run::{LoopWireExt, RunError, WireHandle, WireLoop};

use crate::task::yield_now;
use crate::EventLoop;
use std::fmt;
use std::future::Future;
use std::ops::{Mul, Shr};
use std::pin::Pin;
use std::rc::Rc;

/// What one step of a wire produces: the wire to run next (`None`: done), or an error
/// that ends the chain.
pub type Step = Result<Option<Wire>, WireError>;

type StepFuture = Pin<Box<dyn Future<Output = Step>>>;

/// A re-runnable asynchronous step of the loop. Cheap to clone; see the
/// [module docs](self).
#[derive(Clone)]
pub struct Wire {
    step: Rc<dyn Fn(EventLoop) -> StepFuture>,
}

impl Wire {
    /// Makes a wire of an async function of the loop (the identity over it). Its
    /// output is anything that is a [`Step`]: `Option<Wire>`, `()`, or a `Result` of
    /// either.
    pub fn new<F, Fut>(f: F) -> Wire
    where
        F: Fn(EventLoop) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: IntoStep,
    {
        Wire::from_fn(move |ev| {
            let future = f(ev);
            Box::pin(async move { future.await.into_step() })
        })
    }

    fn from_fn(f: impl Fn(EventLoop) -> StepFuture + 'static) -> Wire {
        Wire { step: Rc::new(f) }
    }

    /// A wire that does nothing and is done.
    pub fn done() -> Wire {
        Wire::new(|_| async {})
    }

    /// Runs one step: the future of what comes next. For writing combinators.
    pub fn step(&self, ev: EventLoop) -> impl Future<Output = Step> {
        (self.step)(ev)
    }

    /// Runs this wire and every wire it hands on, inside the current task, until the
    /// chain is done or fails. Gives way to the loop after each step.
    pub async fn run(self, ev: &EventLoop) -> Result<(), WireError> {
        let mut next = Some(self);
        while let Some(wire) = next {
            next = wire.step(ev.clone()).await?;
            yield_now().await;
        }
        Ok(())
    }

    /// This wire to the end, then `next` (the same as `self >> next`).
    pub fn then(self, next: impl IntoWire) -> Wire {
        let next = next.into_wire();
        Wire::from_fn(move |ev| Box::pin(then(self.clone(), next.clone(), ev)))
    }

    /// This wire to the end, `times` times in a row (the same as `self * times`).
    pub fn repeat(self, times: usize) -> Wire {
        Wire::from_fn(move |ev| Box::pin(repeat(self.clone(), times, ev)))
    }

    /// This wire to the end, again and again, until it fails or is cancelled.
    pub fn forever(self) -> Wire {
        Wire::from_fn(move |ev| Box::pin(forever(self.clone(), ev)))
    }
}

async fn then(first: Wire, next: Wire, ev: EventLoop) -> Step {
    first.run(&ev).await?;
    Ok(Some(next))
}

async fn repeat(wire: Wire, times: usize, ev: EventLoop) -> Step {
    for _ in 0..times {
        wire.clone().run(&ev).await?;
    }
    Ok(None)
}

async fn forever(wire: Wire, ev: EventLoop) -> Step {
    loop {
        wire.clone().run(&ev).await?;
    }
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Wire")
    }
}

/// `a >> b`: `a` to the end, then `b`.
impl<W: IntoWire> Shr<W> for Wire {
    type Output = Wire;

    fn shr(self, next: W) -> Wire {
        self.then(next)
    }
}

/// `w * n`: `w` to the end, `n` times in a row.
impl Mul<usize> for Wire {
    type Output = Wire;

    fn mul(self, times: usize) -> Wire {
        self.repeat(times)
    }
}

/// Runs `wire` to the end, `times` times in a row; then done.
#[allow(non_snake_case)]
pub fn Repeat(wire: impl IntoWire, times: usize) -> Wire {
    wire.into_wire().repeat(times)
}

/// Runs `wire` to the end, again and again, until it fails or is cancelled.
#[allow(non_snake_case)]
pub fn Forever(wire: impl IntoWire) -> Wire {
    wire.into_wire().forever()
}

/// Calls `f` (a sync function, or one returning a future, which is awaited), ignores
/// its result, and is done.
///
/// `Call(|| println!("beep"))` and `Call(|| task::sleep(d))` both work: the marker
/// type `M` ([`PlainFn`] or [`FutureFn`]) is inferred from what `f` returns. A sync
/// function must return `()`, so that a forgotten future cannot be dropped unawaited
/// silently: write `Call(|| { f(); })` to ignore another result.
#[allow(non_snake_case)]
pub fn Call<M>(f: impl Callable<M>) -> Wire {
    let f = Rc::new(f);
    Wire::from_fn(move |_| {
        let f = f.clone();
        Box::pin(async move {
            f.call().await;
            Ok(None)
        })
    })
}

/// A function [`Call`] can run. Implemented for `Fn()` (marker [`PlainFn`]) and for
/// `Fn() -> impl Future` (marker [`FutureFn`]).
pub trait Callable<M>: 'static {
    /// Calls the function; the future completes when it has.
    fn call(&self) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// Marks a sync function for [`Callable`].
#[derive(Debug)]
pub enum PlainFn {}

/// Marks a function returning a future for [`Callable`].
#[derive(Debug)]
pub enum FutureFn {}

impl<F: Fn() + 'static> Callable<PlainFn> for F {
    fn call(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        self();
        Box::pin(std::future::ready(()))
    }
}

impl<F, Fut> Callable<FutureFn> for F
where
    F: Fn() -> Fut + 'static,
    Fut: Future + 'static,
{
    fn call(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        let future = self();
        Box::pin(async move {
            future.await;
        })
    }
}

/// Anything usable as a wire: a [`Wire`], a [`Poller`], or a function
/// `Fn(EventLoop) -> impl Future` whose output is a step ([`IntoStep`]).
pub trait IntoWire {
    /// The wire.
    fn into_wire(self) -> Wire;
}

impl IntoWire for Wire {
    fn into_wire(self) -> Wire {
        self
    }
}

impl<F, Fut> IntoWire for F
where
    F: Fn(EventLoop) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: IntoStep,
{
    fn into_wire(self) -> Wire {
        Wire::new(self)
    }
}

/// What a wire's async function may return: `Option<Wire>` (the next wire, or done),
/// `()` (done), or `Result<T, E>` of one of those with an error `E: Display` (an `Err`
/// fails the wire).
pub trait IntoStep {
    /// The step.
    fn into_step(self) -> Step;
}

impl IntoStep for Option<Wire> {
    fn into_step(self) -> Step {
        Ok(self)
    }
}

impl IntoStep for () {
    fn into_step(self) -> Step {
        Ok(None)
    }
}

impl<T: IntoStep, E: fmt::Display> IntoStep for Result<T, E> {
    fn into_step(self) -> Step {
        match self {
            Ok(step) => step.into_step(),
            Err(e) => Err(WireError::Failed(e.to_string())),
        }
    }
}

/// Why a wire's chain ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A step returned `Err`; the message is the error's `Display`.
    Failed(String),
    /// A step panicked; the message is the panic's.
    Panicked(String),
    /// The wire was cancelled (by its handle or a loop timeout).
    Cancelled,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Failed(msg) => f.write_str(msg),
            WireError::Panicked(msg) => write!(f, "panicked: {msg}"),
            WireError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for WireError {}

/// Hands a failed step's error to the loop's exception handler. (Panics were already
/// reported by the task machinery; cancellation is not an error.)
fn report(ev: &EventLoop, error: &WireError) {
    if let WireError::Failed(msg) = error {
        ev.report_panic(Box::new(format!("wire failed: {msg}")));
    }
}
