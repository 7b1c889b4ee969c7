//! The cross-thread protocol of a loop, without the waker fd: a queue of calls and a
//! three-state flag that says when a caller must wake the loop (see `remote.rs` for the
//! states), plus the scheduled flag of a task's waker.
//!
//! Written against `super::sync`, which is the standard library's atomics and mutex in
//! the crate and loom's in `tests/loom.rs`, so that the model checker explores every
//! interleaving of exactly this code. Every write here is a read-modify-write (a swap
//! where a store would do): loom checks those correctly, and it does not check a plain
//! store racing them (see `tests/loom.rs`); the cost is one locked instruction on a
//! task's poll and on a stop request.

use super::sync::{AtomicBool, AtomicU8, Mutex, MutexGuard, Ordering};

const AWAKE: u8 = 0;
const SLEEPING: u8 = 1;
const NOTIFIED: u8 = 2;

struct Queue<T> {
    items: Vec<T>,
    closed: bool,
}

/// Calls queued for the loop by other threads, and the loop's sleep state.
pub(crate) struct Mailbox<T> {
    queue: Mutex<Queue<T>>,
    state: AtomicU8,
    stop_requested: AtomicBool,
}

impl<T> Mailbox<T> {
    pub fn new() -> Mailbox<T> {
        Mailbox {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                closed: false,
            }),
            state: AtomicU8::new(AWAKE),
            stop_requested: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks that something is waiting. True when the loop sleeps (or is about to) and
    /// the caller must write to the waker.
    pub fn notify(&self) -> bool {
        self.state.swap(NOTIFIED, Ordering::AcqRel) == SLEEPING
    }

    /// Called by the loop just before blocking. False means something was queued in the
    /// meantime and the loop must not block. Already `SLEEPING` (a host called
    /// `prepare_wait` before `run_once`) is fine: no notification came since.
    #[inline]
    pub fn prepare_sleep(&self) -> bool {
        // The value seen: `AWAKE` (now `SLEEPING`), `SLEEPING` or `NOTIFIED`. One
        // comparison instead of matching the result's two arms.
        let seen = self
            .state
            .compare_exchange(AWAKE, SLEEPING, Ordering::AcqRel, Ordering::Acquire)
            .unwrap_or_else(|seen| seen);
        seen != NOTIFIED
    }

    /// Called by the loop after polling. True when it was notified since the last call.
    pub fn after_wake(&self) -> bool {
        self.state.swap(AWAKE, Ordering::AcqRel) == NOTIFIED
    }

    /// Whether a notification is waiting to be picked up.
    pub fn is_notified(&self) -> bool {
        self.state.load(Ordering::Acquire) == NOTIFIED
    }

    /// Queues `item`. `Ok(true)` when the caller must wake the loop; `Err` hands the
    /// item back when the mailbox is closed.
    pub fn push(&self, item: T) -> Result<bool, T> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(item);
            }
            queue.items.push(item);
        }
        Ok(self.notify())
    }

    /// Swaps the queued items into `batch` (which must be empty; its capacity is reused).
    pub fn take(&self, batch: &mut Vec<T>) {
        std::mem::swap(&mut self.lock().items, batch);
    }

    /// Asks the loop to stop. `Some(true)` when the caller must wake it, `None` when the
    /// mailbox is closed.
    pub fn request_stop(&self) -> Option<bool> {
        if self.lock().closed {
            return None;
        }
        self.stop_requested.swap(true, Ordering::AcqRel);
        Some(self.notify())
    }

    /// Takes a pending stop request.
    pub fn take_stop(&self) -> bool {
        self.stop_requested.swap(false, Ordering::AcqRel)
    }

    /// Refuses further items and hands back the ones still queued.
    pub fn close(&self) -> Vec<T> {
        let mut queue = self.lock();
        queue.closed = true;
        std::mem::take(&mut queue.items)
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Whether a task is queued to be polled: set by a wake, cleared just before a poll.
/// Only the wake that sets it queues the task, so a task is in the ready queue at most
/// once however many wakes arrive, and a wake during a poll queues it again.
pub(crate) struct ScheduledFlag(AtomicBool);

impl ScheduledFlag {
    /// A flag for a task that is queued for its first poll.
    pub fn new_scheduled() -> ScheduledFlag {
        ScheduledFlag(AtomicBool::new(true))
    }

    /// Called just before the task is polled: wakes from now on queue it again.
    pub fn begin_poll(&self) {
        self.0.swap(false, Ordering::AcqRel);
    }

    /// A wake: true when the caller must queue the task (it was not queued yet).
    pub fn wake(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }
}
