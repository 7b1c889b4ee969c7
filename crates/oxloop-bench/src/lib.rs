//! Benchmarks of oxloop against its peers (what `oxloop bench` runs).
//!
//! The parts are reusable on their own:
//!
//! - [`loadgen`]: a single-threaded epoll load generator that keeps a fixed number of
//!   messages in flight per connection and verifies every echoed byte;
//! - [`servers`]: the echo servers compared: oxloop's protocol API and its tasks, a
//!   hand-written raw epoll server (the no-abstraction limit), tokio's
//!   `current_thread` runtime, smol, and libuv (a C program built by `build.rs` when
//!   libuv's headers are installed);
//! - [`http`]: HTTP plaintext servers (oxloop-http, hyper, a raw responder), wrk and a
//!   checking keep-alive load generator;
//! - [`latency`]: a log-bucketed round-trip histogram;
//! - [`inproc`]: in-process comparisons of the core loop with tokio (timers,
//!   `call_soon`, cross-thread calls);
//! - [`sys`]: CPU pinning, a process's user CPU time and resident memory, fd limits;
//! - [`suite`]: the whole comparison (server in a child process pinned to one core,
//!   load generator pinned to another), as run by `oxloop-bench echo`; system calls
//!   per message under strace.
//!
//! Linux only (epoll, `/proc`).

#![warn(missing_docs)]

pub mod http;
pub mod inproc;
pub mod latency;
pub mod loadgen;
pub mod servers;
pub mod suite;
pub mod sys;
