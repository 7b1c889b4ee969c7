//! The shared read buffer and the per-connection write buffer.

use socket2::SockRef;
use std::cell::{RefCell, RefMut};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};

/// Size of the read buffer shared by every transport of a thread.
pub(crate) const READ_BUFFER_SIZE: usize = 64 * 1024;

/// The read buffer shared by every transport of a thread (hence of its loop): idle
/// connections hold only a pointer to it. It is freed when the last transport using
/// it is gone.
pub(crate) struct ReadBuffer {
    buf: RefCell<Box<[u8]>>,
}

thread_local! {
    static SHARED: RefCell<Weak<ReadBuffer>> = const { RefCell::new(Weak::new()) };
}

impl ReadBuffer {
    /// The thread's shared buffer (created on first use).
    pub fn shared() -> Rc<ReadBuffer> {
        SHARED.with(|cell| {
            if let Some(buf) = cell.borrow().upgrade() {
                return buf;
            }
            let buf = Rc::new(ReadBuffer {
                buf: RefCell::new(vec![0u8; READ_BUFFER_SIZE].into_boxed_slice()),
            });
            *cell.borrow_mut() = Rc::downgrade(&buf);
            buf
        })
    }

    /// The buffer, unless it is in use further up the stack (then a caller reads into
    /// a [`temporary`](Self::temporary) one instead of aliasing it).
    #[inline(always)]
    pub fn try_borrow(&self) -> Option<RefMut<'_, Box<[u8]>>> {
        self.buf.try_borrow_mut().ok()
    }

    /// A buffer of the same size for a nested read.
    pub fn temporary() -> Box<[u8]> {
        vec![0u8; READ_BUFFER_SIZE].into_boxed_slice()
    }

    /// Runs `f` with the buffer. A nested use (a protocol that drives another loop
    /// from inside `data_received`) gets a temporary buffer instead of aliasing it.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        match self.buf.try_borrow_mut() {
            Ok(mut buf) => f(&mut buf),
            Err(_) => with_temporary(f),
        }
    }
}

/// [`ReadBuffer::with`] when the shared buffer is in use: out of line, so the common
/// path inlines `f`.
#[cold]
#[inline(never)]
fn with_temporary<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    f(&mut ReadBuffer::temporary())
}

/// Chunks larger than this are stored on their own; smaller writes are appended to the
/// last chunk while it has room, so many small writes make few `iovec`s.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The most `iovec`s handed to one `sendmsg`.
pub(crate) const MAX_IOVECS: usize = 64;

/// One piece of pending output.
enum Chunk {
    Bytes(Vec<u8>),
    /// `left` bytes of `file` from `offset`, sent with `sendfile(2)` where available.
    File {
        file: File,
        offset: u64,
        left: u64,
    },
}

/// Output accepted by a transport but not yet taken by the kernel: bytes, and file
/// ranges sent without passing through user space, in the order they were written.
#[derive(Default)]
pub(crate) struct WriteBuffer {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent (a bytes chunk; a file chunk keeps its own
    /// offset).
    offset: usize,
    len: usize,
}

impl WriteBuffer {
    /// Pending bytes, file ranges included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(Chunk::Bytes(last)) = self.chunks.back_mut() {
            if last.len() + data.len() <= COALESCE_LIMIT.max(last.capacity()) {
                last.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(Chunk::Bytes(data.to_vec()));
    }

    /// Queues `len` bytes of `file` from `offset`.
    pub fn push_file(&mut self, file: File, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.len = self
            .len
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        self.chunks.push_back(Chunk::File {
            file,
            offset,
            left: len,
        });
    }

    /// The file range at the front, if the front is one: `(file, offset, bytes left)`.
    pub fn front_file(&self) -> Option<(&File, u64, u64)> {
        match self.chunks.front()? {
            Chunk::File { file, offset, left } => Some((file, *offset, *left)),
            Chunk::Bytes(_) => None,
        }
    }

    /// Fills `slices` with the pending bytes up to the first file range, front first;
    /// returns how many were set.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            if n == slices.len() {
                break;
            }
            let Chunk::Bytes(bytes) = chunk else { break };
            let start = if i == 0 { self.offset } else { 0 };
            slices[n] = IoSlice::new(&bytes[start..]);
            n += 1;
        }
        n
    }

    /// Drops the first `n` pending bytes (they were sent).
    pub fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n;
        while n > 0 {
            let front = self
                .chunks
                .front_mut()
                .expect("consumed more than buffered");
            match front {
                Chunk::Bytes(bytes) => {
                    let left = bytes.len() - self.offset;
                    if n >= left {
                        n -= left;
                        self.offset = 0;
                        self.chunks.pop_front();
                    } else {
                        self.offset += n;
                        n = 0;
                    }
                }
                Chunk::File { offset, left, .. } => {
                    let sent = (n as u64).min(*left);
                    *offset += sent;
                    *left -= sent;
                    n -= sent as usize;
                    if *left == 0 {
                        self.chunks.pop_front();
                    }
                }
            }
        }
        if self.chunks.is_empty() {
            // Give the memory back: an idle connection holds no buffer.
            self.chunks = VecDeque::new();
        }
    }
}

