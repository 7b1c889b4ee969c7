//! The error returned when the logging configuration cannot be applied.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why [`LogBuilder::init`](crate::LogBuilder::init) or
/// [`LogBuilder::build`](crate::LogBuilder::build) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    /// The filter directives do not parse.
    Filter {
        /// The directives as given.
        directives: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The `OXLOOP_LOG` variable is set but is not valid Unicode.
    FilterNotUnicode,
    /// The log file or its directory cannot be created or opened.
    File {
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The file options are invalid (e.g. a zero size limit).
    FileOptions(String),
    /// The e-mail options are invalid (bad address, no recipient, bad certificate...).
    Email(String),
    /// A process-wide subscriber is already installed.
    AlreadyInstalled,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Filter { directives, reason } => {
                write!(f, "invalid log filter {directives:?}: {reason}")
            }
            LogError::FilterNotUnicode => {
                write!(f, "the {} variable is not valid Unicode", crate::ENV_VAR)
            }
            LogError::File { path, source } => {
                write!(f, "cannot open log file {}: {source}", path.display())
            }
            LogError::FileOptions(why) => write!(f, "invalid file options: {why}"),
            LogError::Email(why) => write!(f, "invalid e-mail options: {why}"),
            LogError::AlreadyInstalled => {
                f.write_str("a global tracing subscriber is already installed")
            }
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::File { source, .. } => Some(source),
            _ => None,
        }
    }
}
