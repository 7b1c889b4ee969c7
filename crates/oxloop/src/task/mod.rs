//! Tasks: futures run by the loop itself (no second runtime).
//!
//! ```
//! use oxloop::{task, EventLoop};
//! use std::time::Duration;
//!
//! let ev = EventLoop::new()?;
//! let answer = ev.block_on(async {
//!     let child = task::spawn(async {
//!         task::sleep(Duration::from_millis(5)).await;
//!         21
//!     });
//!     child.await.unwrap() * 2
//! })?;
//! assert_eq!(answer, 42);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! - [`EventLoop::spawn`] / [`spawn`] start a task (`!Send` futures are fine) and return
//!   a [`JoinHandle`], itself a future of the task's result. [`JoinHandle::abort`]
//!   cancels the task (its future is dropped); dropping the handle detaches it.
//! - A panic in a task goes to the loop's exception handler and comes out of the
//!   handle as [`JoinError::Panicked`].
//! - Live tasks keep [`EventLoop::run`] going.
//! - [`sleep`], [`sleep_until`], [`timeout`] and [`yield_now`] (evergreen's `switch`)
//!   are built on the loop's timers and ready queue.
//! - [`spawn_blocking`] runs blocking work on a bounded thread pool and awaits it.
//! - Waiting on several futures at once: [`select!`](macro@crate::task::select) (first
//!   branch to finish wins, the others are dropped; each future must be fused, see
//!   [`FutureExt::fuse`]), [`select_biased!`](macro@crate::task::select_biased),
//!   [`join!`](macro@crate::task::join), and the functions [`select()`] (two futures, the
//!   loser handed back in an [`Either`]) and [`select_all`]. They are `futures-util`'s,
//!   re-exported; `examples/select.rs` races a pipe, a UDP socket and a timeout.
//!
//! ```
//! use oxloop::task::{self, FutureExt};
//! use std::time::Duration;
//!
//! let ev = oxloop::EventLoop::new()?;
//! let winner = ev.block_on(async {
//!     oxloop::task::select! {
//!         _ = task::sleep(Duration::from_millis(50)).fuse() => "slow",
//!         _ = task::sleep(Duration::from_millis(1)).fuse() => "fast",
//!     }
//! })?;
//! assert_eq!(winner, "fast");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Wakers are `Send + Sync`: waking from another thread goes through the loop's
//! thread-safe queue and wakes the loop if it sleeps.

mod blocking;
mod time;

pub use crate::event_loop::join::{JoinError, JoinHandle};
pub use blocking::spawn_blocking;
pub use time::{sleep, sleep_until, timeout, yield_now, Elapsed, Sleep, Timeout, YieldNow};

pub use futures_util::future::{select, select_all, Either, FutureExt};
pub use futures_util::{join, select, select_biased};

use crate::EventLoop;
use std::future::Future;

/// Starts running `future` on the current thread's loop.
///
/// # Panics
/// If the thread has no loop (see [`EventLoop::new`]).
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    current().spawn(future)
}

/// The current thread's loop, for the free functions of this module.
pub(crate) fn current() -> EventLoop {
    EventLoop::current().expect("oxloop: no event loop on this thread; create one first")
}