/// Sends up to `left` bytes of `file` from `offset` on `sock` without blocking:
/// `sendfile(2)` on Linux, a positioned read and a send elsewhere or for files
/// `sendfile` refuses (some special file systems). `Ok(0)` means the file ended
/// before `offset + left`.
pub(crate) fn send_file(sock: &OwnedFd, file: &File, offset: u64, left: u64) -> io::Result<usize> {
    // At most 1 GiB per call, well below every kernel's limit.
    let count = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let sent = SockRef::from(sock).sendfile(file, start, std::num::NonZeroUsize::new(count));
        match sent {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
            other => return other,
        }
    }
    send_file_by_copy(sock, file, offset, count)
}

/// [`send_file`] without `sendfile(2)`: up to 64 KiB read at `offset`, then sent.
fn send_file_by_copy(sock: &OwnedFd, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut chunk = vec![0u8; count.min(64 * 1024)];
    let n = file.read_at(&mut chunk, offset)?;
    if n == 0 {
        return Ok(0);
    }
    super::send::send(sock, &chunk[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ranges_keep_their_place() {
        let path = std::env::temp_dir().join(format!("oxloop-buffer-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let mut buf = WriteBuffer::default();
        buf.push(b"ab");
        buf.push_file(File::open(&path).unwrap(), 3, 4);
        buf.push(b"cd");
        assert_eq!(buf.len(), 8);
        assert_eq!(flatten(&buf), b"ab", "bytes stop at the file range");
        assert!(buf.front_file().is_none());
        buf.consume(2);
        assert_eq!(buf.front_file().map(|(_, o, l)| (o, l)), Some((3, 4)));
        assert_eq!(flatten(&buf), b"");
        buf.consume(3);
        assert_eq!(buf.front_file().map(|(_, o, l)| (o, l)), Some((6, 1)));
        buf.consume(1);
        assert!(buf.front_file().is_none());
        assert_eq!(flatten(&buf), b"cd");
        buf.consume(2);
        assert!(buf.is_empty());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn both_ways_of_sending_a_file_range() {
        use std::io::Read;
        let path = std::env::temp_dir().join(format!("oxloop-sendfile-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = OwnedFd::from(a);
        assert_eq!(send_file(&a, &file, 2, 3).unwrap(), 3);
        assert_eq!(send_file_by_copy(&a, &file, 5, 100).unwrap(), 5);
        assert_eq!(send_file(&a, &file, 10, 4).unwrap(), 0, "past the end");
        assert_eq!(
            send_file_by_copy(&a, &file, 10, 4).unwrap(),
            0,
            "past the end"
        );
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"23456789");
        std::fs::remove_file(&path).unwrap();
    }

    fn flatten(buf: &WriteBuffer) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = buf.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn push_consume_keeps_order() {
        let mut buf = WriteBuffer::default();
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let piece: Vec<u8> = (0..(i * 37 % 5000)).map(|j| (i + j) as u8).collect();
            buf.push(&piece);
            expected.extend_from_slice(&piece);
            if i % 3 == 0 {
                let n = (i as usize * 101) % (buf.len() + 1);
                buf.consume(n);
                expected.drain(..n);
            }
            assert_eq!(buf.len(), expected.len());
        }
        while !buf.is_empty() {
            let flat = flatten(&buf);
            assert_eq!(flat[..], expected[..flat.len()]);
            let n = flat.len().min(7000);
            buf.consume(n);
            expected.drain(..n);
        }
        assert!(expected.is_empty());
        assert_eq!(buf.chunks.capacity(), 0);
    }

    #[test]
    fn read_buffer_is_shared_and_freed() {
        let a = ReadBuffer::shared();
        let b = ReadBuffer::shared();
        assert!(Rc::ptr_eq(&a, &b));
        let outer = a.with(|buf| buf.as_ptr() as usize);
        let nested = a.with(|o| b.with(|i| i.as_ptr() != o.as_ptr()));
        assert!(nested);
        assert_eq!(outer, a.with(|buf| buf.as_ptr() as usize));
        drop((a, b));
        assert!(SHARED.with(|cell| cell.borrow().upgrade().is_none()));
    }
}
