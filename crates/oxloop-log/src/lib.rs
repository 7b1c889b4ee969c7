//! Logging for oxloop programs, built on `tracing`: the terminal, a rotating file and
//! rate-limited e-mail, configured by one call.
//!
//! ```no_run
//! use oxloop::EventLoop;
//! use oxloop_log::{EmailOptions, FileOptions, Log};
//!
//! let ev = EventLoop::new()?;
//! let _guard = Log::builder()
//!     .terminal(true) // level from OXLOOP_LOG (RUST_LOG syntax), "info" when unset
//!     .file(FileOptions::daily("/var/log/myapp", "myapp"))
//!     .email(EmailOptions::new("smtp.example.com", 587, "app@example.com", ["ops@example.com"]))
//!     .init(&ev)?;
//! tracing::error!("disk full"); // terminal + file now, e-mail within a minute
//! ev.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - terminal: human format on stderr, written by a background thread;
//! - file: [`FileOptions`], daily/hourly rotation (tracing-appender) or size rotation,
//!   written by a background thread so the loop never waits for the disk;
//! - e-mail: [`EmailOptions`]; events at ERROR (configurable) are batched and sent at
//!   most once per interval by an SMTP client that runs on the event loop (non-blocking
//!   socket, optional STARTTLS and AUTH). A failure to mail is logged to the terminal
//!   and file; it never affects them.
//!
//! [`LogGuard`] flushes the background writers when dropped.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod email;
mod error;
mod file;
mod filter;
mod format;

pub use email::{AuthMechanism, EmailOptions, TlsRoots};
pub use error::LogError;
pub use file::{FileOptions, Rotation};
pub use filter::{parse_filter, ENV_VAR};

#[doc(hidden)]
pub mod fuzz {
    //! Entry points for fuzzing the SMTP reply parser (`fuzz/`).
    pub use crate::email::fuzz_replies;
}

use oxloop::EventLoop;
use std::io::IsTerminal;
use std::rc::Rc;
use tracing::Dispatch;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// The `tracing` target of the messages this crate logs about itself (SMTP failures,
/// lost lines). Events with this target are never e-mailed.
pub const INTERNAL_TARGET: &str = "oxloop_log";

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// Entry point: [`Log::builder`].
#[derive(Debug)]
pub struct Log;

impl Log {
    /// A builder with every output off; enable the ones you want.
    pub fn builder() -> LogBuilder {
        LogBuilder::default()
    }
}

/// Configures the outputs; finish with [`LogBuilder::init`] (process-wide) or
/// [`LogBuilder::build`] (a [`Dispatch`] to install yourself).
#[derive(Debug, Default)]
pub struct LogBuilder {
    terminal: bool,
    ansi: Option<bool>,
    filter: Option<String>,
    file: Option<FileOptions>,
    email: Option<EmailOptions>,
}

impl LogBuilder {
    /// Writes human-readable lines to stderr.
    pub fn terminal(mut self, on: bool) -> Self {
        self.terminal = on;
        self
    }

    /// Forces colours on the terminal on or off (default: on when stderr is a terminal).
    pub fn ansi(mut self, on: bool) -> Self {
        self.ansi = Some(on);
        self
    }

