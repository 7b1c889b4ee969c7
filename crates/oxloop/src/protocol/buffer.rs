//! The shared read buffer and the per-connection write buffer.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::IoSlice;

/// Size of the read buffer shared by every transport of a thread.
pub(crate) const READ_BUFFER_SIZE: usize = 64 * 1024;

thread_local! {
    /// One read buffer per thread (hence per loop): idle connections hold none.
    static READ_BUFFER: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// Runs `f` with the thread's read buffer. The buffer is taken out while `f` runs; a
/// nested call (a protocol that drives another loop from `data_received`) gets a fresh
/// one instead of aliasing it.
pub(crate) fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = READ_BUFFER
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0u8; READ_BUFFER_SIZE].into_boxed_slice());
    let result = f(&mut buf);
    let _ = READ_BUFFER.try_with(|cell| cell.set(Some(buf)));
    result
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
    fn read_buffer_is_reused() {
        let a = with_read_buffer(|b| b.as_ptr() as usize);
        let b = with_read_buffer(|b| b.as_ptr() as usize);
        assert_eq!(a, b);
        let nested = with_read_buffer(|outer| {
            let outer = outer.as_ptr() as usize;
            with_read_buffer(|inner| inner.as_ptr() as usize != outer)
        });
        assert!(nested);
    }
}
