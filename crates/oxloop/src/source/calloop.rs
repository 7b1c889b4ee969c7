//! A calloop loop inside oxloop (feature `calloop`).
//!
//! A calloop [`EventLoop`](::calloop::EventLoop) is an epoll (or kqueue) fd: readable
//! when one of its sources is ready. [`Calloop`] watches that fd and, when it is
//! readable, runs one calloop dispatch without blocking. The calloop loop and its
//! shared data stay reachable through [`SourceHandle::with`](super::SourceHandle::with)
//! and come back from [`SourceHandle::remove`](super::SourceHandle::remove).
//!
//! calloop keeps its timers in user space and does not say when the next one is due,
//! so its fd does not announce them. If the calloop loop has timers, give the adapter a
//! resolution with [`Calloop::poll_every`]: it is then also dispatched at that interval.
//!
//! ```
//! use oxloop::source::LoopSourceExt;
//! use oxloop::{source::calloop::Calloop, EventLoop};
//! use std::time::Duration;
//!
//! let ev = EventLoop::new()?;
//! let inner: calloop::EventLoop<'static, u32> = calloop::EventLoop::try_new().unwrap();
//! let (ping, ping_source) = calloop::ping::make_ping().unwrap();
//! inner
//!     .handle()
//!     .insert_source(ping_source, |_, _, count: &mut u32| *count += 1)
//!     .unwrap();
//! let handle = ev.insert_source(Calloop::new(inner, 0))?;
//! ping.ping(); // from any thread
//! let h = handle.clone();
//! ev.call_later(Duration::from_millis(10), move || drop(h.remove()));
//! ev.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use super::{Event, EventSource, PostAction, Registration};
use crate::reactor::{Interest, Trigger};
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// A calloop loop with its shared data, as an oxloop [`EventSource`].
pub struct Calloop<Data: 'static> {
    event_loop: ::calloop::EventLoop<'static, Data>,
    data: Data,
    poll_every: Option<Duration>,
    next_poll: Option<Instant>,
}

impl<Data: 'static> Calloop<Data> {
    /// Wraps `event_loop`; its callbacks get `data`.
    pub fn new(event_loop: ::calloop::EventLoop<'static, Data>, data: Data) -> Calloop<Data> {
        Calloop {
            event_loop,
            data,
            poll_every: None,
            next_poll: None,
        }
    }

    /// Also dispatches the calloop loop every `interval`, for its timers.
    pub fn poll_every(mut self, interval: Duration) -> Calloop<Data> {
        self.poll_every = Some(interval);
        self.next_poll = Some(Instant::now() + interval);
        self
    }

    /// A handle to the calloop loop, to insert sources into it.
    pub fn handle(&self) -> ::calloop::LoopHandle<'static, Data> {
        self.event_loop.handle()
    }

    /// The shared data.
    pub fn data(&mut self) -> &mut Data {
        &mut self.data
    }

    /// Runs one calloop dispatch now, without blocking.
    pub fn dispatch_now(&mut self) -> io::Result<()> {
        self.event_loop
            .dispatch(Some(Duration::ZERO), &mut self.data)
            .map_err(io::Error::other)
    }

    /// Hands back the calloop loop and its data.
    pub fn into_inner(self) -> (::calloop::EventLoop<'static, Data>, Data) {
        (self.event_loop, self.data)
    }
}

impl<Data> fmt::Debug for Calloop<Data> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calloop")
            .field("poll_every", &self.poll_every)
            .finish_non_exhaustive()
    }
}

impl<Data: 'static> EventSource for Calloop<Data> {
    fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
        reg.watch(self.event_loop.as_fd(), Interest::READ, Trigger::Level);
        Ok(())
    }

    fn deadline(&mut self) -> Option<Instant> {
        self.next_poll
    }

    fn dispatch(&mut self, _event: Event) -> PostAction {
        if let Err(e) = self.dispatch_now() {
            tracing::error!(target: "oxloop", "calloop dispatch failed: {e}");
        }
        if let Some(interval) = self.poll_every {
            self.next_poll = Some(Instant::now() + interval);
        }
        PostAction::Continue
    }
}
