//! The event loop: one per thread, running callbacks, timers, fd watchers and signal
//! handlers.
//!
//! # One iteration
//!
//! [`EventLoop::run_once`] is the whole loop; `run` and `run_forever` call it
//! repeatedly. One iteration:
//!
//! 1. works out how long it may block: zero if callbacks are ready or a stop was asked
//!    for, otherwise until the earliest timer (or for ever);
//! 2. waits in the poller (the `reactor` module); another thread can cut the wait short
//!    through a [`LoopRemote`], a signal through the waker;
//! 3. caches the clock ([`EventLoop::time`]);
//! 4. runs the callbacks of the fds that are ready, readers before writers;
//! 5. runs the closures sent from other threads, then the handlers of signals that
//!    arrived;
//! 6. runs the timers whose deadline has passed, in deadline order;
//! 7. runs the `call_soon` callbacks that were queued before this step began.
//!
//! Work scheduled while an iteration runs waits for the next one (a timer set by a
//! timer, a `call_soon` from a `call_soon`), so a callback that keeps rescheduling itself
//! never starves I/O.
//!
//! # Borrowing rules
//!
//! All state lives in one `RefCell`. Every callback is taken out of the state before it
//! runs and the borrow is released, so callbacks may call any method of the loop. User
//! closures are also always dropped outside the borrow, because their captures may
//! call back into the loop when dropped.

mod debug;
mod handle;
mod panic;
mod ready;
mod remote;
mod signals;
pub(crate) mod watchers;

pub(crate) use debug::timed;
pub use debug::LoopStats;
pub use handle::{Handle, KeepAlive};
pub use panic::CallbackPanic;
pub use remote::{LoopClosed, LoopRemote};

use self::handle::HandleKind;
use self::ready::{Entry, ReadyQueue};
use self::remote::SendCallback;
pub(crate) use self::remote::Shared;
use self::signals::SignalHandlers;
pub(crate) use self::watchers::Direction;
pub(crate) use self::watchers::FdHandler;
use self::watchers::{FdCallback, Target, Watchers};
use crate::reactor::{Events, Interest, Mode, Poller, Waker as FdWaker};
use crate::task::raw::{TaskFuture, TaskHeader, TaskSlot};
use crate::timers::Timers;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// The loop of the current thread, if one exists.
    static CURRENT: RefCell<Weak<Inner>> = const { RefCell::new(Weak::new()) };
    /// Its id (0: none), so a waker can tell cheaply whether it runs on its loop's thread.
    static CURRENT_ID: Cell<u64> = const { Cell::new(0) };
}

/// Source of loop ids; 0 means "no loop".
static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

/// The id of the current thread's loop, 0 if none.
pub(crate) fn current_loop_id() -> u64 {
    CURRENT_ID.with(Cell::get)
}

type PanicHandler = Box<dyn FnMut(CallbackPanic) + 'static>;

/// A function that runs the loop's blocking wait, given to it as a closure (see
/// [`EventLoop::set_wait_wrapper`]).
pub type WaitWrapper = fn(&mut dyn FnMut());

/// A handle to the event loop of the current thread.
///
/// Cheap to clone (all clones are the same loop) and `!Send`: the loop belongs to the
/// thread that created it. Use [`EventLoop::remote`] to reach it from other threads.
/// The loop is destroyed by [`EventLoop::destroy`] or when the last handle is dropped.
///
/// ```
/// use oxloop::EventLoop;
/// use std::time::Duration;
///
/// let ev = EventLoop::new()?;
/// ev.call_later(Duration::from_millis(5), || println!("later"));
/// ev.call_soon(|| println!("soon"));
/// ev.run()?; // prints "soon" then "later", and returns when nothing is left to do
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct EventLoop {
    inner: Rc<Inner>,
}

pub(crate) struct Inner {
    state: RefCell<State>,
    poller: Poller,
    shared: Arc<Shared>,
    id: u64,
    /// The poller's report buffer. Only `iterate` touches it, and `iterate` cannot
    /// re-enter (the running guard refuses), so it lives outside the state's `RefCell`.
    events: RefCell<Events>,
    /// Callbacks and task steps run; outside the `RefCell` so counting costs no borrow.
    callbacks_run: Cell<u64>,
    /// Iterations run.
    iterations: Cell<u64>,
    /// Debug mode: slow-callback warnings and creation sites (see `debug.rs`).
    debug: Cell<Option<Duration>>,
    /// Runs around a wait that may block (see [`EventLoop::set_wait_wrapper`]).
    wait_wrapper: Cell<Option<WaitWrapper>>,
    waker_fd: RawFd,
    /// Zero of the loop's nanosecond clock.
    epoch: Instant,
}

