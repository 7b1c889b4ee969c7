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
//! 2. waits in the backend (the `reactor` module); another thread can cut the wait short
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
//! All state lives in one `RefCell` (counters and flags, such as stop, destroyed and
//! `queued`, are `Cell`s beside it). Every callback is taken out of the state before it
//! runs and the borrow is released, so callbacks may call any method of the loop. User
//! closures are also always dropped outside the borrow, because their captures may
//! call back into the loop when dropped.

mod builder;
mod debug;
mod executor;
mod handle;
pub(crate) mod join;
mod mailbox;
mod panic;
mod ready;
mod remote;
mod signals;
mod streams;
pub(crate) mod watchers;

/// The synchronisation types `mailbox.rs` is written against: the standard library's
/// here, loom's when `tests/loom.rs` model-checks that file.
mod sync {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    pub(crate) use std::sync::{Mutex, MutexGuard};
}

pub use builder::{LoopBuilder, BACKEND_VARIABLE};
pub(crate) use debug::timed;
pub use debug::LoopStats;
pub use handle::{Handle, KeepAlive};
pub use panic::CallbackPanic;
use panic::PanicHandler;
pub use remote::{LoopClosed, LoopRemote};

use self::executor::{TaskFuture, TaskSlot};
use self::handle::HandleKind;
use self::ready::{Entry, ReadyQueue};
use self::remote::SendCallback;
pub(crate) use self::remote::Shared;
use self::signals::SignalHandlers;
pub(crate) use self::watchers::Direction;
pub(crate) use self::watchers::FdHandler;
use self::watchers::{FdCallback, Target, Watchers};
use crate::reactor::{
    with_backend, Backend, BackendKind, Events, Interest, Ready, Trigger, Wait, Waker as FdWaker,
};
use crate::timers::Timers;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

thread_local! {
    /// The loop of the current thread, if one exists.
    static CURRENT: RefCell<Weak<Inner>> = const { RefCell::new(Weak::new()) };
    /// Its id (0: none), so a waker can tell cheaply whether it runs on its loop's thread.
    static CURRENT_ID: Cell<u64> = const { Cell::new(0) };
    /// The loop running on this thread now (the innermost one), which may be a detached
    /// loop ([`EventLoop::new_detached`]) that `CURRENT` does not know.
    static RUNNING: RefCell<Weak<Inner>> = const { RefCell::new(Weak::new()) };
    /// Its id (0: none).
    static RUNNING_ID: Cell<u64> = const { Cell::new(0) };
    /// The id of the loop `RUNNING` points to, running or not: a plain cell, so that a
    /// loop run again and again finds itself there without touching `RUNNING`.
    static RUNNING_HELD_ID: Cell<u64> = const { Cell::new(0) };
}

/// Source of loop ids; 0 means "no loop".
static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(1);

/// Whether the loop with this id is this thread's loop or runs on this thread now.
pub(crate) fn is_loop_of_thread(id: u64) -> bool {
    RUNNING_ID.with(Cell::get) == id || CURRENT_ID.with(Cell::get) == id
}

