//! Waking a sleeping poller: an `eventfd` on Linux, a non-blocking socket pair elsewhere.
//!
//! The read side is registered with the poller; writing to the write side makes the
//! poller's wait return. The signal handler writes to the same fd (see `signal`).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

/// The 8 bytes written per wake-up: an `eventfd` needs exactly a native-endian `u64`.
pub(crate) const WAKE_BYTES: [u8; 8] = 1u64.to_ne_bytes();

/// A wake-up fd pair.
#[derive(Debug)]
pub(crate) struct Waker {
    #[cfg(target_os = "linux")]
    fd: std::fs::File,
    #[cfg(not(target_os = "linux"))]
    read: std::os::unix::net::UnixStream,
    #[cfg(not(target_os = "linux"))]
    write: std::os::unix::net::UnixStream,
}

impl Waker {
    #[cfg(target_os = "linux")]
    pub fn new() -> io::Result<Waker> {
        use rustix::event::{eventfd, EventfdFlags};
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Waker { fd: fd.into() })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new() -> io::Result<Waker> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Waker { read, write })
    }

    /// The fd the poller watches for readability.
    pub fn read_fd(&self) -> RawFd {
        #[cfg(target_os = "linux")]
        return self.fd.as_raw_fd();
        #[cfg(not(target_os = "linux"))]
        return self.read.as_raw_fd();
    }

    /// The fd a wake-up is written to (also used by the signal handler).
    pub fn write_fd(&self) -> RawFd {
        #[cfg(target_os = "linux")]
        return self.fd.as_raw_fd();
        #[cfg(not(target_os = "linux"))]
        return self.write.as_raw_fd();
    }

    /// Makes the poller's wait return. A full counter or buffer already means "awake".
    pub fn wake(&self) {
        #[cfg(target_os = "linux")]
        let _ = (&self.fd).write(&WAKE_BYTES);
        #[cfg(not(target_os = "linux"))]
        let _ = (&self.write).write(&WAKE_BYTES);
    }

    /// Consumes pending wake-ups so the fd stops being readable.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        #[cfg(target_os = "linux")]
        let mut source = &self.fd;
        #[cfg(not(target_os = "linux"))]
        let mut source = &self.read;
        while let Ok(n) = source.read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }
}