    /// Uses these directives (RUST_LOG syntax, e.g. `"info,oxloop=debug"`) for the
    /// terminal and the file instead of reading the `OXLOOP_LOG` variable.
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = Some(directives.into());
        self
    }

    /// Writes to a file (see [`FileOptions`]).
    pub fn file(mut self, options: FileOptions) -> Self {
        self.file = Some(options);
        self
    }

    /// Sends events at or above the configured level by e-mail (see [`EmailOptions`]).
    pub fn email(mut self, options: EmailOptions) -> Self {
        self.email = Some(options);
        self
    }

    /// Builds the subscriber and installs it as the process-wide default.
    ///
    /// Fails on bad filter directives, a file that cannot be opened, invalid e-mail
    /// options, or when a global subscriber is already installed.
    pub fn init(self, ev: &EventLoop) -> Result<LogGuard, LogError> {
        let (dispatch, guard) = self.build(ev)?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|_| LogError::AlreadyInstalled)?;
        Ok(guard)
    }

    /// Builds the subscriber without installing it: use
    /// [`tracing::dispatcher::set_default`] or [`tracing::dispatcher::with_default`].
    /// E-mail is sent by `ev`, which must belong to the calling thread.
    pub fn build(self, ev: &EventLoop) -> Result<(Dispatch, LogGuard), LogError> {
        let directives = match self.filter {
            Some(d) => d,
            None => filter::from_env()?,
        };
        // Parse once up front so a bad string is reported even if no output uses it.
        parse_filter(&directives)?;

        let mut layers: Vec<BoxedLayer> = Vec::new();
        let mut workers = Vec::new();
        let mut counters = Vec::new();

        if self.terminal {
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(false)
                .thread_name("oxloop-log-terminal")
                .finish(std::io::stderr());
            let ansi = self.ansi.unwrap_or_else(|| std::io::stderr().is_terminal());
            layers.push(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_filter(parse_filter(&directives)?)
                    .boxed(),
            );
            workers.push(guard);
        }

        if let Some(options) = &self.file {
            let (writer, guard) = file::open(options)?;
            counters.push((options.describe(), writer.error_counter()));
            layers.push(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_filter(parse_filter(&directives)?)
                    .boxed(),
            );
            workers.push(guard);
        }

        let mut pending_mailer = None;
        if let Some(options) = self.email {
            let (layer, mailer) = email::setup(options, ev)?;
            layers.push(layer);
            pending_mailer = Some(mailer);
        }

        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layers));
        let mailer = pending_mailer.map(|m| m.start(dispatch.clone()));
        Ok((
            dispatch.clone(),
            LogGuard {
                dispatch,
                mailer,
                counters,
                workers,
            },
        ))
    }
}

/// Keeps the outputs working; dropping it flushes the terminal and file writers
/// (waiting up to about a second) and stops the e-mail sender.
///
/// Events that were never mailed (the loop did not run long enough, the server was
/// unreachable) and lines dropped by a lossy file writer are reported through the
/// terminal and file outputs on drop. Like the loop, the guard belongs to the loop's
/// thread.
#[must_use = "dropping the guard stops the background writers"]
pub struct LogGuard {
    dispatch: Dispatch,
    mailer: Option<Rc<email::Mailer>>,
    counters: Vec<(String, ErrorCounter)>,
    workers: Vec<WorkerGuard>,
}

impl LogGuard {
    /// Events waiting to be mailed (queued or in a mail being sent).
    pub fn mail_pending(&self) -> usize {
        self.mailer.as_ref().map_or(0, |m| m.pending())
    }

    /// Mails sent successfully so far.
    pub fn mails_sent(&self) -> u64 {
        self.mailer.as_ref().map_or(0, |m| m.sent())
    }

    /// Starts sending the pending events now, ignoring the rate limit (for a clean
    /// shutdown: call it, then run the loop until it has no work left). Does nothing when
    /// a mail is already being sent; the events queued meanwhile follow after it.
    pub fn send_mail_now(&self) {
        if let Some(m) = &self.mailer {
            m.send_now();
        }
    }

    /// Lines the lossy file writer had to drop because its buffer was full.
    pub fn dropped_lines(&self) -> usize {
        self.counters.iter().map(|(_, c)| c.dropped_lines()).sum()
    }

    /// The subscriber this guard belongs to.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        tracing::dispatcher::with_default(&self.dispatch, || {
            if let Some(mailer) = self.mailer.take() {
                let unsent = mailer.shutdown();
                if unsent > 0 {
                    tracing::warn!(
                        target: INTERNAL_TARGET,
                        "{unsent} event(s) were logged but not e-mailed before shutdown"
                    );
                }
            }
            for (what, counter) in &self.counters {
                let n = counter.dropped_lines();
                if n > 0 {
                    tracing::warn!(
                        target: INTERNAL_TARGET,
                        "{n} line(s) were dropped by the lossy writer of {what}"
                    );
                }
            }
        });
        // The worker guards drop now, after the messages above were queued.
        self.workers.clear();
    }
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("writers", &self.workers.len())
            .field("email", &self.mailer.is_some())
            .finish()
    }
}
