//! The task executor: spawned futures live in the loop's slab and are polled from its
//! ready queue.
//!
//! A task's future lives in the loop's slab (it is `!Send`); its waker is an
//! `Arc<TaskHeader>` (which is `Send + Sync`). Waking:
//!
//! 1. sets the header's `scheduled` flag; if it was already set, nothing else happens
//!    (waking an already-scheduled task costs one atomic swap);
//! 2. on the loop's own thread, queues the task's key on the ready queue (no allocation);
//! 3. from any other thread, goes through the loop's thread-safe queue, which wakes the
//!    loop if it sleeps.

use super::mailbox::ScheduledFlag;
use super::{destroyed_error, is_loop_of_thread, loop_of_thread, EventLoop, Shared};
use crate::reactor::with_backend;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A spawned future, type-erased. Its output has been stored in the join state.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = ()> + 'static>>;

/// A task as the loop stores it.
pub(crate) struct TaskSlot {
    pub generation: u64,
    /// `None` while it is being polled.
    pub future: Option<TaskFuture>,
    /// `None` while it is being polled, like `future`.
    pub waker: Option<Waker>,
    pub header: Arc<TaskHeader>,
}

/// The thread-safe part of a task: what its waker needs to reschedule it.
pub(crate) struct TaskHeader {
    key: usize,
    generation: u64,
    loop_id: u64,
    scheduled: ScheduledFlag,
    shared: Arc<Shared>,
}

impl TaskHeader {
    /// A header for a task that is queued for its first poll.
    pub fn new(key: usize, generation: u64, loop_id: u64, shared: Arc<Shared>) -> TaskHeader {
        TaskHeader {
            key,
            generation,
            loop_id,
            scheduled: ScheduledFlag::new_scheduled(),
            shared,
        }
    }

    /// Called just before the task is polled: wakes from now on queue it again.
    pub fn begin_poll(&self) {
        self.scheduled.begin_poll();
    }
}

impl Wake for TaskHeader {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.wake() {
            return;
        }
        if !EventLoop::schedule_task(self.loop_id, self.key, self.generation) {
            self.wake_from_elsewhere();
        }
    }
}

impl TaskHeader {
    /// A wake from another thread (or while the loop's state is borrowed): through the
    /// loop's thread-safe queue. Out of line, so the common wake stays small.
    #[cold]
    #[inline(never)]
    fn wake_from_elsewhere(&self) {
        let (loop_id, key, generation) = (self.loop_id, self.key, self.generation);
        // Fails only when the loop is gone, and then there is nothing to wake. The call
        // runs inside the loop's own iteration, where `loop_of_thread` finds it.
        let _ = self.shared.push(Box::new(move || {
            EventLoop::schedule_task(loop_id, key, generation);
        }));
    }
}

/// The waker of the future given to `block_on`: it is polled by `block_on` itself, so
/// waking only sets a flag and makes sure the loop does not sleep.
pub(crate) struct MainWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl MainWaker {
    pub fn new(shared: Arc<Shared>) -> MainWaker {
        MainWaker {
            woken: AtomicBool::new(true),
            shared,
        }
    }

    /// Takes the flag: true when the future should be polled.
    pub fn take_woken(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }

    pub fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            // No syscall when the loop is awake; writes to the waker fd when it sleeps.
            self.shared.notify();
        }
    }
}

impl EventLoop {
    /// Polls one woken task. The future is taken out of its slot while it runs, so it may
    /// spawn, abort or wake any task, itself included.
    pub(super) fn poll_task(&self, key: usize, generation: u64) {
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
        if self.inner.destroyed.get() {
            drop(future);
            return None;
        }
        let mut state = self.inner.state.borrow_mut();
        let generation = state.next_task_generation;
        state.next_task_generation += 1;
        let entry = state.tasks.vacant_entry();
        let key = entry.key();
        let header = Arc::new(TaskHeader::new(
            key,
            generation,
            self.inner.id,
            self.inner.share(),
        ));
        entry.insert(TaskSlot {
            generation,
            future: Some(future),
            waker: Some(Waker::from(header.clone())),
            header,
        });
        state.ready.push_task(key, generation);
        self.inner.note_queued();
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

    /// Queues a woken task, from the loop's own thread. False when this is not the
    /// loop's thread, or when the state is busy (a waker called from inside the loop's
    /// bookkeeping): the caller then goes through the thread-safe queue instead.
    pub(crate) fn schedule_task(loop_id: u64, key: usize, generation: u64) -> bool {
        let Some(inner) = loop_of_thread(loop_id) else {
            // Not the loop of this thread; or it is, but the loop is gone, and then
            // there is nothing to schedule.
            return is_loop_of_thread(loop_id);
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
            inner.note_queued();
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
        let main = Arc::new(MainWaker::new(self.inner.share()));
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        let mut events = self.inner.events.borrow_mut();
        with_backend!(&self.inner.backend, &mut *events, |backend, events| loop {
            if main.take_woken() {
                if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                    return Ok(output);
                }
                if self.inner.destroyed.get() {
                    return Err(destroyed_error());
                }
            }
            // Not destroyed: `enter` checked before the first iteration, the test
            // below after every other, and the test above after a poll.
            self.iterate_alive(backend, events, None)?;
            if self.inner.destroyed.get() {
                return Err(destroyed_error());
            }
            if self.inner.stopping.get() && !main.is_woken() {
                self.inner.stopping.set(false);
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the event loop was stopped before the future completed",
                ));
            }
        })
    }

    /// Live tasks.
    pub fn tasks_alive(&self) -> usize {
        self.inner.state.borrow().tasks.len()
    }
}
