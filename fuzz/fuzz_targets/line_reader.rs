//! `oxloop::io::BufReader` reading lines with a length limit from a reader that hands
//! out the input in pieces of fuzzer-chosen sizes: every line matches a plain split of
//! the input at `\n`, and a line over the limit is an `InvalidData` error, never a
//! truncated or merged line.
#![no_main]

use futures_util::FutureExt;
use oxloop::io::BufReader;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Reads `data`, at most `pieces[i]` bytes on the i-th read (cycling).
struct Pieces<'a> {
    data: &'a [u8],
    pieces: &'a [u8],
    reads: usize,
}

impl futures_io::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let piece = match self.pieces.len() {
            0 => usize::MAX,
            n => usize::from(self.pieces[self.reads % n]).max(1),
        };
        self.reads += 1;
        let n = piece.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    // Byte 0: the line limit; byte 1: the buffer size; then the piece sizes up to a 0
    // byte, then the stream.
    if input.len() < 2 {
        return;
    }
    let max_len = usize::from(input[0]).max(1);
    let capacity = usize::from(input[1]).max(1);
    let rest = &input[2..];
    let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (pieces, data) = (&rest[..cut], rest.get(cut + 1..).unwrap_or(&[]));
    let reader = Pieces {
        data,
        pieces,
        reads: 0,
    };
    let mut reader = BufReader::with_capacity(capacity, reader);
    let mut expected = data.split_inclusive(|&b| b == b'\n');
    loop {
        let mut line = Vec::new();
        let got = reader
            .read_until_newline(&mut line, max_len)
            .now_or_never()
            .expect("an in-memory reader is always ready");
        let Some(want) = expected.next() else {
            assert!(matches!(got, Ok(0)), "a line after the end: {got:?}");
            break;
        };
        match got {
            Ok(n) => {
                assert_eq!(n, line.len());
                assert_eq!(line, want, "a line differs from the plain split");
                assert!(n <= max_len);
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert!(want.len() > max_len, "a line within the limit was refused");
                // The reader skips what it looked at; the rest of the line follows
                // as if it were a line of its own, so stop comparing here.
                break;
            }
        }
    }
});