struct State {
    ready: ReadyQueue,
    tasks: Slab<TaskSlot>,
    next_task_generation: u64,
    timers: Timers,
    watchers: Watchers,
    signals: SignalHandlers,
    /// Reused buffer for the closures sent from other threads.
    remote_batch: Vec<SendCallback>,
    /// The cached clock; read again at its first use after each wait.
    now: Instant,
    now_fresh: bool,
    running: bool,
    stopping: bool,
    destroyed: bool,
    keep_alive: usize,
    panic_handler: Option<PanicHandler>,
    propagate_panics: bool,
    /// Time spent blocked in the poller, when `track_wait_time` is on.
    time_waiting: Duration,
    track_wait_time: bool,
}

/// Everything a destroyed loop held, dropped after the state's borrow is released.
type Leftovers = (
    Vec<TaskFuture>,
    Vec<ready::Callback>,
    Vec<crate::timers::TimerCallback>,
    (Vec<FdCallback>, Vec<Rc<dyn FdHandler>>),
    Vec<FdCallback>,
    Vec<SendCallback>,
    Option<PanicHandler>,
);

fn destroyed_error() -> io::Error {
    io::Error::other("the event loop has been destroyed")
}

impl EventLoop {
    /// Creates the event loop of the current thread.
    ///
    /// Fails with [`io::ErrorKind::AlreadyExists`] if this thread already has a live
    /// loop (use [`EventLoop::current`] to get it), or if the system refuses an fd.
    pub fn new() -> io::Result<EventLoop> {
        CURRENT.with(|current| {
            if current.borrow().strong_count() > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "this thread already has an event loop; use EventLoop::current() to get it",
                ));
            }
            let ev = EventLoop::new_detached()?;
            *current.borrow_mut() = Rc::downgrade(&ev.inner);
            CURRENT_ID.with(|c| c.set(ev.inner.id));
            Ok(ev)
        })
    }

    /// Creates a loop that is not the current thread's loop: [`EventLoop::current`]
    /// does not find it, and the thread may have other loops besides it.
    ///
    /// For hosts that keep track of their loops themselves, such as the Python binding,
    /// where a program may create several loops on one thread and run each in turn.
    /// Futures and free functions that look the loop up through
    /// [`EventLoop::current`] do not find this one; wakers from other threads reach it
    /// through its [`LoopRemote`] as usual.
    pub fn new_detached() -> io::Result<EventLoop> {
        let poller = Poller::new()?;
        let waker = FdWaker::new()?;
        let waker_fd = waker.read_fd();
        poller.add(waker_fd, Interest::READ, Mode::Level)?;
        let now = Instant::now();
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let inner = Rc::new(Inner {
            state: RefCell::new(State {
                ready: ReadyQueue::default(),
                tasks: Slab::new(),
                next_task_generation: 0,
                timers: Timers::default(),
                watchers: Watchers::default(),
                signals: SignalHandlers::default(),
                remote_batch: Vec::new(),
                now,
                now_fresh: true,
                running: false,
                stopping: false,
                destroyed: false,
                keep_alive: 0,
                panic_handler: None,
                propagate_panics: false,
                time_waiting: Duration::ZERO,
                track_wait_time: false,
            }),
            poller,
            shared: Arc::new(Shared::new(waker)),
            id,
            events: RefCell::new(Events::new()),
            callbacks_run: Cell::new(0),
            iterations: Cell::new(0),
            debug: Cell::new(None),
            wait_wrapper: Cell::new(None),
            waker_fd,
            epoch: now,
        });
        Ok(EventLoop { inner })
    }

    /// Runs every wait of the loop that may block inside `wrapper`, which must call the
    /// wait it is given exactly once. A wait that cannot block (callbacks are ready)
    /// does not go through it.
    ///
    /// An embedder that holds a lock while callbacks run releases it there: the Python
    /// binding lets other Python threads run while the loop sleeps.
    pub fn set_wait_wrapper(&self, wrapper: Option<WaitWrapper>) {
        self.inner.wait_wrapper.set(wrapper);
    }

    /// The event loop of the current thread.
    ///
    /// Fails with [`io::ErrorKind::NotFound`] if none was created on this thread (or it
    /// was destroyed).
    pub fn current() -> io::Result<EventLoop> {
        CURRENT
            .with(|current| current.borrow().upgrade())
            .map(|inner| EventLoop { inner })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no event loop exists on this thread; create one with EventLoop::new()",
                )
            })
    }

    /// Whether two handles refer to the same loop.
    pub fn ptr_eq(&self, other: &EventLoop) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Rc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(inner: &Weak<Inner>) -> Option<EventLoop> {
        inner.upgrade().map(|inner| EventLoop { inner })
    }

    fn handle(&self, kind: HandleKind) -> Handle {
        Handle {
            inner: Rc::downgrade(&self.inner),
            kind,
        }
    }

    /// The loop's clock: a monotonic instant cached once per iteration (read at its
    /// first use after the wait, so an iteration that never asks pays nothing). Cheap
    /// to call; use `Instant::now()` when the exact time matters.
    pub fn time(&self) -> Instant {
        self.inner.state.borrow_mut().now()
    }

    /// Runs `f` in the next iteration. Callbacks run in the order they were scheduled.
    #[track_caller]
    pub fn call_soon(&self, f: impl FnOnce() + 'static) -> Handle {
        let f = self.traced_once(f);
        let mut state = self.inner.state.borrow_mut();
        if state.destroyed {
            drop(state);
            return Handle::inert();
        }
        let seq = state.ready.push(f);
        drop(state);
        self.handle(HandleKind::Soon(seq))
    }

    /// Runs `f` once `delay` has passed (never earlier). Timers with the same deadline
    /// run in the order they were set.
    #[track_caller]
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> Handle {
        let now = self.inner.nanos(Instant::now());
        let delay = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.schedule(now.saturating_add(delay), self.traced_once(f))
    }

    /// Runs `f` at `when` (never earlier); an instant in the past runs in the next
    /// iteration.
    #[track_caller]
    pub fn call_at(&self, when: Instant, f: impl FnOnce() + 'static) -> Handle {
        self.schedule(self.inner.nanos(when), self.traced_once(f))
    }

    fn schedule(&self, deadline: u64, f: crate::timers::TimerCallback) -> Handle {
        let mut state = self.inner.state.borrow_mut();
        if state.destroyed {
            drop(state);
            return Handle::inert();
        }
        let id = state.timers.insert(deadline, f);
        drop(state);
        self.handle(HandleKind::Timer(id))
    }

    /// Runs `f` every iteration while `fd` is readable (level-triggered, like asyncio).
    /// Adding again replaces the callback. An fd that cannot be watched (closed, a
    /// regular file) is an error.
    #[track_caller]
    pub fn add_reader(&self, fd: impl AsRawFd, f: impl FnMut() + 'static) -> io::Result<()> {
        self.add_watcher(
            fd.as_raw_fd(),
            Direction::Read,
            Mode::Level,
            self.traced_mut(f),
        )
    }

    /// Runs `f` every iteration while `fd` is writable. See [`EventLoop::add_reader`].
    #[track_caller]
    pub fn add_writer(&self, fd: impl AsRawFd, f: impl FnMut() + 'static) -> io::Result<()> {
        self.add_watcher(
            fd.as_raw_fd(),
            Direction::Write,
            Mode::Level,
            self.traced_mut(f),
        )
    }

    /// `add_reader`/`add_writer` with a trigger mode; the hook `crate::source` uses.
    /// Both sides of one fd share the mode last given.
    pub(crate) fn add_watcher(
        &self,
        fd: RawFd,
        dir: Direction,
        mode: Mode,
        f: FdCallback,
    ) -> io::Result<()> {
        if fd == self.inner.waker_fd {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "that fd belongs to the event loop itself",
            ));
        }
        let registered = {
            let mut state = self.inner.state.borrow_mut();
            if state.destroyed {
                Err(destroyed_error())
            } else {
                state.watchers.register(&self.inner.poller, fd, dir, mode)
            }
        };
        // On error `f` is dropped when this function returns, outside the borrow.
        registered?;
        let replaced = self.inner.state.borrow_mut().watchers.install(fd, dir, f);
        drop(replaced);
        Ok(())
    }

    /// Stops watching `fd` for readability. Returns whether a reader was installed.
    /// Works from inside the reader itself.
    pub fn remove_reader(&self, fd: impl AsRawFd) -> bool {
        self.remove_watcher(fd.as_raw_fd(), Direction::Read)
    }

    /// Stops watching `fd` for writability. Returns whether a writer was installed.
    pub fn remove_writer(&self, fd: impl AsRawFd) -> bool {
        self.remove_watcher(fd.as_raw_fd(), Direction::Write)
    }

    fn remove_watcher(&self, fd: RawFd, dir: Direction) -> bool {
        let (removed, callback) = {
            let mut state = self.inner.state.borrow_mut();
            let state = &mut *state;
            state.watchers.remove(&self.inner.poller, fd, dir)
        };
        drop(callback);
        removed
    }

    /// Sets whether the watchers of `fd` keep [`run`](EventLoop::run) going (the default
    /// is `true`). Returns false if `fd` is not watched.
    pub fn set_fd_ref(&self, fd: impl AsRawFd, referenced: bool) -> bool {
        let mut state = self.inner.state.borrow_mut();
        state.watchers.set_referenced(fd.as_raw_fd(), referenced)
    }

    /// Runs `f` on the loop's thread each time signal `signum` arrives. Several handlers
    /// may be added for one signal; they run in the order they were added. Cancelling
    /// the returned handle removes that handler only. When a signal has no handler left
    /// its previous disposition is restored.
    ///
    /// `SIGKILL`, `SIGSTOP` and the fault signals (`SIGSEGV`, `SIGBUS`, `SIGILL`,
    /// `SIGFPE`) are refused with [`io::ErrorKind::InvalidInput`].
    #[track_caller]
    pub fn add_signal_handler(&self, signum: i32, f: impl FnMut() + 'static) -> io::Result<Handle> {
        let f = self.traced_mut(f);
        let mut state = self.inner.state.borrow_mut();
        if state.destroyed {
            drop(state);
            return Err(destroyed_error());
        }
        let wake_fd = self.inner.shared.waker.write_fd();
        let id = state.signals.add(signum, wake_fd, f);
        drop(state);
        Ok(self.handle(HandleKind::Signal(id?)))
    }

    /// Removes every handler of `signum` and restores its previous disposition.
    /// Returns whether there was any.
    pub fn remove_signal_handler(&self, signum: i32) -> bool {
        let removed = self.inner.state.borrow_mut().signals.remove_all(signum);
        let any = !removed.is_empty();
        drop(removed);
        any
    }

    /// A thread-safe handle for [`LoopRemote::call_from_thread`] and
    /// [`LoopRemote::stop`].
    pub fn remote(&self) -> LoopRemote {
        LoopRemote {
            shared: self.inner.shared.clone(),
        }
    }

    /// Keeps [`run`](EventLoop::run) going until the returned guard is dropped.
    pub fn keep_alive(&self) -> KeepAlive {
        self.inner.state.borrow_mut().keep_alive += 1;
        KeepAlive {
            inner: Rc::downgrade(&self.inner),
        }
    }

    /// Sets the function that receives panics caught in callbacks (the default logs
    /// them with `tracing` at ERROR level). The loop keeps running after it returns.
    pub fn set_exception_handler(&self, handler: impl FnMut(CallbackPanic) + 'static) {
        let old = self
            .inner
            .state
            .borrow_mut()
            .panic_handler
            .replace(Box::new(handler));
        drop(old);
    }

    /// When `true`, a panicking callback unwinds out of `run`/`run_once` instead of
    /// going to the exception handler.
    pub fn set_propagate_panics(&self, propagate: bool) {
        self.inner.state.borrow_mut().propagate_panics = propagate;
    }

    /// Runs until nothing is left to do: no ready callbacks, and no timers, fd watchers,
    /// signal handlers or [`KeepAlive`] guards that keep the loop going (see
    /// [`Handle::unref`]), or until [`stop`](EventLoop::stop).
    pub fn run(&self) -> io::Result<()> {
        self.run_loop(false)
    }

    /// Runs until [`stop`](EventLoop::stop) is called.
    pub fn run_forever(&self) -> io::Result<()> {
        self.run_loop(true)
    }

    /// Ends `run`/`run_forever` after the current iteration. Called before the loop
    /// runs, the next run does one iteration (without blocking) and returns.
    pub fn stop(&self) {
        self.inner.state.borrow_mut().stopping = true;
    }

    /// Runs exactly one iteration, blocking at most `timeout` (`None`: until something
    /// happens) for I/O, but never past the earliest timer, and not at all when callbacks
    /// are ready. For driving the loop from another loop: before blocking on the loop's
    /// fd, a host calls [`EventLoop::prepare_wait`] (not just
    /// [`next_timeout`](EventLoop::next_timeout)), which also arms the cross-thread
    /// wake-up so that a `LoopRemote` call makes the fd readable.
    pub fn run_once(&self, timeout: Option<Duration>) -> io::Result<()> {
        let _running = self.enter()?;
        let result = self.iterate(timeout);
        self.inner.state.borrow_mut().stopping = false;
        result
    }

    /// How long the loop could sleep now: `Some(ZERO)` when work is ready, the time to the
    /// earliest timer, or `None` when only I/O can wake it.
    pub fn next_timeout(&self) -> Option<Duration> {
        let mut state = self.inner.state.borrow_mut();
        if state.ready.live() > 0 || state.stopping || self.inner.shared.is_notified() {
            return Some(Duration::ZERO);
        }
        let deadline = state.timers.next_deadline()?;
        let now = self.inner.nanos(Instant::now());
        Some(Duration::from_nanos(deadline.saturating_sub(now)))
    }

    /// Whether `run` would do anything now.
    pub fn has_work(&self) -> bool {
        let state = self.inner.state.borrow();
        !state.destroyed
            && (state.ready.live() > 0
                || !state.tasks.is_empty()
                || state.timers.referenced() > 0
                || state.watchers.referenced() > 0
                || state.signals.referenced() > 0
                || state.keep_alive > 0
                || self.inner.shared.is_notified())
    }

    /// Whether the loop is inside `run`, `run_forever` or `run_once`.
    pub fn is_running(&self) -> bool {
        self.inner.state.borrow().running
    }

    /// Whether the loop has been destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.inner.state.borrow().destroyed
    }

    /// Iterations run so far.
    pub fn iterations(&self) -> u64 {
        self.inner.iterations.get()
    }

    /// Frees everything the loop holds: pending callbacks, timers, watchers and signal
    /// handlers are dropped (signal dispositions restored), remotes start failing, and
    /// the thread may create a new loop. Other handles to this loop stay valid objects,
    /// but the loop refuses new work. The poller and wake-up fds close when the last
    /// handle (and the last [`LoopRemote`]) is dropped.
    pub fn destroy(&self) {
        self.inner.shut_down();
    }

    fn run_loop(&self, forever: bool) -> io::Result<()> {
        let _running = self.enter()?;
        loop {
            if !forever && !self.has_work() {
                break;
            }
            self.iterate(None)?;
            let mut state = self.inner.state.borrow_mut();
            if state.destroyed {
                break;
            }
            if state.stopping {
                state.stopping = false;
                break;
            }
        }
        Ok(())
    }

    /// Marks the loop running; the guard clears the mark, even when a panic unwinds.
    fn enter(&self) -> io::Result<RunningGuard<'_>> {
        let mut state = self.inner.state.borrow_mut();
        if state.destroyed {
            return Err(destroyed_error());
        }
        if state.running {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the event loop is already running",
            ));
        }
        state.running = true;
        Ok(RunningGuard { inner: &self.inner })
    }

    fn iterate(&self, max_wait: Option<Duration>) -> io::Result<()> {
        let inner = &*self.inner;
        let mut events = inner.events.borrow_mut();
        let notified = {
            let mut state = inner.state.borrow_mut();
            let state = &mut *state;
            if state.destroyed {
                return Ok(());
            }
            let mut timeout = inner.poll_timeout(state, max_wait);
            if timeout != Some(Duration::ZERO) && !inner.shared.prepare_sleep() {
                timeout = Some(Duration::ZERO);
            }
            // Timed only when asked for (`track_wait_time`), and only a wait that may
            // block: a clock read costs as much as the rest of an idle iteration.
            let before =
                (state.track_wait_time && timeout != Some(Duration::ZERO)).then(Instant::now);
            let result = match inner.wait_wrapper.get() {
                Some(wrapper) if timeout != Some(Duration::ZERO) => {
                    let mut result = Ok(());
                    wrapper(&mut || result = inner.poller.wait(&mut events, timeout));
                    result
                }
                _ => inner.poller.wait(&mut events, timeout),
            };
            let notified = inner.shared.after_wake();
            if let Some(before) = before {
                state.time_waiting += before.elapsed();
            }
            state.now_fresh = false;
            result?;
            notified
        };

        for ready in events.iter() {
            if ready.fd == inner.waker_fd {
                inner.shared.waker.drain();
                continue;
            }
            let target = inner.state.borrow_mut().watchers.target(ready);
            match target {
                Target::Handler(handler) => self.guarded(move || handler.on_ready(ready)),
                Target::Reader(reader) => {
                    self.run_fd_callback(ready.fd, Direction::Read, reader);
                    if ready.writable() {
                        self.dispatch_fd(ready.fd, Direction::Write);
                    }
                }
                Target::Writer => self.dispatch_fd(ready.fd, Direction::Write),
                Target::Nothing => {}
            }
        }
        drop(events);

        if notified {
            self.run_remote_calls();
        }
        let (signals, timers) = {
            let state = inner.state.borrow();
            (state.signals.take_pending(), state.timers.len())
        };
        if signals != 0 {
            self.run_signal_handlers(signals);
        }
        if timers != 0 {
            self.run_timers();
        }
        self.run_ready();
        inner.iterations.set(inner.iterations.get() + 1);
        Ok(())
    }

    fn dispatch_fd(&self, fd: RawFd, dir: Direction) {
        let Some(callback) = self.inner.state.borrow_mut().watchers.begin(fd, dir) else {
            return;
        };
        self.run_fd_callback(fd, dir, callback);
    }

    /// Runs a watcher taken out by `Watchers::begin`, then puts it back.
    fn run_fd_callback(&self, fd: RawFd, dir: Direction, mut callback: FdCallback) {
        self.guarded(&mut callback);
        let leftover = self
            .inner
            .state
            .borrow_mut()
            .watchers
            .end(fd, dir, callback);
        drop(leftover);
    }

    fn run_remote_calls(&self) {
        let mut batch = {
            let mut state = self.inner.state.borrow_mut();
            if self.inner.shared.take_stop() {
                state.stopping = true;
            }
            std::mem::take(&mut state.remote_batch)
        };
        self.inner.shared.take_calls(&mut batch);
        for call in batch.drain(..) {
            self.guarded(call);
        }
        self.inner.state.borrow_mut().remote_batch = batch;
    }

    fn run_signal_handlers(&self, pending: u64) {
        for signum in crate::reactor::signal::signals_in(pending) {
            let mut from = 0;
            loop {
                let next = self
                    .inner
                    .state
                    .borrow_mut()
                    .signals
                    .begin_next(signum, from);
                let Some((id, mut callback)) = next else {
                    break;
                };
                self.guarded(&mut callback);
                let leftover = self.inner.state.borrow_mut().signals.end(id, callback);
                drop(leftover);
                from = id.key() + 1;
            }
        }
    }

    fn run_timers(&self) {
        let (now, before) = {
            let mut state = self.inner.state.borrow_mut();
            (self.inner.nanos(state.now()), state.timers.next_seq())
        };
        loop {
            let expired = self
                .inner
                .state
                .borrow_mut()
                .timers
                .pop_expired(now, before);
            match expired {
                Some(callback) => self.guarded(callback),
                None => break,
            }
        }
    }

    fn run_ready(&self) {
        let n = self.inner.state.borrow().ready.len();
        for _ in 0..n {
            let entry = self.inner.state.borrow_mut().ready.pop();
            match entry {
                Some(Entry::Callback(callback)) => self.guarded(callback),
                Some(Entry::Task(key, generation)) => self.poll_task(key, generation),
                Some(Entry::Empty) => {}
                None => break,
            }
        }
    }

    /// Polls one woken task. The future is taken out of its slot while it runs, so it may
    /// spawn, abort or wake any task, itself included.
    fn poll_task(&self, key: usize, generation: u64) {
        let taken = {
            let mut state = self.inner.state.borrow_mut();
            match state.tasks.get_mut(key) {
                Some(slot) if slot.generation == generation => {
                    // Cleared before polling, so a wake during the poll queues it again.
                    slot.header.begin_poll();
                    // Both move out (no waker clone per poll) and come back after.
                    slot.future.take().zip(slot.waker.take())
                }
                _ => None,
            }
        };
        let Some((mut future, waker)) = taken else {
            return;
        };
        let mut cx = Context::from_waker(&waker);
        self.inner
            .callbacks_run
            .set(self.inner.callbacks_run.get() + 1);
        let finished = match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(payload) => {
                // Task wrappers catch their own panics; this is a panic in a destructor
                // or similar. The task is finished either way.
                self.report_panic(payload);
                true
            }
        };
        let leftover = {
            let mut state = self.inner.state.borrow_mut();
            match state.tasks.get_mut(key) {
                Some(slot) if slot.generation == generation => {
                    if finished {
                        state.tasks.remove(key);
                        Some(future)
                    } else {
                        slot.future = Some(future);
                        slot.waker = Some(waker);
                        None
                    }
                }
                // Aborted while it ran.
                _ => Some(future),
            }
        };
        drop(leftover);
    }

    /// Stores a new task and queues its first poll. Returns its key and generation.
    pub(crate) fn spawn_raw(&self, future: TaskFuture) -> Option<(usize, u64)> {
        let mut state = self.inner.state.borrow_mut();
        if state.destroyed {
            drop(state);
            drop(future);
            return None;
        }
        let generation = state.next_task_generation;
        state.next_task_generation += 1;
        let entry = state.tasks.vacant_entry();
        let key = entry.key();
        let header = Arc::new(TaskHeader::new(
            key,
            generation,
            self.inner.id,
            self.inner.shared.clone(),
        ));
        entry.insert(TaskSlot {
            generation,
            future: Some(future),
            waker: Some(Waker::from(header.clone())),
            header,
        });
        state.ready.push_task(key, generation);
        Some((key, generation))
    }

    /// Drops a task's future (if it still exists). Returns whether it did.
    pub(crate) fn abort_task(&self, key: usize, generation: u64) -> bool {
        let future = {
            let mut state = self.inner.state.borrow_mut();
            match state.tasks.get(key) {
                Some(slot) if slot.generation == generation => state.tasks.remove(key).future,
                _ => return false,
            }
        };
        // `None` when it is being polled right now: `poll_task` drops it afterwards.
        drop(future);
        true
    }

    /// Queues a woken task, from the loop's own thread. False when the state is busy
    /// (a waker called from inside the loop's bookkeeping): the caller then goes through
    /// the thread-safe queue instead.
    pub(crate) fn schedule_task(key: usize, generation: u64) -> bool {
        let Some(inner) = CURRENT.with(|c| c.borrow().upgrade()) else {
            return true; // the loop is gone: nothing to schedule
        };
        let Ok(mut state) = inner.state.try_borrow_mut() else {
            return false;
        };
        if state
            .tasks
            .get(key)
            .is_some_and(|slot| slot.generation == generation)
        {
            state.ready.push_task(key, generation);
        }
        true
    }

    /// Runs `future` to completion on this loop, running everything else meanwhile
    /// (asyncio's `run_until_complete`). The future need not be `'static`.
    ///
    /// Fails if the loop is already running or destroyed, or if
    /// [`stop`](EventLoop::stop) is called before the future completes. A panic in the
    /// future itself unwinds out of `block_on`.
    pub fn block_on<F: Future>(&self, future: F) -> io::Result<F::Output> {
        let _running = self.enter()?;
        let main = Arc::new(crate::task::raw::MainWaker::new(self.inner.shared.clone()));
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if main.take_woken() {
                if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                    return Ok(output);
                }
            }
            self.iterate(None)?;
            let mut state = self.inner.state.borrow_mut();
            if state.destroyed {
                return Err(destroyed_error());
            }
            if state.stopping && !main.is_woken() {
                state.stopping = false;
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the event loop was stopped before the future completed",
                ));
            }
        }
    }

    /// Makes `handler` receive every readiness report for `fd`, watched for `interest`
    /// in `mode`. `counts`: whether it keeps `run()` going while its interest is not
    /// empty.
    pub(crate) fn add_handler(
        &self,
        fd: RawFd,
        handler: Rc<dyn FdHandler>,
        interest: Interest,
        mode: Mode,
        counts: bool,
    ) -> io::Result<()> {
        let mut state = self.inner.state.borrow_mut();
        if state.destroyed {
            return Err(destroyed_error());
        }
        state
            .watchers
            .add_handler(&self.inner.poller, fd, handler, interest, mode, counts)
    }

    /// Changes what a handler's fd is watched for.
    pub(crate) fn set_interest(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let mut state = self.inner.state.borrow_mut();
        if state.destroyed {
            return Err(destroyed_error());
        }
        state
            .watchers
            .set_interest(&self.inner.poller, fd, interest)
    }

    /// Takes a handler out of the loop; its fd is no longer watched.
    pub(crate) fn remove_handler(&self, fd: RawFd) {
        let handler = match self.inner.state.try_borrow_mut() {
            Ok(mut state) => state.watchers.remove_handler(&self.inner.poller, fd),
            Err(_) => None,
        };
        drop(handler);
    }

    /// Registers `fd` as an async source (edge-triggered readiness with wakers).
    pub(crate) fn add_source(&self, fd: RawFd) -> io::Result<Rc<watchers::IoSource>> {
        // Optimistic: the first operation tries the syscall; a would-block clears it.
        let source = Rc::new(watchers::IoSource {
            readable: Cell::new(true),
            writable: Cell::new(true),
            ..watchers::IoSource::default()
        });
        self.add_handler(fd, source.clone(), Interest::BOTH, Mode::Edge, false)?;
        Ok(source)
    }

    /// Deregisters an async source, waking the tasks waiting on it.
    pub(crate) fn remove_source(&self, fd: RawFd, source: &watchers::IoSource) {
        self.remove_handler(fd);
        let wakers = [source.read_waker.take(), source.write_waker.take()];
        wakers.into_iter().flatten().for_each(Waker::wake);
    }

    /// Live tasks.
    pub fn tasks_alive(&self) -> usize {
        self.inner.state.borrow().tasks.len()
    }

    /// Runs a callback, catching a panic and handing it to the exception handler.
    fn guarded(&self, f: impl FnOnce()) {
        self.inner
            .callbacks_run
            .set(self.inner.callbacks_run.get() + 1);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            self.report_panic(payload);
            // The traced wrapper (debug mode) did not get to restore it.
            debug::clear_origin();
        }
    }

    pub(crate) fn report_panic(&self, payload: Box<dyn std::any::Any + Send>) {
        let (handler, propagate) = {
            let mut state = self.inner.state.borrow_mut();
            (state.panic_handler.take(), state.propagate_panics)
        };
        if propagate {
            self.restore_panic_handler(handler);
            resume_unwind(payload);
        }
        let panic = CallbackPanic::new(payload).with_origin(debug::current_origin());
        match handler {
            Some(mut handler) => {
                if catch_unwind(AssertUnwindSafe(|| handler(panic))).is_err() {
                    tracing::error!(target: "oxloop", "the exception handler itself panicked");
                }
                self.restore_panic_handler(Some(handler));
            }
            None => panic::log_panic(panic),
        }
    }

    fn restore_panic_handler(&self, handler: Option<PanicHandler>) {
        let mut state = self.inner.state.borrow_mut();
        if state.panic_handler.is_none() && !state.destroyed {
            state.panic_handler = handler;
        }
    }
}

