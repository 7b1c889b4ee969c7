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
//! The protocol itself is in `mailbox.rs`, model-checked with loom in `tests/loom.rs`.
//!
//! Only holders of the loop's `Arc<Shared>` write to the flag, and the loop hands it
//! out in one place (`Inner::share`: a [`LoopRemote`], a task's or `block_on`'s waker),
//! on its own thread. Until it first does, no other thread can wake the loop, and a
//! wait with nothing queued skips the compare-and-swap and the swap (`local_wait`): the
//! flag stays `AWAKE`, and the first wait after the hand-out announces itself as usual.

use super::mailbox::Mailbox;
use crate::reactor::Waker;
use std::fmt;
use std::sync::Arc;

/// A closure sent to the loop from another thread.
pub(crate) type SendCallback = Box<dyn FnOnce() + Send + 'static>;

/// State shared between a loop and its remotes: the mailbox (queue and sleep state,
/// in `mailbox.rs`) and the waker fd it tells callers to write to.
pub(crate) struct Shared {
    mailbox: Mailbox<SendCallback>,
    pub(crate) waker: Waker,
}

impl Shared {
    pub fn new(waker: Waker) -> Shared {
        Shared {
            mailbox: Mailbox::new(),
            waker,
        }
    }

    /// Tells the loop something is waiting; writes to the waker only if it sleeps.
    pub fn notify(&self) {
        if self.mailbox.notify() {
            self.waker.wake();
        }
    }

    /// Called by the loop just before blocking. False means something was queued in the
    /// meantime and the loop must not block.
    pub fn prepare_sleep(&self) -> bool {
        self.mailbox.prepare_sleep()
    }

    /// Called by the loop after polling. True when it was notified since the last call.
    pub fn after_wake(&self) -> bool {
        self.mailbox.after_wake()
    }

    /// Whether a notification is waiting to be picked up.
    pub fn is_notified(&self) -> bool {
        self.mailbox.is_notified()
    }

    /// Swaps the queued calls into `batch` (which must be empty; its capacity is reused).
    pub fn take_calls(&self, batch: &mut Vec<SendCallback>) {
        self.mailbox.take(batch);
    }

    /// Takes a pending stop request.
    pub fn take_stop(&self) -> bool {
        self.mailbox.take_stop()
    }

    /// Refuses further calls and hands back the ones still queued.
    pub fn close(&self) -> Vec<SendCallback> {
        self.mailbox.close()
    }

    pub fn push(&self, call: SendCallback) -> Result<(), LoopClosed> {
        match self.mailbox.push(call) {
            Ok(true) => self.waker.wake(),
            Ok(false) => {}
            Err(_) => return Err(LoopClosed(())),
        }
        Ok(())
    }

    pub fn request_stop(&self) -> Result<(), LoopClosed> {
        match self.mailbox.request_stop() {
            Some(true) => self.waker.wake(),
            Some(false) => {}
            None => return Err(LoopClosed(())),
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.mailbox.is_closed()
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
