//! Handles to scheduled work: cancel it, or stop it from keeping `run()` going.

use super::signals::SignalId;
use super::{EventLoop, Inner};
use crate::timers::TimerId;
use std::fmt;
use std::rc::{Rc, Weak};

#[derive(Clone, Copy, Debug)]
pub(crate) enum HandleKind {
    /// A `call_soon` callback, by sequence number.
    Soon(u64),
    Timer(TimerId),
    Signal(SignalId),
    /// Returned by a destroyed loop: refers to nothing.
    Inert,
}

/// A callback scheduled on the loop (`call_soon`, `call_later`, `call_at`) or a signal
/// handler. Dropping it changes nothing; [`cancel`](Handle::cancel) removes the work.
///
/// Like the loop it is `!Send`: use it on the loop's thread.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Weak<Inner>,
    pub(crate) kind: HandleKind,
}

impl Handle {
    pub(crate) fn inert() -> Handle {
        Handle {
            inner: Weak::new(),
            kind: HandleKind::Inert,
        }
    }

    /// Cancels the callback (or removes the signal handler) unless it already ran.
    /// Returns whether there was something to cancel. The callback, and everything it
    /// captured, is dropped at once.
    pub fn cancel(&self) -> bool {
        match self.inner.upgrade() {
            Some(inner) => inner.cancel(self.kind),
            None => false,
        }
    }

    /// Whether the callback is still waiting to run (or the signal handler is installed).
    pub fn is_pending(&self) -> bool {
        match self.inner.upgrade() {
            Some(inner) => inner.is_pending(self.kind),
            None => false,
        }
    }

    /// Stops this timer or signal handler from keeping [`run`](crate::EventLoop::run)
    /// going (libuv's `uv_unref`). It still fires while the loop runs for other reasons.
    /// `call_soon` callbacks always run in the next iteration, so this changes nothing
    /// for them.
    pub fn unref(&self) {
        self.set_ref(false);
    }

    /// Sets whether this timer or signal handler keeps [`run`](crate::EventLoop::run)
    /// going (the default is `true`).
    pub fn set_ref(&self, referenced: bool) {
        if let Some(inner) = self.inner.upgrade() {
            inner.set_ref(self.kind, referenced);
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("kind", &self.kind)
            .field("pending", &self.is_pending())
            .finish()
    }
}

/// Keeps [`run`](crate::EventLoop::run) going while it exists, for work the loop cannot
/// see (a request handed to another thread, a source driven from outside).
pub struct KeepAlive {
    pub(crate) inner: Weak<Inner>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.state.borrow_mut().keep_alive -= 1;
        }
    }
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeepAlive")
    }
}

impl EventLoop {
    pub(super) fn handle(&self, kind: HandleKind) -> Handle {
        Handle {
            inner: Rc::downgrade(&self.inner),
            kind,
        }
    }

    /// Keeps [`run`](EventLoop::run) going until the returned guard is dropped.
    pub fn keep_alive(&self) -> KeepAlive {
        self.inner.state.borrow_mut().keep_alive += 1;
        KeepAlive {
            inner: Rc::downgrade(&self.inner),
        }
    }
}

impl Inner {
    fn cancel(&self, kind: HandleKind) -> bool {
        let mut state = self.state.borrow_mut();
        match kind {
            HandleKind::Soon(seq) => {
                let callback = state.ready.cancel(seq);
                drop(state);
                callback.is_some()
            }
            HandleKind::Timer(id) => {
                let callback = state.timers.cancel(id);
                drop(state);
                callback.is_some()
            }
            HandleKind::Signal(id) => {
                let (removed, callback) = state.signals.cancel(id);
                drop(state);
                drop(callback);
                removed
            }
            HandleKind::Inert => false,
        }
    }

    fn is_pending(&self, kind: HandleKind) -> bool {
        let state = self.state.borrow();
        match kind {
            HandleKind::Soon(seq) => state.ready.contains(seq),
            HandleKind::Timer(id) => state.timers.contains(id),
            HandleKind::Signal(id) => state.signals.contains(id),
            HandleKind::Inert => false,
        }
    }

    fn set_ref(&self, kind: HandleKind, referenced: bool) {
        let mut state = self.state.borrow_mut();
        match kind {
            HandleKind::Timer(id) => state.timers.set_referenced(id, referenced),
            HandleKind::Signal(id) => state.signals.set_referenced(id, referenced),
            HandleKind::Soon(_) | HandleKind::Inert => {}
        }
    }
}