impl State {
    /// The cached clock, read now if this is its first use since the last wait.
    fn now(&mut self) -> Instant {
        if !self.now_fresh {
            self.now = Instant::now();
            self.now_fresh = true;
        }
        self.now
    }
}

impl Inner {
    /// Nanoseconds on the loop's clock for `t` (0 for instants before the loop existed).
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn poll_timeout(&self, state: &mut State, max_wait: Option<Duration>) -> Option<Duration> {
        if state.ready.live() > 0 || state.stopping {
            return Some(Duration::ZERO);
        }
        if state.timers.len() == 0 {
            return max_wait;
        }
        let until_timer = state.timers.next_deadline().map(|deadline| {
            Duration::from_nanos(deadline.saturating_sub(self.nanos(Instant::now())))
        });
        match (until_timer, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn cancel(&self, kind: HandleKind) -> bool {
        let mut state = self.state.borrow_mut();
        match kind {
            HandleKind::Soon(seq) => {
                let callback = state.ready.cancel(seq);
                drop(state);
                callback.is_some()
            }
            HandleKind::Timer(id) => {
                let callback = state.timers.cancel(id);
                drop(state);
                callback.is_some()
            }
            HandleKind::Signal(id) => {
                let (removed, callback) = state.signals.cancel(id);
                drop(state);
                drop(callback);
                removed
            }
            HandleKind::Inert => false,
        }
    }

    fn is_pending(&self, kind: HandleKind) -> bool {
        let state = self.state.borrow();
        match kind {
            HandleKind::Soon(seq) => state.ready.contains(seq),
            HandleKind::Timer(id) => state.timers.contains(id),
            HandleKind::Signal(id) => state.signals.contains(id),
            HandleKind::Inert => false,
        }
    }

    fn set_ref(&self, kind: HandleKind, referenced: bool) {
        let mut state = self.state.borrow_mut();
        match kind {
            HandleKind::Timer(id) => state.timers.set_referenced(id, referenced),
            HandleKind::Signal(id) => state.signals.set_referenced(id, referenced),
            HandleKind::Soon(_) | HandleKind::Inert => {}
        }
    }

    /// Drops all work and refuses more; idempotent.
    fn shut_down(&self) {
        let leftovers: Leftovers = {
            let Ok(mut state) = self.state.try_borrow_mut() else {
                // Only reachable if a destructor runs while the state is borrowed; the
                // `Drop` of `Inner` retries with nothing borrowed.
                return;
            };
            if state.destroyed {
                return;
            }
            state.destroyed = true;
            let tasks = std::mem::take(&mut state.tasks);
            (
                tasks.into_iter().filter_map(|(_, t)| t.future).collect(),
                state.ready.take_all(),
                state.timers.take_all(),
                state.watchers.take_all(&self.poller),
                state.signals.take_all(),
                self.shared.close(),
                state.panic_handler.take(),
            )
        };
        drop(leftovers);
        let me: *const Inner = self;
        let _ = CURRENT.try_with(|current| {
            let mut current = current.borrow_mut();
            if std::ptr::eq(current.as_ptr(), me) {
                *current = Weak::new();
                CURRENT_ID.with(|c| c.set(0));
            }
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shut_down();
    }
}

struct RunningGuard<'a> {
    inner: &'a Inner,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().running = false;
    }
}

impl AsRawFd for EventLoop {
    /// The poller's fd: readable whenever the loop has I/O to dispatch or was woken.
    /// A host loop can wait on it, then call [`EventLoop::run_once`] with a zero timeout.
    fn as_raw_fd(&self) -> RawFd {
        self.inner.poller.as_raw_fd()
    }
}

impl AsFd for EventLoop {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.poller.as_fd()
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.try_borrow();
        let mut d = f.debug_struct("EventLoop");
        if let Ok(state) = state {
            d.field("running", &state.running)
                .field("destroyed", &state.destroyed)
                .field("ready", &state.ready.live())
                .field("timers", &state.timers.len())
                .field("fds", &state.watchers.len());
        }
        d.finish()
    }
}
