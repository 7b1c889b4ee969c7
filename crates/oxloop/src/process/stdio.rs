//! The child's piped stdin, stdout and stderr as async pipe ends.

use crate::io::{PipeReader, PipeWriter};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Defines a newtype over an async pipe end with the read traits.
macro_rules! reader {
    ($(#[$doc:meta])* $name:ident, $std:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(PipeReader);

        impl $name {
            /// Registers std's handle with the current thread's loop.
            pub fn from_std(s: $std) -> io::Result<$name> {
                let fd = OwnedFd::from(s);
                Ok($name(PipeReader::from_std(std::io::PipeReader::from(fd))?))
            }
        }

        impl futures_io::AsyncRead for $name {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.0).poll_read(cx, buf)
            }
        }

        #[cfg(feature = "tokio-io")]
        impl tokio::io::AsyncRead for $name {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, buf)
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.0.as_raw_fd()
            }
        }
    };
}

reader!(
    /// The read end of a child's stdout. Implements `futures_io::AsyncRead`.
    ChildStdout,
    std::process::ChildStdout
);
reader!(
    /// The read end of a child's stderr. Implements `futures_io::AsyncRead`.
    ChildStderr,
    std::process::ChildStderr
);

/// The write end of a child's stdin. Implements `futures_io::AsyncWrite`; closing or
/// dropping it gives the child end of file.
#[derive(Debug)]
pub struct ChildStdin(PipeWriter);

impl ChildStdin {
    /// Registers std's handle with the current thread's loop.
    pub fn from_std(s: std::process::ChildStdin) -> io::Result<ChildStdin> {
        let fd = OwnedFd::from(s);
        Ok(ChildStdin(PipeWriter::from_std(
            std::io::PipeWriter::from(fd),
        )?))
    }
}

impl futures_io::AsyncWrite for ChildStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(feature = "tokio-io")]
impl tokio::io::AsyncWrite for ChildStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}
