//! The shared read buffer and the per-connection write buffer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
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

    /// Runs `f` with the buffer. A nested use (a protocol that drives another loop
    /// from inside `data_received`) gets a temporary buffer instead of aliasing it.
    pub fn with<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        match self.buf.try_borrow_mut() {
            Ok(mut buf) => f(&mut buf),
            Err(_) => f(&mut vec![0u8; READ_BUFFER_SIZE]),
        }
    }
}

/// Chunks larger than this are stored on their own; smaller writes are appended to the
/// last chunk while it has room, so many small writes make few `iovec`s.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The most `iovec`s handed to one `sendmsg`.
pub(crate) const MAX_IOVECS: usize = 64;

/// Bytes accepted by a transport but not yet taken by the kernel.
#[derive(Default)]
pub(crate) struct WriteBuffer {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already sent.
    offset: usize,
    len: usize,
}

impl WriteBuffer {
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
        if let Some(last) = self.chunks.back_mut() {
            if last.len() + data.len() <= COALESCE_LIMIT.max(last.capacity()) {
                last.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(data.to_vec());
    }

    /// Fills `slices` with the pending bytes, front first; returns how many were set.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            if n == slices.len() {
                break;
            }
            let start = if i == 0 { self.offset } else { 0 };
            slices[n] = IoSlice::new(&chunk[start..]);
            n += 1;
        }
        n
    }

    /// Drops the first `n` pending bytes (they were sent).
    pub fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n;
        while n > 0 {
            let front = self.chunks.front().expect("consumed more than buffered");
            let left = front.len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.chunks.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
        if self.chunks.is_empty() {
            // Give the memory back: an idle connection holds no buffer.
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