/// The loop with this id, if it runs on this thread now or is this thread's loop.
pub(crate) fn loop_of_thread(id: u64) -> Option<Rc<Inner>> {
    if RUNNING_ID.with(Cell::get) == id {
        return RUNNING.with(|r| r.borrow().upgrade());
    }
    if CURRENT_ID.with(Cell::get) == id {
        return CURRENT.with(|c| c.borrow().upgrade());
    }
    None
}

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
    backend: Backend,
    shared: Arc<Shared>,
    id: u64,
    /// The backend's report buffer, borrowed for a whole run (`run`, `run_once`…): a
    /// run cannot re-enter (the running guard refuses), so it lives outside the state's
    /// `RefCell`.
    events: RefCell<Events>,
    /// Callbacks and task steps run; outside the `RefCell` so counting costs no borrow.
    callbacks_run: Cell<u64>,
    /// Iterations run.
    iterations: Cell<u64>,
    /// `stop()` was called: `run`/`run_forever` end after the current iteration.
    /// Implies `queued`, so a run tests it only when that is set; outside the
    /// `RefCell`, like the counters, so the test costs no borrow.
    stopping: Cell<bool>,
    /// `destroy()` ran (or the last handle went): the loop refuses new work. Implies
    /// `queued`, like `stopping`, so a run tests neither while `queued` is clear.
    destroyed: Cell<bool>,
    /// A wait found the loop notified through its mailbox (a call or stop from a
    /// [`LoopRemote`], a task or `block_on`'s future woken on another thread, or on
    /// this one while the state was borrowed) and the calls have not run yet. Implies
    /// `queued`.
    notified: Cell<bool>,
    /// Debug mode: slow-callback warnings and creation sites (see `debug.rs`).
    debug: Cell<Option<Duration>>,
    /// Runs around a wait that may block (see [`EventLoop::set_wait_wrapper`]).
    wait_wrapper: Cell<Option<WaitWrapper>>,
    /// asyncio's order (see [`EventLoop::set_io_behind_ready`]).
    io_behind_ready: Cell<bool>,
    /// Time spent blocked in the backend is measured (`track_wait_time`).
    track_wait_time: Cell<bool>,
    /// None of the three above is on: the wait takes its short path, one test for
    /// all of them.
    plain_wait: Cell<bool>,
    /// `plain_wait`, and nothing outside this thread can wake the loop (`shared_out`
    /// is false): a wait with nothing queued need not announce that it sleeps.
    local_wait: Cell<bool>,
    /// The loop's `Arc<Shared>` was handed out (a [`LoopRemote`], a task's or
    /// `block_on`'s waker), so another thread may wake the loop: its waits announce
    /// that they sleep. Set for good, on the loop's thread, before the clone leaves it.
    shared_out: Cell<bool>,
    /// The ready queue, the timers or the signal handlers may hold something, calls
    /// from other threads wait (`notified`), or a stop or the loop's end came
    /// (`stopping`, `destroyed`). Set by everything that adds to them
    /// ([`Inner::note_queued`]), by a wait that was notified, by `stop`
    /// ([`Inner::request_stop`]) and by `destroy`; cleared by an iteration's tail that
    /// found all of them empty, no stop pending and the loop not destroyed. While it is clear, the wait and the
    /// tail skip the state's borrow and its checks, and a run skips the stop and
    /// destroyed tests: an idle or I/O-only iteration tests this one flag.
    queued: Cell<bool>,
    /// The cached clock (the state's `now`) was read since the last wait.
    clock_fresh: Cell<bool>,
    waker_fd: RawFd,
    /// Why the loop does not use the backend that was asked for, if it does not.
    backend_fallback: Option<String>,
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
    /// The cached clock; read again at its first use after each wait (see
    /// `Inner::clock_fresh`).
    now: Instant,
    running: bool,
    keep_alive: usize,
    panic_handler: Option<PanicHandler>,
    propagate_panics: bool,
    /// Time spent blocked in the backend, when `track_wait_time` is on.
    time_waiting: Duration,
}

/// Everything a destroyed loop held, dropped after the state's borrow is released.
/// The fields are never read: they exist to be dropped.
#[allow(dead_code)]
struct Leftovers {
    tasks: Vec<TaskFuture>,
    ready: Vec<ready::Callback>,
    timers: Vec<crate::timers::TimerCallback>,
    fd_callbacks: Vec<FdCallback>,
    fd_handlers: Vec<Rc<dyn FdHandler>>,
    signal_handlers: Vec<FdCallback>,
    remote_calls: Vec<SendCallback>,
    panic_handler: Option<PanicHandler>,
}

fn destroyed_error() -> io::Error {
    io::Error::other("the event loop has been destroyed")
}

impl EventLoop {
    /// Creates the event loop of the current thread.
    ///
    /// Fails with [`io::ErrorKind::AlreadyExists`] if this thread already has a live
    /// loop (use [`EventLoop::current`] to get it), or if the system refuses an fd.
    pub fn new() -> io::Result<EventLoop> {
        EventLoop::builder().build()
    }

    /// Options for a new loop, such as its backend.
    pub fn builder() -> LoopBuilder {
        LoopBuilder::default()
    }

