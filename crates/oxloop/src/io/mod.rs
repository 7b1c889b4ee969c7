//! Non-blocking I/O for tasks: readiness futures for any fd, pipes, socket pairs and
//! line-buffered reading.
//!
//! - [`Async`] turns any fd-owning value into readiness futures; the network types in
//!   [`crate::net`] are built on it.
//! - [`pipe`] creates a connected pair of async pipe ends (and
//!   [`crate::net::socketpair`] a pair of sockets).
//! - [`BufReader`] reads lines with a hard length limit.
//!
//! Streams implement `futures_io::AsyncRead`/`AsyncWrite` (use the extension traits
//! re-exported here, [`AsyncReadExt`] and [`AsyncWriteExt`]); with the `tokio-io`
//! feature they also implement tokio's traits, so tokio-util codecs and hyper run on
//! oxloop.

mod async_fd;
mod buf_reader;
mod pipe;
pub(crate) mod stream;

pub use async_fd::Async;
pub use buf_reader::{BufReader, Lines, DEFAULT_MAX_LINE};
pub use futures_util::io::{AsyncReadExt, AsyncWriteExt};
pub use pipe::{pipe, PipeReader, PipeWriter};
