//! What happens when a callback panics.
//!
//! The loop catches the panic around every callback it runs and hands it to an
//! exception handler (asyncio's `set_exception_handler`). The default handler logs it
//! with `tracing` at ERROR level and the loop goes on. With
//! [`EventLoop::set_propagate_panics`](crate::EventLoop::set_propagate_panics) the panic
//! unwinds out of `run()` instead.

use super::{debug, EventLoop};
use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};

/// The exception handler a loop keeps.
pub(super) type PanicHandler = Box<dyn FnMut(CallbackPanic) + 'static>;

/// A panic caught while the loop ran a callback.
pub struct CallbackPanic {
    payload: Box<dyn Any + Send + 'static>,
    origin: Option<&'static Location<'static>>,
}

impl CallbackPanic {
    pub(crate) fn new(payload: Box<dyn Any + Send + 'static>) -> CallbackPanic {
        CallbackPanic {
            payload,
            origin: None,
        }
    }

    /// Attaches where the failing work was scheduled.
    pub(crate) fn with_origin(mut self, origin: Option<&'static Location<'static>>) -> Self {
        self.origin = origin;
        self
    }

    /// Where the callback or task was scheduled (`call_soon`, `spawn`…), known in debug
    /// mode (see [`EventLoop::set_debug`](crate::EventLoop::set_debug)).
    pub fn origin(&self) -> Option<&'static Location<'static>> {
        self.origin
    }

    /// The panic message, when the payload is a string (as with `panic!("...")`).
    pub fn message(&self) -> &str {
        if let Some(s) = self.payload.downcast_ref::<&'static str>() {
            s
        } else if let Some(s) = self.payload.downcast_ref::<String>() {
            s
        } else {
            "<non-string panic payload>"
        }
    }

    /// The raw payload, e.g. to resume unwinding with `std::panic::resume_unwind`.
    pub fn into_payload(self) -> Box<dyn Any + Send + 'static> {
        self.payload
    }
}

impl fmt::Debug for CallbackPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackPanic")
            .field("message", &self.message())
            .field("origin", &self.origin)
            .finish()
    }
}

impl fmt::Display for CallbackPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "callback panicked: {}", self.message())?;
        if let Some(origin) = self.origin {
            write!(f, " (scheduled at {origin})")?;
        }
        Ok(())
    }
}

/// The exception handler used until one is set: log and continue.
pub(crate) fn log_panic(panic: CallbackPanic) {
    tracing::error!(target: "oxloop", "{panic}");
}

impl EventLoop {
    /// Sets the function that receives panics caught in callbacks (the default logs
    /// them with `tracing` at ERROR level). The loop keeps running after it returns.
    pub fn set_exception_handler(&self, handler: impl FnMut(CallbackPanic) + 'static) {
        let old = self
            .inner
            .state
            .borrow_mut()
            .panic_handler
            .replace(Box::new(handler));
        drop(old);
    }

    /// When `true`, a panicking callback unwinds out of `run`/`run_once` instead of
    /// going to the exception handler.
    pub fn set_propagate_panics(&self, propagate: bool) {
        self.inner.state.borrow_mut().propagate_panics = propagate;
    }

    /// Runs a callback, catching a panic and handing it to the exception handler.
    pub(super) fn guarded(&self, f: impl FnOnce()) {
        self.inner
            .callbacks_run
            .set(self.inner.callbacks_run.get() + 1);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            self.report_panic(payload);
            // The traced wrapper (debug mode) did not get to restore it.
            debug::clear_origin();
        }
    }

    pub(crate) fn report_panic(&self, payload: Box<dyn std::any::Any + Send>) {
        let (handler, propagate) = {
            let mut state = self.inner.state.borrow_mut();
            (state.panic_handler.take(), state.propagate_panics)
        };
        if propagate {
            self.restore_panic_handler(handler);
            resume_unwind(payload);
        }
        let panic = CallbackPanic::new(payload).with_origin(debug::current_origin());
        match handler {
            Some(mut handler) => {
                if catch_unwind(AssertUnwindSafe(|| handler(panic))).is_err() {
                    tracing::error!(target: "oxloop", "the exception handler itself panicked");
                }
                self.restore_panic_handler(Some(handler));
            }
            None => log_panic(panic),
        }
    }

    fn restore_panic_handler(&self, handler: Option<PanicHandler>) {
        let mut state = self.inner.state.borrow_mut();
        if state.panic_handler.is_none() && !self.inner.destroyed.get() {
            state.panic_handler = handler;
        }
    }
}
