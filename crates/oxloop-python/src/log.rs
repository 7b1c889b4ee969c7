//! `LogSink`: the outputs of `oxloop-log` (terminal, rotating file, batched and
//! rate-limited e-mail over SMTP sent by the loop) for Python's `oxloop.handlers.Log`.
//!
//! Python decides which messages pass its level and hands each one to [`LogSink::emit`],
//! which logs it as a `tracing` event to the sink's own subscriber (never the global
//! one). The e-mail is sent by the Rust loop under the Python `oxloop.Loop` given at
//! creation, so it only goes out while that loop runs, without blocking it.

use crate::loop_core::{os_error, LoopCore};
use oxloop_log::{EmailOptions, FileOptions, Log, LogError, LogGuard, Rotation, TlsRoots};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::time::Duration;
use tracing::Level;

/// The `tracing` target of the messages logged from Python.
const TARGET: &str = "python";

/// The outputs of one Python `Log`: made with every option at once, then fed
/// messages with `emit`. Belongs to the thread that made it (as its loop does).
#[pyclass(unsendable, module = "oxloop._oxloop")]
pub struct LogSink {
    guard: Option<LogGuard>,
}

fn level_of(level: u8) -> PyResult<Level> {
    Ok(match level {
        0 => Level::ERROR,
        1 => Level::WARN,
        2 => Level::INFO,
        3 => Level::DEBUG,
        4 => Level::TRACE,
        _ => return Err(PyValueError::new_err(format!("unknown log level {level}"))),
    })
}

fn seconds(what: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{what} must be a number of seconds >= 0")))
}

fn log_error(err: LogError) -> PyErr {
    match err {
        LogError::File { source, .. } => os_error(source),
        other => PyValueError::new_err(other.to_string()),
    }
}

#[pymethods]
impl LogSink {
    /// Starts the outputs: the terminal (stderr) if `terminal`, and a file in `file_dir`
    /// named after `file_prefix`, rotated `"daily"`, `"hourly"`, `"never"` or by
    /// `"size"` (`max_bytes`), keeping `max_files`; e-mail through `mail_server` when
    /// it is given (levels 0 ERROR to 4 TRACE; `mail_tls` is `"starttls"` or
    /// `"implicit"`, verified against `mail_ca_pem` or the Mozilla roots). The terminal
    /// and the file show what `level_filter` lets through (`"info"`, `"debug"`...).
    #[new]
    #[pyo3(signature = (
        event_loop, *, terminal=false, ansi=None, level_filter="trace",
        file_dir=None, file_prefix="log".to_string(), rotation="daily", max_bytes=0, max_files=None,
        mail_server=None, mail_port=25, mail_from=String::new(), mail_to=Vec::new(),
        mail_level=0, mail_subject=None, mail_interval=60.0, mail_gather=1.0, mail_timeout=30.0,
        mail_tls=None, mail_ca_pem=None, mail_credentials=None, mail_allow_insecure_auth=false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        event_loop: &Bound<'_, LoopCore>,
        terminal: bool,
        ansi: Option<bool>,
        level_filter: &str,
        file_dir: Option<PathBuf>,
        file_prefix: String,
        rotation: &str,
        max_bytes: u64,
        max_files: Option<usize>,
        mail_server: Option<String>,
        mail_port: u16,
        mail_from: String,
        mail_to: Vec<String>,
        mail_level: u8,
        mail_subject: Option<String>,
        mail_interval: f64,
        mail_gather: f64,
        mail_timeout: f64,
        mail_tls: Option<&str>,
        mail_ca_pem: Option<Vec<u8>>,
        mail_credentials: Option<(String, String)>,
        mail_allow_insecure_auth: bool,
    ) -> PyResult<Self> {
        let ev = event_loop.get().event_loop(py)?;
        let mut builder = Log::builder().terminal(terminal).filter(level_filter);
        if let Some(ansi) = ansi {
            builder = builder.ansi(ansi);
        }
        if let Some(dir) = file_dir {
            let rotation = match rotation {
                "daily" => Rotation::Daily,
                "hourly" => Rotation::Hourly,
                "never" => Rotation::Never,
                "size" => Rotation::Size(max_bytes),
                other => {
                    return Err(PyValueError::new_err(format!(
                        "rotation is \"daily\", \"hourly\", \"never\" or \"size\", not {other:?}"
                    )))
                }
            };
            let mut options = FileOptions::new(dir, file_prefix, rotation);
            if let Some(n) = max_files {
                options = options.max_files(n);
            }
            builder = builder.file(options);
        }
        if let Some(server) = mail_server {
            let mut options = EmailOptions::new(server, mail_port, mail_from, mail_to)
                .level(level_of(mail_level)?)
                .interval(seconds("the mail interval", mail_interval)?)
                .gather(seconds("the mail gathering delay", mail_gather)?)
                .timeout(seconds("the mail timeout", mail_timeout)?)
                .allow_insecure_auth(mail_allow_insecure_auth);
            if let Some(subject) = mail_subject {
                options = options.subject(subject);
            }
            let roots = || match mail_ca_pem.clone() {
                Some(pem) => TlsRoots::Pem(pem),
                None => TlsRoots::WebPki,
            };
            options = match mail_tls {
                None => options,
                Some("starttls") => options.starttls(roots()),
                Some("implicit") => options.implicit_tls(roots()),
                Some(other) => {
                    return Err(PyValueError::new_err(format!(
                        "mail_tls is \"starttls\" or \"implicit\", not {other:?}"
                    )))
                }
            };
            if let Some((user, password)) = mail_credentials {
                options = options.credentials(user, password);
            }
            // The mail is sent by Rust tasks, which find their loop as the thread's.
            ev.make_current().map_err(|_| {
                PyRuntimeError::new_err(
                    "the log's e-mail needs its loop to be the only oxloop loop alive on this thread",
                )
            })?;
            builder = builder.email(options);
        }
        let (_dispatch, guard) = builder.build(&ev).map_err(log_error)?;
        Ok(LogSink { guard: Some(guard) })
    }

    /// Logs `message` at `level` (0 ERROR, 1 WARN, 2 INFO, 3 DEBUG, 4 TRACE) to every
    /// output.
    fn emit(&self, level: u8, message: &str) -> PyResult<()> {
        let level = level_of(level)?;
        let guard = self.guard()?;
        tracing::dispatcher::with_default(guard.dispatch(), || match level {
            Level::ERROR => tracing::error!(target: TARGET, "{message}"),
            Level::WARN => tracing::warn!(target: TARGET, "{message}"),
            Level::INFO => tracing::info!(target: TARGET, "{message}"),
            Level::DEBUG => tracing::debug!(target: TARGET, "{message}"),
            _ => tracing::trace!(target: TARGET, "{message}"),
        });
        Ok(())
    }

    /// Messages waiting to be mailed (queued or in a mail being sent).
    fn mail_pending(&self) -> PyResult<usize> {
        Ok(self.guard()?.mail_pending())
    }

    /// Mails sent successfully so far.
    fn mails_sent(&self) -> PyResult<u64> {
        Ok(self.guard()?.mails_sent())
    }

    /// Starts sending the waiting messages now, ignoring the rate limit.
    fn send_mail_now(&self) -> PyResult<()> {
        self.guard()?.send_mail_now();
        Ok(())
    }

    /// Flushes the terminal and file writers and stops mailing (unsent messages are
    /// reported to the terminal and file). Later `emit` calls fail.
    fn close(&mut self) {
        self.guard = None;
    }
}

impl LogSink {
    fn guard(&self) -> PyResult<&LogGuard> {
        self.guard
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("this log is closed"))
    }
}
