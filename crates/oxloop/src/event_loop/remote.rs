//! The thread-safe side of a loop: calls from other threads, and waking it up.
//!
//! A three-state flag decides when a wake-up costs a system call:
//!
//! - `AWAKE`: the loop is running callbacks; it will look at the queue before sleeping.
//! - `SLEEPING`: the loop is (about to be) blocked in the poller; a caller must write to
//!   the waker fd.
//! - `NOTIFIED`: something was queued; the loop must not sleep.
//!
//! A caller queues its closure, then swaps the flag to `NOTIFIED` and writes to the
//! waker only if the old value was `SLEEPING`. The loop moves `AWAKE -> SLEEPING` with a
//! compare-and-swap just before it blocks (if that fails it polls without blocking), and
//! swaps back to `AWAKE` when it wakes. All of this is one atomic variable, so no
//! wake-up can be lost, and a loop that is already awake costs the caller no syscall.

use crate::reactor::Waker;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A closure sent to the loop from another thread.
pub(crate) type SendCallback = Box<dyn FnOnce() + Send + 'static>;

const AWAKE: u8 = 0;
const SLEEPING: u8 = 1;
const NOTIFIED: u8 = 2;

#[derive(Default)]
struct Queue {
    calls: Vec<SendCallback>,
    closed: bool,
}

/// State shared between a loop and its remotes.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    state: AtomicU8,
    stop_requested: AtomicBool,
    pub(crate) waker: Waker,
}

impl Shared {
    pub fn new(waker: Waker) -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            state: AtomicU8::new(AWAKE),
            stop_requested: AtomicBool::new(false),
            waker,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the loop something is waiting; writes to the waker only if it sleeps.
    pub fn notify(&self) {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == SLEEPING {
            self.waker.wake();
        }
    }

    /// Called by the loop just before blocking. False means something was queued in the
    /// meantime and the loop must not block. Already `SLEEPING` (a host called
    /// `prepare_wait` before `run_once`) is fine: no notification came since.
    pub fn prepare_sleep(&self) -> bool {
        matches!(
            self.state
                .compare_exchange(AWAKE, SLEEPING, Ordering::AcqRel, Ordering::Acquire),
            Ok(_) | Err(SLEEPING)
        )
    }

    /// Called by the loop after polling. True when it was notified since the last call.
    pub fn after_wake(&self) -> bool {
        self.state.swap(AWAKE, Ordering::AcqRel) == NOTIFIED
    }

    /// Whether a notification is waiting to be picked up.
    pub fn is_notified(&self) -> bool {
        self.state.load(Ordering::Acquire) == NOTIFIED
    }

    /// Swaps the queued calls into `batch` (which must be empty; its capacity is reused).
    pub fn take_calls(&self, batch: &mut Vec<SendCallback>) {
        std::mem::swap(&mut self.lock().calls, batch);
    }

    /// Takes a pending stop request.
    pub fn take_stop(&self) -> bool {
        self.stop_requested.swap(false, Ordering::AcqRel)
    }

    /// Refuses further calls and hands back the ones still queued.
    pub fn close(&self) -> Vec<SendCallback> {
        let mut queue = self.lock();
        queue.closed = true;
        std::mem::take(&mut queue.calls)
    }

    pub fn push(&self, call: SendCallback) -> Result<(), LoopClosed> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(LoopClosed(()));
            }
            queue.calls.push(call);
        }
        self.notify();
        Ok(())
    }

    pub fn request_stop(&self) -> Result<(), LoopClosed> {
        if self.lock().closed {
            return Err(LoopClosed(()));
        }
        self.stop_requested.store(true, Ordering::Release);
        self.notify();
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// A thread-safe handle to a loop: the one way to reach it from another thread.
///
/// Cheap to clone; `Send + Sync`. Obtained from [`EventLoop::remote`](crate::EventLoop::remote).
#[derive(Clone)]
pub struct LoopRemote {
    pub(crate) shared: Arc<Shared>,
}

impl LoopRemote {
    /// Runs `f` on the loop's thread during its next iteration, waking the loop if it
    /// sleeps. Calls from one thread run in the order they were made.
    ///
    /// Fails with [`LoopClosed`] once the loop has been destroyed.
    pub fn call_from_thread(&self, f: impl FnOnce() + Send + 'static) -> Result<(), LoopClosed> {
        self.shared.push(Box::new(f))
    }

    /// Asks the loop to stop after its current iteration (see
    /// [`EventLoop::stop`](crate::EventLoop::stop)).
    pub fn stop(&self) -> Result<(), LoopClosed> {
        self.shared.request_stop()
    }

    /// Whether the loop has been destroyed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl fmt::Debug for LoopRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopRemote")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The loop a [`LoopRemote`] points to has been destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopClosed(());

impl fmt::Display for LoopClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event loop has been destroyed")
    }
}

impl std::error::Error for LoopClosed {}
