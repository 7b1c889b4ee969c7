//! Property tests of the stream transport's write path, through the public API on a
//! real Unix socket pair whose send buffer is small and whose reader is slow: random
//! writes (bytes and file ranges, small and large) and pauses, then `close`,
//! `write_eof` or `abort`. What the peer reads is exactly what was written, in order;
//! after `abort` it is a prefix that holds at least everything the transport had
//! handed to the kernel (the rest was reported as buffered when the abort came).

use oxloop::protocol::{Protocol, Transport};
use oxloop::EventLoop;
use proptest::prelude::*;
use socket2::Socket;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    WriteFile {
        len: usize,
        skip: usize,
    },
    /// Lets the loop run a few iterations (partial sends happen here).
    Turn(u8),
}

#[derive(Debug, Clone, Copy)]
enum End {
    Close,
    WriteEofThenClose,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![1..64usize, 1..8192usize, 1..300_000usize];
    prop_oneof![
        5 => len.clone().prop_map(Op::Write),
        1 => (len, 0..100usize).prop_map(|(len, skip)| Op::WriteFile { len, skip }),
        2 => (1..4u8).prop_map(Op::Turn),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        Just(End::Close),
        Just(End::WriteEofThenClose),
        Just(End::Abort)
    ]
}

#[derive(Default)]
struct Seen {
    lost: Option<Option<String>>,
}

struct Recorder(Rc<RefCell<Seen>>);

impl Protocol for Recorder {
    fn data_received(&mut self, _data: &[u8]) {}

    fn connection_lost(&mut self, err: Option<std::io::Error>) {
        self.0.borrow_mut().lost = Some(err.map(|e| e.to_string()));
    }
}

/// Bytes `start..start + len` of the stream the test writes (a pattern that shows
/// reordering, loss and duplication).
fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| (i * 31 % 251) as u8).collect()
}

fn run_loop_until(ev: &EventLoop, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the transport did not finish in 20 s"
        );
        ev.run_once(Some(Duration::from_millis(5))).unwrap();
    }
}

fn check(ops: Vec<Op>, end: End, reader_pause_us: u64) {
    let ev = EventLoop::new().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let ours = Socket::from(std::os::fd::OwnedFd::from(ours));
    ours.set_send_buffer_size(4096).unwrap();
    // The slow reader: small reads with pauses, until the end of the stream.
    let reader = thread::spawn(move || {
        let mut theirs = theirs;
        let mut got = Vec::new();
        let mut buf = [0u8; 3000];
        loop {
            match theirs.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            thread::sleep(Duration::from_micros(reader_pause_us));
        }
        got
    });
    let seen = Rc::new(RefCell::new(Seen::default()));
    let transport = Transport::adopt(&ev, ours, Recorder(seen.clone())).unwrap();
    let dir = std::env::temp_dir();
    let mut written = 0usize;
    for op in ops {
        match op {
            Op::Write(len) => {
                transport.write(&pattern(written, len)).unwrap();
                written += len;
            }
            Op::WriteFile { len, skip } => {
                // A file whose bytes `skip..skip + len` continue the stream.
                let path = dir.join(format!(
                    "oxloop-write-props-{}-{written}",
                    std::process::id()
                ));
                let mut file = std::fs::File::create(&path).unwrap();
                file.write_all(&vec![0xEE; skip]).unwrap();
                file.write_all(&pattern(written, len)).unwrap();
                drop(file);
                let file = std::fs::File::open(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                transport.send_file(file, skip as u64, len as u64).unwrap();
                written += len;
            }
            Op::Turn(n) => {
                for _ in 0..n {
                    ev.run_once(Some(Duration::ZERO)).unwrap();
                }
            }
        }
    }
    let lost = || seen.borrow().lost.is_some();
    let still_buffered = match end {
        End::Close => {
            transport.close();
            run_loop_until(&ev, lost);
            0
        }
        End::WriteEofThenClose => {
            transport.write_eof();
            assert!(
                transport.write(b"x").is_err(),
                "a write after write_eof fails"
            );
            run_loop_until(&ev, || transport.write_buffer_size() == 0);
            transport.close();
            run_loop_until(&ev, lost);
            0
        }
        End::Abort => {
            let buffered = transport.write_buffer_size();
            transport.abort();
            run_loop_until(&ev, lost);
            buffered
        }
    };
    assert_eq!(
        seen.borrow().lost,
        Some(None),
        "connection_lost without an error"
    );
    assert!(
        transport.write(b"late").is_err(),
        "a write after the end fails"
    );
    let got = reader.join().unwrap();
    let expected = pattern(0, written);
    assert!(got.len() <= written, "the peer read more than was written");
    assert!(
        got == expected[..got.len()],
        "the peer read bytes out of order or altered"
    );
    assert!(
        got.len() >= written - still_buffered,
        "bytes handed to the kernel were lost: read {} of {written}, {still_buffered} buffered",
        got.len()
    );
    drop(transport);
    ev.destroy();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_peer_reads_what_was_written(
        ops in prop::collection::vec(op(), 1..12),
        end in end(),
        reader_pause_us in prop_oneof![Just(0u64), 0..300u64],
    ) {
        check(ops, end, reader_pause_us);
    }
}
