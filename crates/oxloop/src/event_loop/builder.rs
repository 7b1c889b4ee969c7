//! Creating a loop with options: [`LoopBuilder`].

use super::EventLoop;
use crate::reactor::{Backend, BackendKind};
use std::io;

/// The environment variable that chooses the backend of loops whose builder does not:
/// `epoll`, `io_uring` or `portable`.
pub const BACKEND_VARIABLE: &str = "OXLOOP_BACKEND";

/// Options for a new loop; made by [`EventLoop::builder`].
///
/// ```
/// use oxloop::{BackendKind, EventLoop};
///
/// let ev = EventLoop::builder().backend(BackendKind::IoUring).build()?;
/// // io_uring if the kernel allows it, epoll otherwise (`backend_fallback` says why).
/// println!("{} {:?}", ev.backend(), ev.backend_fallback());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct LoopBuilder {
    backend: Option<BackendKind>,
}

impl LoopBuilder {
    /// Asks for a backend. Without this, `OXLOOP_BACKEND` decides, and without that,
    /// [`BackendKind::DEFAULT`]. A backend the system refuses (io_uring disabled by the
    /// `kernel.io_uring_disabled` sysctl or a seccomp filter, or not built here) falls
    /// back to the default one: see [`EventLoop::backend_fallback`].
    pub fn backend(mut self, kind: BackendKind) -> LoopBuilder {
        self.backend = Some(kind);
        self
    }

    /// Creates the current thread's loop, as [`EventLoop::new`] does.
    pub fn build(self) -> io::Result<EventLoop> {
        EventLoop::register_current(|| self.build_detached())
    }

    /// Creates a loop that is not the current thread's, as
    /// [`EventLoop::new_detached`] does.
    pub fn build_detached(self) -> io::Result<EventLoop> {
        let (backend, fallback) = self.open_backend()?;
        EventLoop::with_backend(backend, fallback)
    }

    /// The backend asked for, or the default one and the reason it was not had.
    fn open_backend(&self) -> io::Result<(Backend, Option<String>)> {
        let (wanted, asked) = match self.backend {
            Some(kind) => (kind, String::from("the loop's builder")),
            None => match std::env::var(BACKEND_VARIABLE) {
                Ok(name) => match BackendKind::from_name(&name) {
                    Some(kind) => (kind, format!("{BACKEND_VARIABLE}={name}")),
                    None => {
                        let reason = format!(
                            "{BACKEND_VARIABLE}={name:?} names no backend; using the default"
                        );
                        tracing::warn!("{reason}");
                        return Ok((Backend::new(BackendKind::DEFAULT)?, Some(reason)));
                    }
                },
                Err(_) => return Ok((Backend::new(BackendKind::DEFAULT)?, None)),
            },
        };
        match Backend::new(wanted) {
            Ok(backend) => Ok((backend, None)),
            Err(e) if wanted != BackendKind::DEFAULT => {
                let reason = format!(
                    "{wanted} (asked for by {asked}) is not available: {e}; using {}",
                    BackendKind::DEFAULT
                );
                tracing::info!("{reason}");
                Ok((Backend::new(BackendKind::DEFAULT)?, Some(reason)))
            }
            Err(e) => Err(e),
        }
    }
}
