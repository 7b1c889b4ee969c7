//! oxloop: a small, fast event loop that can be stepped, nested and embedded.
//!
//! One [`EventLoop`] per thread runs callbacks ([`EventLoop::call_soon`]), timers
//! ([`EventLoop::call_later`], [`EventLoop::call_at`]), fd watchers
//! ([`EventLoop::add_reader`], [`EventLoop::add_writer`]) and signal handlers
//! ([`EventLoop::add_signal_handler`]); other threads reach it through a
//! [`LoopRemote`]. It runs until nothing is left to do ([`EventLoop::run`]), until
//! stopped ([`EventLoop::run_forever`]), or one iteration at a time
//! ([`EventLoop::run_once`]) when another loop drives it.
//!
//! ```
//! use oxloop::EventLoop;
//! use std::time::Duration;
//!
//! let ev = EventLoop::new()?;
//! let remote = ev.remote();
//! ev.call_later(Duration::from_millis(1), || println!("timer"));
//! let worker = std::thread::spawn(move || {
//!     remote.call_from_thread(|| println!("hello from another thread")).unwrap();
//!     remote.stop().unwrap();
//! });
//! ev.run_forever()?; // returns once the other thread asks it to stop
//! worker.join().unwrap();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Where things live:
//!
//! - [`event_loop`]: the loop, its handles, the cross-thread remote;
//! - [`cluster`]: one loop per thread, all serving one address (loop per core);
//! - `reactor`: the backends (epoll or io_uring on Linux, `polling` elsewhere), the
//!   waker and the signal plumbing: the only `unsafe` code in the crate;
//! - [`source`]: event sources (one interface for fds, timers, channels, child
//!   processes and foreign loops), and the adapters that embed oxloop in other loops;
//! - `timers`: the timer queue.

#![warn(missing_docs)]
// `unsafe` only where a module is allowed it below, every block with a `// SAFETY:`
// comment (clippy checks that; CI runs it with `-D warnings`).
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cluster;
pub mod event_loop;
pub mod io;
pub mod net;
pub mod process;
pub mod protocol;
// The kernel interfaces (epoll, `sigaction`, borrowed raw fds, GLib's FFI) have no
// safe wrappers for what the loop needs: this module alone may use `unsafe`.
#[allow(unsafe_code)]
pub(crate) mod reactor;
pub mod source;
pub mod task;
pub(crate) mod timers;
pub mod wire;

pub use event_loop::{
    CallbackPanic, EventLoop, Handle, KeepAlive, LoopBuilder, LoopClosed, LoopRemote,
    BACKEND_VARIABLE,
};
pub use reactor::BackendKind;