    /// Makes the loop `create` returns the current thread's, refusing if the thread has
    /// a live loop already.
    fn register_current(create: impl FnOnce() -> io::Result<EventLoop>) -> io::Result<EventLoop> {
        CURRENT.with(|current| {
            if current.borrow().strong_count() > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "this thread already has an event loop; use EventLoop::current() to get it",
                ));
            }
            let ev = create()?;
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
        EventLoop::builder().build_detached()
    }

    fn with_backend(backend: Backend, backend_fallback: Option<String>) -> io::Result<EventLoop> {
        let waker = FdWaker::new()?;
        let waker_fd = waker.read_fd();
        backend.add(waker_fd, Interest::READ, Trigger::Level)?;
        let events = RefCell::new(backend.events());
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
                running: false,
                keep_alive: 0,
                panic_handler: None,
                propagate_panics: false,
                time_waiting: Duration::ZERO,
            }),
            backend,
            backend_fallback,
            shared: Arc::new(Shared::new(waker)),
            id,
            events,
            callbacks_run: Cell::new(0),
            iterations: Cell::new(0),
            stopping: Cell::new(false),
            destroyed: Cell::new(false),
            notified: Cell::new(false),
            debug: Cell::new(None),
            wait_wrapper: Cell::new(None),
            io_behind_ready: Cell::new(false),
            track_wait_time: Cell::new(false),
            plain_wait: Cell::new(true),
            local_wait: Cell::new(true),
            shared_out: Cell::new(false),
            queued: Cell::new(false),
            clock_fresh: Cell::new(true),
            waker_fd,
            epoch: now,
        });
        Ok(EventLoop { inner })
    }

    /// The kernel interface the loop waits on.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend.kind()
    }

    /// Why the loop does not use the backend its builder or `OXLOOP_BACKEND` asked for
    /// (such as io_uring refused by the kernel), or `None` when it does.
    pub fn backend_fallback(&self) -> Option<&str> {
        self.inner.backend_fallback.as_deref()
    }

    /// Runs every wait of the loop that may block inside `wrapper`, which must call the
    /// wait it is given exactly once. A wait that cannot block (callbacks are ready)
    /// does not go through it.
    ///
    /// An embedder that holds a lock while callbacks run releases it there: the Python
    /// binding lets other Python threads run while the loop sleeps.
    pub fn set_wait_wrapper(&self, wrapper: Option<WaitWrapper>) {
        self.inner.wait_wrapper.set(wrapper);
        self.inner.update_plain_wait();
    }

    /// Orders an iteration as asyncio's loop does. Off (the default), the fd events a
    /// wait reports run first, then calls from other threads, signals, due timers and
    /// the ready queue. On, calls from other threads join the ready queue's order before
    /// the fd events, and when callbacks are already queued as the wait returns, the fd
    /// events (fd callbacks, transports, async fds) are queued behind them instead of
    /// running at once, and so are the timers that are due: what was ready before the
    /// wait runs before the I/O it reported and the timers. (A due timer queued that
    /// way can no longer be cancelled through its [`Handle`].) When nothing is queued,
    /// fd events and timers still run at once, so the busy I/O path of a loop pays
    /// nothing for it. The Python binding turns it on.
    pub fn set_io_behind_ready(&self, on: bool) {
        self.inner.io_behind_ready.set(on);
        self.inner.update_plain_wait();
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

    /// Makes this loop (made with [`EventLoop::new_detached`]) the current thread's loop,
    /// so that [`EventLoop::current`], tasks and async I/O find it, until it is
    /// destroyed. Does nothing if it already is.
    ///
    /// Fails with [`io::ErrorKind::AlreadyExists`] if another live loop is the thread's.
    /// For hosts that create loops detached and later run Rust tasks on one of them
    /// (the Python binding's e-mail log).
    pub fn make_current(&self) -> io::Result<()> {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            match current.upgrade() {
                Some(inner) if Rc::ptr_eq(&inner, &self.inner) => Ok(()),
                Some(_) => Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "this thread already has another event loop",
                )),
                None => {
                    *current = Rc::downgrade(&self.inner);
                    CURRENT_ID.with(|c| c.set(self.inner.id));
                    Ok(())
                }
            }
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

    /// The loop's clock: a monotonic instant cached once per iteration (read at its
    /// first use after the wait, so an iteration that never asks pays nothing). Cheap
    /// to call; use `Instant::now()` when the exact time matters.
    pub fn time(&self) -> Instant {
        self.inner.now(&mut self.inner.state.borrow_mut())
    }

    /// Runs `f` in the next iteration. Callbacks run in the order they were scheduled.
    #[track_caller]
    pub fn call_soon(&self, f: impl FnOnce() + 'static) -> Handle {
        let f = self.traced_once(f);
        if self.inner.destroyed.get() {
            return Handle::inert();
        }
        let mut state = self.inner.state.borrow_mut();
        let seq = state.ready.push(f);
        self.inner.note_queued();
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
        if self.inner.destroyed.get() {
            return Handle::inert();
        }
        let mut state = self.inner.state.borrow_mut();
        let id = state.timers.insert(deadline, f);
        self.inner.note_queued();
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
            Trigger::Level,
            self.traced_mut(f),
        )
    }

    /// Runs `f` every iteration while `fd` is writable. See [`EventLoop::add_reader`].
    #[track_caller]
    pub fn add_writer(&self, fd: impl AsRawFd, f: impl FnMut() + 'static) -> io::Result<()> {
        self.add_watcher(
            fd.as_raw_fd(),
            Direction::Write,
            Trigger::Level,
            self.traced_mut(f),
        )
    }

    /// `add_reader`/`add_writer` with a trigger mode; the hook `crate::source` uses.
    /// Both sides of one fd share the mode last given.
    pub(crate) fn add_watcher(
        &self,
        fd: RawFd,
        dir: Direction,
        mode: Trigger,
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
            if self.inner.destroyed.get() {
                Err(destroyed_error())
            } else {
                state.watchers.watch(&self.inner.backend, fd, dir, mode)
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
            state.watchers.remove(&self.inner.backend, fd, dir)
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
        if self.inner.destroyed.get() {
            return Err(destroyed_error());
        }
        let mut state = self.inner.state.borrow_mut();
        let wake_fd = self.inner.shared.waker.write_fd();
        let id = state.signals.add(signum, wake_fd, f);
        self.inner.note_queued();
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
            shared: self.inner.share(),
        }
    }

    /// Runs until nothing is left to do: no ready callbacks, and no timers, fd watchers,
    /// signal handlers or [`KeepAlive`] guards that keep the loop going (see
    /// [`Handle::unref`]), or until [`stop`](EventLoop::stop).
    pub fn run(&self) -> io::Result<()> {
        self.run_loop::<false>()
    }

    /// Runs until [`stop`](EventLoop::stop) is called.
    pub fn run_forever(&self) -> io::Result<()> {
        self.run_loop::<true>()
    }

    /// Ends `run`/`run_forever` after the current iteration. Called before the loop
    /// runs, the next run does one iteration (without blocking) and returns.
    pub fn stop(&self) {
        self.inner.request_stop();
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
        self.inner.stopping.set(false);
        result
    }

    /// Runs iterations, as [`run_once(None)`](EventLoop::run_once) would one after the
    /// other, calling `after_each` after every one, until it returns `false`. For an
    /// embedder with work of its own between iterations (the Python binding runs
    /// Python's signal handlers there); cheaper than calling `run_once` in a loop, since
    /// the loop is marked running once.
    pub fn run_while(&self, mut after_each: impl FnMut() -> bool) -> io::Result<()> {
        let _running = self.enter()?;
        let mut events = self.inner.events.borrow_mut();
        with_backend!(&self.inner.backend, &mut *events, |backend, events| loop {
            let result = self.iterate_inline(backend, events, None);
            self.inner.stopping.set(false);
            result?;
            if !after_each() {
                return Ok(());
            }
        })
    }

    /// How long the loop could sleep now: `Some(ZERO)` when work is ready, the time to the
    /// earliest timer, or `None` when only I/O can wake it.
    pub fn next_timeout(&self) -> Option<Duration> {
        let mut state = self.inner.state.borrow_mut();
        if state.ready.live() > 0
            || self.inner.stopping.get()
            || self.inner.notified.get()
            || self.inner.shared.is_notified()
        {
            return Some(Duration::ZERO);
        }
        let deadline = state.timers.next_deadline()?;
        let now = self.inner.nanos(Instant::now());
        Some(Duration::from_nanos(deadline.saturating_sub(now)))
    }

    /// For a host loop that drives this one through its fd: call right before blocking
    /// on [`as_fd`](std::os::fd::AsFd::as_fd), and block at most the returned time
    /// (`None`: until the fd is readable). Then call
    /// [`run_once`](EventLoop::run_once)`(Some(Duration::ZERO))`.
    ///
    /// Unlike [`next_timeout`](EventLoop::next_timeout) it also marks the loop as
    /// sleeping, so a [`LoopRemote`] call or a task woken from another thread writes to
    /// the loop's wake-up fd (which makes the loop's fd readable). Without it, such a
    /// wake-up is only noticed at the next iteration.
    pub fn prepare_wait(&self) -> Option<Duration> {
        let timeout = self.next_timeout();
        if timeout == Some(Duration::ZERO) {
            return timeout;
        }
        match self.inner.backend.flush() {
            Ok(false) => {}
            Ok(true) => return Some(Duration::ZERO), // reports wait already
            Err(e) => {
                tracing::warn!("the loop's backend could not submit its requests: {e}");
                return Some(Duration::ZERO);
            }
        }
        if self.inner.shared.prepare_sleep() {
            timeout
        } else {
            Some(Duration::ZERO) // notified meanwhile
        }
    }

    /// Whether `run` would do anything now.
    pub fn has_work(&self) -> bool {
        let state = self.inner.state.borrow();
        !self.inner.destroyed.get()
            && (state.ready.live() > 0
                || !state.tasks.is_empty()
                || state.timers.referenced() > 0
                || state.watchers.referenced() > 0
                || state.signals.referenced() > 0
                || state.keep_alive > 0
                || self.inner.notified.get()
                || self.inner.shared.is_notified())
    }

    /// Whether the loop is inside `run`, `run_forever` or `run_once`.
    pub fn is_running(&self) -> bool {
        self.inner.state.borrow().running
    }

    /// Whether the loop has been destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.inner.destroyed.get()
    }

    /// Iterations run so far.
    pub fn iterations(&self) -> u64 {
        self.inner.iterations.get()
    }

    /// Frees everything the loop holds: pending callbacks, timers, watchers and signal
    /// handlers are dropped (signal dispositions restored), so is the protocol of each
    /// stream transport open or closed but not yet told `connection_lost` (without a
    /// call: what the transport had buffered is not sent; close transports first to
    /// flush them), each server still accepting is
    /// closed (its listening sockets and its protocol factory dropped), remotes start
    /// failing, and the thread may create a new loop. Other handles to this loop stay valid objects,
    /// but the loop refuses new work. The backend and wake-up fds close when the last
    /// handle (and the last [`LoopRemote`]) is dropped.
    pub fn destroy(&self) {
        self.inner.shut_down();
    }

    /// `run` (`FOREVER` false: ends when nothing is left) and `run_forever`, each
    /// compiled on its own, so that `run_forever`'s iterations carry no test of which
    /// it is, whatever the optimiser makes of their callers.
    fn run_loop<const FOREVER: bool>(&self) -> io::Result<()> {
        let _running = self.enter()?;
        let mut events = self.inner.events.borrow_mut();
        with_backend!(&self.inner.backend, &mut *events, |backend, events| loop {
            if !FOREVER && !self.has_work() {
                return Ok(());
            }
            // Not destroyed: `enter` checked before the first iteration, the test
            // below after every other, and `has_work` destroys nothing.
            self.iterate_alive(backend, events, None)?;
            // `stopping` and `destroyed` imply `queued`: one test while it is clear.
            if self.inner.queued.get() {
                if self.inner.destroyed.get() {
                    return Ok(());
                }
                if self.inner.stopping.get() {
                    // Tested, then cleared: a store fewer than `replace` while running.
                    self.inner.stopping.set(false);
                    return Ok(());
                }
            }
        })
    }

    /// Marks the loop running; the guard clears the mark, even when a panic unwinds.
    fn enter(&self) -> io::Result<RunningGuard<'_>> {
        if self.inner.destroyed.get() {
            return Err(destroyed_error());
        }
        let mut state = self.inner.state.borrow_mut();
        if state.running {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the event loop is already running",
            ));
        }
        state.running = true;
        // `RUNNING` names the loop whose id `RUNNING_ID` holds (when not 0). It is left
        // pointing at a loop that stopped, so that a loop run again and again (one
        // `run_once` per iteration, as the Python binding does) replaces nothing.
        let id = self.inner.id;
        let previous_id = RUNNING_ID.with(|r| r.replace(id));
        let previous = (RUNNING_HELD_ID.with(|h| h.replace(id)) != id)
            .then(|| RUNNING.with(|r| r.replace(Rc::downgrade(&self.inner))));
        Ok(RunningGuard {
            inner: &self.inner,
            previous,
            previous_id,
        })
    }

    /// One iteration (see the module's documentation), out of line for `run_once`.
    #[inline(never)]
    fn iterate(&self, max_wait: Option<Duration>) -> io::Result<()> {
        let mut events = self.inner.events.borrow_mut();
        with_backend!(&self.inner.backend, &mut *events, |backend, events| {
            self.iterate_inline(backend, events, max_wait)
        })
    }

    /// One iteration, inlined into the loops that run many (`run`, `run_forever`,
    /// `run_while`, `block_on`): the call and the saving and restoring of registers
    /// around it are then paid once per run instead of once per iteration. The caller
    /// has matched the backend (`with_backend!`), so the wait and the walk over its
    /// reports are that backend's own, inlined.
    #[inline(always)]
    fn iterate_inline<B: Wait>(
        &self,
        backend: &B,
        events: &mut B::Events,
        max_wait: Option<Duration>,
    ) -> io::Result<()> {
        if self.inner.destroyed.get() {
            return Ok(());
        }
        self.iterate_alive(backend, events, max_wait)
    }

    /// [`iterate_inline`](Self::iterate_inline) for a caller that knows the loop is
    /// not destroyed (`run_loop` and `block_on`, which test it after every iteration
    /// anyway).
    #[inline(always)]
    fn iterate_alive<B: Wait>(
        &self,
        backend: &B,
        events: &mut B::Events,
        max_wait: Option<Duration>,
    ) -> io::Result<()> {
        let inner = &*self.inner;
        let behind_ready = self.wait(backend, events, max_wait)?;
        // With `io_behind_ready`, when anything came before the wait's I/O: asyncio's
        // order, off the busy path.
        let defer_io = behind_ready && self.queue_io_behind_ready(B::reports(events));
        if !defer_io {
            for ready in B::reports(events) {
                let target = inner.state.borrow_mut().watchers.target(ready);
                match target {
                    // The hot path (transports, async fds) stays small; callback
                    // watchers and the waker fd (which has no watcher) take the
                    // out-of-line one.
                    Target::Handler(handler) => self.guarded(move || handler.on_ready(ready)),
                    other => self.run_fd_callbacks(ready, other),
                }
            }
        }

        if !inner.queued.get() {
            // Nothing was added to the ready queue, the timers or the signal handlers
            // since an iteration last found them all empty, and no other thread
            // notified the loop.
            inner.iterations.set(inner.iterations.get() + 1);
            return Ok(());
        }
        if inner.notified.get() {
            self.run_remote_calls();
        }
        // One borrow answers what the rest of the iteration has to do.
        let (signals, timers, mut ready) = {
            // Mutably, though it only reads: fewer instructions than a shared borrow.
            let state = inner.state.borrow_mut();
            let (signals, timers, ready) = (
                state.signals.take_pending(),
                state.timers.len(),
                state.ready.len(),
            );
            // The ready queue first: a loop running tasks finds it holding one at every
            // tail (a woken task), and then this is one test.
            if ready == 0
                && signals == 0
                && timers == 0
                && !state.signals.has_handlers()
                && !inner.stopping.get()
                && !inner.destroyed.get()
            {
                // All empty: nothing runs before the next wait but what sets it again.
                inner.queued.set(false);
            }
            (signals, timers, ready)
        };
        if signals != 0 || timers != 0 {
            self.run_signals_and_timers(signals, timers, defer_io);
            ready = inner.state.borrow().ready.len();
        }
        if ready != 0 {
            self.run_ready(ready);
        }
        inner.iterations.set(inner.iterations.get() + 1);
        Ok(())
    }

    /// Blocks in the backend for at most the time `poll_timeout` allows, filling
    /// `events`, and notes whether another thread notified the loop meanwhile
    /// (`notified`). Returns whether the wait's I/O must queue behind what came before
    /// it ([`EventLoop::set_io_behind_ready`]).
    #[inline(always)]
    fn wait<B: Wait>(
        &self,
        backend: &B,
        events: &mut B::Events,
        max_wait: Option<Duration>,
    ) -> io::Result<bool> {
        let inner = &*self.inner;
        // Nothing queued and no stop asked for: the time-out is the caller's, and the
        // state need not be borrowed.
        let mut timeout = if inner.queued.get() {
            inner.poll_timeout(&mut inner.state.borrow_mut(), max_wait)
        } else if inner.local_wait.get() {
            // Nor can another thread wake the loop: only holders of `shared` write to
            // its mailbox, and none was handed out, so nothing can be queued there
            // and the wait announces nothing. (With something queued the wait below
            // announces itself anyway, which is never wrong: one test less on the
            // busy path of a loop whose ready queue is never empty.)
            let result = backend.wait(events, max_wait);
            inner.clock_fresh.set(false);
            result?;
            return Ok(false);
        } else {
            max_wait
        };
        if timeout != Some(Duration::ZERO) && !inner.shared.prepare_sleep() {
            timeout = Some(Duration::ZERO);
        }
        if !inner.plain_wait.get() {
            return self.wait_not_plain(backend, events, timeout);
        }
        let result = backend.wait(events, timeout);
        inner.note_woken(inner.shared.after_wake());
        inner.clock_fresh.set(false);
        result?;
        Ok(false)
    }

    /// [`wait`](Self::wait)'s rest when a wait wrapper, wait timing or asyncio's order
    /// is on.
    #[cold]
    #[inline(never)]
    fn wait_not_plain<B: Wait>(
        &self,
        backend: &B,
        events: &mut B::Events,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let inner = &*self.inner;
        let mut state = inner.state.borrow_mut();
        let result = if timeout != Some(Duration::ZERO)
            && (inner.track_wait_time.get() || inner.wait_wrapper.get().is_some())
        {
            self.wait_timed_or_wrapped(backend, &mut state, events, timeout)
        } else {
            backend.wait(events, timeout)
        };
        inner.note_woken(inner.shared.after_wake());
        inner.clock_fresh.set(false);
        result?;
        let behind_ready =
            inner.io_behind_ready.get() && (inner.notified.get() || state.ready.live() != 0);
        Ok(behind_ready)
    }

    /// A wait that may block with `track_wait_time` on (timed) or a wait wrapper set.
    #[cold]
    #[inline(never)]
    fn wait_timed_or_wrapped<B: Wait>(
        &self,
        backend: &B,
        state: &mut State,
        events: &mut B::Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let inner = &*self.inner;
        // Timed only when asked for: a clock read costs as much as the rest of an idle
        // iteration.
        let before = inner.track_wait_time.get().then(Instant::now);
        let result = match inner.wait_wrapper.get() {
            Some(wrapper) => {
                let mut result = Ok(());
                wrapper(&mut || result = backend.wait(events, timeout));
                result
            }
            None => backend.wait(events, timeout),
        };
        if let Some(before) = before {
            state.time_waiting += before.elapsed();
        }
        result
    }

    /// Runs the callback watchers of a ready fd (`add_reader`/`add_writer`), or drains
    /// the waker fd.
    #[inline(never)]
    fn run_fd_callbacks(&self, ready: Ready, target: Target) {
        if ready.fd == self.inner.waker_fd {
            self.inner.shared.waker.drain();
            return;
        }
        match target {
            Target::Reader(reader) => {
                self.run_fd_callback(ready.fd, Direction::Read, reader);
                if ready.writable() {
                    self.dispatch_fd(ready.fd, Direction::Write);
                }
            }
            Target::Writer => self.dispatch_fd(ready.fd, Direction::Write),
            Target::Handler(handler) => self.guarded(move || handler.on_ready(ready)),
            Target::Nothing => {}
        }
    }

    /// The signal and timer steps of an iteration, when there is something to do.
    /// `behind_ready`: due timers are queued behind the ready callbacks (asyncio's
    /// order) instead of run at once.
    #[inline(never)]
    fn run_signals_and_timers(&self, signals: u64, timers: usize, behind_ready: bool) {
        if signals != 0 {
            self.run_signal_handlers(signals);
        }
        if timers != 0 {
            self.run_timers(behind_ready);
        }
    }

    /// asyncio's order for an iteration (see [`EventLoop::set_io_behind_ready`]): runs
    /// the calls from other threads first, then, if the ready
    /// queue holds callbacks, queues the wait's fd events behind them. Returns whether
    /// it did (the due timers then follow them too).
    #[cold]
    #[inline(never)]
    fn queue_io_behind_ready(&self, reports: impl Iterator<Item = Ready>) -> bool {
        if self.inner.notified.get() {
            self.run_remote_calls();
        }
        if self.inner.state.borrow().ready.live() == 0 {
            return false;
        }
        for ready in reports {
            if ready.fd == self.inner.waker_fd {
                self.inner.shared.waker.drain();
                continue;
            }
            self.dispatch_later(ready);
        }
        true
    }

    /// Queues a readiness report behind the ready callbacks (see
    /// [`EventLoop::set_io_behind_ready`]). What it is for is looked up when it runs: a
    /// watcher removed meanwhile gets nothing.
    #[cold]
    fn dispatch_later(&self, ready: Ready) {
        let weak = Rc::downgrade(&self.inner);
        let dispatch = Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                let ev = EventLoop { inner };
                let target = ev.inner.state.borrow_mut().watchers.target(ready);
                ev.run_fd_callbacks(ready, target);
            }
        });
        self.inner.state.borrow_mut().ready.push(dispatch);
        self.inner.note_queued();
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

    #[inline(never)]
    /// Runs the calls other threads sent (and a stop one asked for); clears `notified`.
    fn run_remote_calls(&self) {
        self.inner.notified.set(false);
        let mut batch = {
            let mut state = self.inner.state.borrow_mut();
            if self.inner.shared.take_stop() {
                self.inner.request_stop();
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

    /// Runs the due timers; with `behind_ready`, queues them behind the ready callbacks
    /// instead (see [`EventLoop::set_io_behind_ready`]).
    fn run_timers(&self, behind_ready: bool) {
        let (now, before) = {
            let mut state = self.inner.state.borrow_mut();
            (
                self.inner.nanos(self.inner.now(&mut state)),
                state.timers.next_seq(),
            )
        };
        loop {
            let mut state = self.inner.state.borrow_mut();
            let Some(callback) = state.timers.pop_expired(now, before) else {
                break;
            };
            if behind_ready {
                state.ready.push(callback);
                self.inner.note_queued();
            } else {
                drop(state);
                self.guarded(callback);
            }
        }
    }

    /// Runs the first `n` entries of the ready queue (those queued before the step).
    fn run_ready(&self, n: usize) {
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

    /// Makes `handler` receive every readiness report for `fd`, watched for `interest`
    /// in `mode`. `counts`: whether it keeps `run()` going while its interest is not
    /// empty.
    pub(crate) fn add_handler(
        &self,
        fd: RawFd,
        handler: Rc<dyn FdHandler>,
        interest: Interest,
        mode: Trigger,
        counts: bool,
    ) -> io::Result<()> {
        if fd == self.inner.waker_fd {
            // The report loop takes the waker's reports for its own whatever the fd
            // table holds (see `run_fd_callbacks`).
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "that fd belongs to the event loop itself",
            ));
        }
        if self.inner.destroyed.get() {
            // A stream or listener the backend started for `fd` is never watched: it
            // goes, so that the fd number's next owner starts clean.
            if self.inner.backend.keeps_state(fd) {
                let _ = self.inner.backend.delete(fd);
            }
            return Err(destroyed_error());
        }
        let mut state = self.inner.state.borrow_mut();
        state
            .watchers
            .add_handler(&self.inner.backend, fd, handler, interest, mode, counts)
    }

    /// Changes what a handler's fd is watched for.
    pub(crate) fn set_interest(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        if self.inner.destroyed.get() {
            return Err(destroyed_error());
        }
        let mut state = self.inner.state.borrow_mut();
        state
            .watchers
            .set_interest(&self.inner.backend, fd, interest)
    }

    /// Takes a handler out of the loop; its fd is no longer watched.
    pub(crate) fn remove_handler(&self, fd: RawFd) {
        let handler = match self.inner.state.try_borrow_mut() {
            Ok(mut state) => state.watchers.remove_handler(&self.inner.backend, fd),
            Err(_) => None,
        };
        drop(handler);
    }

    /// Registers `fd` as an async source (edge-triggered readiness with wakers).
    pub(crate) fn add_readiness(&self, fd: RawFd) -> io::Result<Rc<watchers::Readiness>> {
        // Optimistic: the first operation tries the syscall; a would-block clears it.
        let source = Rc::new(watchers::Readiness {
            readable: Cell::new(true),
            writable: Cell::new(true),
            ..watchers::Readiness::default()
        });
        self.add_handler(fd, source.clone(), Interest::BOTH, Trigger::Edge, false)?;
        Ok(source)
    }

    /// Deregisters an async source, waking the tasks waiting on it.
    pub(crate) fn remove_readiness(&self, fd: RawFd, source: &watchers::Readiness) {
        self.remove_handler(fd);
        let wakers = [source.read_waker.take(), source.write_waker.take()];
        wakers.into_iter().flatten().for_each(Waker::wake);
    }
}

impl Inner {
    /// The cached clock, read now if this is its first use since the last wait.
    fn now(&self, state: &mut State) -> Instant {
        if !self.clock_fresh.replace(true) {
            state.now = Instant::now();
        }
        state.now
    }

    /// Records that something was added to the ready queue, the timers or the signal
    /// handlers (see `queued`).
    #[inline]
    pub(super) fn note_queued(&self) {
        self.queued.set(true);
    }

    /// Notes a wait's `after_wake`: when the loop was notified, the calls run in this
    /// iteration's tail (before its I/O in asyncio's order, `io_behind_ready`).
    #[inline(always)]
    fn note_woken(&self, notified: bool) {
        if notified {
            self.notified.set(true);
            self.queued.set(true);
        }
    }

    /// Asks `run`/`run_forever` to end after the current iteration; the next wait
    /// does not block (through `queued`, which a stop request sets too).
    fn request_stop(&self) {
        self.stopping.set(true);
        self.queued.set(true);
    }

    /// Recomputes `plain_wait` and `local_wait` after one of the flags they sum up
    /// changed.
    fn update_plain_wait(&self) {
        let plain = !self.io_behind_ready.get()
            && !self.track_wait_time.get()
            && self.wait_wrapper.get().is_none();
        self.plain_wait.set(plain);
        self.local_wait.set(plain && !self.shared_out.get());
    }

    /// A clone of the loop's `Arc<Shared>` to hand out (to a [`LoopRemote`] or a
    /// waker): from now on the loop's waits announce that they sleep, so that a call
    /// or wake-up from another thread writes to the waker fd. Called on the loop's
    /// thread, so no wait is in progress while the path changes.
    pub(super) fn share(&self) -> Arc<Shared> {
        if !self.shared_out.replace(true) {
            self.update_plain_wait();
        }
        self.shared.clone()
    }

    /// Nanoseconds on the loop's clock for `t` (0 for instants before the loop existed).
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    #[inline]
    fn poll_timeout(&self, state: &mut State, max_wait: Option<Duration>) -> Option<Duration> {
        // `notified`: calls from other threads that a propagated panic kept from running
        // in the iteration that saw them.
        if state.ready.live() > 0 || self.stopping.get() || self.notified.get() {
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

    /// Drops all work and refuses more; idempotent.
    fn shut_down(&self) {
        let leftovers: Leftovers = {
            let Ok(mut state) = self.state.try_borrow_mut() else {
                // Only reachable if a destructor runs while the state is borrowed; the
                // `Drop` of `Inner` retries with nothing borrowed.
                return;
            };
            if self.destroyed.replace(true) {
                return;
            }
            // `destroyed` implies `queued`: a run ends at its next test of them.
            self.queued.set(true);
            let tasks = std::mem::take(&mut state.tasks);
            let (fd_callbacks, fd_handlers) = state.watchers.take_all(&self.backend);
            Leftovers {
                tasks: tasks.into_iter().filter_map(|(_, t)| t.future).collect(),
                ready: state.ready.take_all(),
                timers: state.timers.take_all(),
                fd_callbacks,
                fd_handlers,
                signal_handlers: state.signals.take_all(),
                remote_calls: self.shared.close(),
                panic_handler: state.panic_handler.take(),
            }
        };
        // Outside every borrow: each transport drops its protocol, which breaks the
        // cycle of a protocol holding its transport, which holds the loop.
        for handler in &leftovers.fd_handlers {
            handler.clone().loop_destroyed();
        }
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
    /// What `RUNNING` held before, if it was replaced: restored when a loop was
    /// running (nested loops).
    previous: Option<Weak<Inner>>,
    previous_id: u64,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().running = false;
        let _ = RUNNING_ID.try_with(|r| r.set(self.previous_id));
        // Only a loop still running needs its entry back; after the outermost loop,
        // `RUNNING` keeps this one, ready for its next run.
        if let Some(previous) = self.previous.take().filter(|_| self.previous_id != 0) {
            let _ = RUNNING.try_with(|r| *r.borrow_mut() = previous);
            let _ = RUNNING_HELD_ID.try_with(|h| h.set(self.previous_id));
        }
    }
}

impl AsRawFd for EventLoop {
    /// The backend's fd: readable whenever the loop has I/O to dispatch or was woken.
    /// A host loop can wait on it, then call [`EventLoop::run_once`] with a zero timeout.
    fn as_raw_fd(&self) -> RawFd {
        self.inner.backend.as_raw_fd()
    }
}

impl AsFd for EventLoop {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.backend.as_fd()
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.try_borrow();
        let mut d = f.debug_struct("EventLoop");
        if let Ok(state) = state {
            d.field("running", &state.running)
                .field("destroyed", &self.inner.destroyed.get())
                .field("ready", &state.ready.live())
                .field("timers", &state.timers.len())
                .field("fds", &state.watchers.len());
        }
        d.finish()
    }
}
