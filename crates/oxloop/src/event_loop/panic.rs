//! What happens when a callback panics.
//!
//! The loop catches the panic around every callback it runs and hands it to an
//! exception handler (asyncio's `set_exception_handler`). The default handler logs it
//! with `tracing` at ERROR level and the loop goes on. With
//! [`EventLoop::set_propagate_panics`](crate::EventLoop::set_propagate_panics) the panic
//! unwinds out of `run()` instead.

use std::any::Any;
use std::fmt;
use std::panic::Location;

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
