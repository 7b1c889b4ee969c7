//! The pieces of a task the loop stores, and the wakers that reschedule it.
//!
//! A task's future lives in the loop's slab (it is `!Send`); its waker is an
//! `Arc<TaskHeader>` (which is `Send + Sync`). Waking:
//!
//! 1. sets the header's `scheduled` flag; if it was already set, nothing else happens
//!    (waking an already-scheduled task costs one atomic swap);
//! 2. on the loop's own thread, queues the task's key on the ready queue (no allocation);
//! 3. from any other thread, goes through the loop's thread-safe queue, which wakes the
//!    loop if it sleeps.

use crate::event_loop::{current_loop_id, EventLoop, Shared};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Wake;
use std::task::Waker;

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
    scheduled: AtomicBool,
    shared: Arc<Shared>,
}

impl TaskHeader {
    /// A header for a task that is queued for its first poll.
    pub fn new(key: usize, generation: u64, loop_id: u64, shared: Arc<Shared>) -> TaskHeader {
        TaskHeader {
            key,
            generation,
            loop_id,
            scheduled: AtomicBool::new(true),
            shared,
        }
    }

    /// Called just before the task is polled: wakes from now on queue it again.
    pub fn begin_poll(&self) {
        self.scheduled.store(false, Ordering::Release);
    }
}

impl Wake for TaskHeader {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if current_loop_id() == self.loop_id && EventLoop::schedule_task(self.key, self.generation)
        {
            return;
        }
        let (key, generation) = (self.key, self.generation);
        // Fails only when the loop is gone, and then there is nothing to wake.
        let _ = self.shared.push(Box::new(move || {
            EventLoop::schedule_task(key, generation);
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
