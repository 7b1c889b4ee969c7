//! Async sockets on the loop: TCP, UDP, Unix stream and datagram sockets, and DNS.
//!
//! Each type wraps the std socket in [`crate::io::Async`]. Stream types implement
//! `futures_io::AsyncRead`/`AsyncWrite` (and tokio's with the `tokio-io` feature).
//!
//! ```
//! use oxloop::net::{TcpListener, TcpStream};
//! use oxloop::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let ev = oxloop::EventLoop::new()?;
//! ev.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
//!     let addr = listener.local_addr()?;
//!     let server = oxloop::task::spawn(async move {
//!         let (mut conn, _) = listener.accept().await?;
//!         let mut buf = [0; 5];
//!         conn.read_exact(&mut buf).await?;
//!         conn.write_all(&buf).await?;
//!         Ok::<_, std::io::Error>(())
//!     });
//!     let mut client = TcpStream::connect(addr).await?;
//!     client.write_all(b"hello").await?;
//!     let mut echo = [0; 5];
//!     client.read_exact(&mut echo).await?;
//!     assert_eq!(&echo, b"hello");
//!     server.await??;
//!     Ok::<_, std::io::Error>(())
//! })??;
//! # Ok::<(), std::io::Error>(())
//! ```

mod dns;
mod tcp;
mod udp;
mod unix;

pub use dns::{lookup_addr, lookup_host};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};

/// A connected pair of async Unix stream sockets ([`UnixStream::pair`]).
pub fn socketpair() -> io::Result<(UnixStream, UnixStream)> {
    UnixStream::pair()
}

#[cfg(feature = "tls")]
pub mod tls;

use crate::io::Async;
use std::io;
use std::os::fd::AsFd;

/// Waits for a non-blocking `connect` started on `io` to finish and reports its result.
pub(crate) async fn finish_connect<T: AsFd>(io: &Async<T>) -> io::Result<()> {
    io.clear_writable();
    io.writable().await?;
    match socket2::SockRef::from(io.get_ref()).take_error()? {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Whether `connect` on a non-blocking socket is merely under way.
pub(crate) fn in_progress(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EINPROGRESS) || err.kind() == io::ErrorKind::WouldBlock
}
