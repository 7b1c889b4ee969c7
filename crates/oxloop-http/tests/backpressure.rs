//! A client that pipelines many requests without reading: the server stops answering
//! while the connection's output is above its high-water mark, so it neither buffers
//! responses nor holds files open without bound; everything arrives once the client
//! reads, a client that half-closes still gets every answer, and one that stops
//! reading altogether is cut off. (Its own test binary, the tests one at a time: they
//! count the process's open fds and memory.)

mod common;

use common::*;
use oxloop_http::{serve_dir, Config, HttpServer, Response};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A server answering every request with `body_len` bytes of text.
fn sized_server(body_len: usize, config: Config) -> TestServer {
    TestServer::start(move |ev| {
        let body = "x".repeat(body_len);
        HttpServer::bind(ev, "127.0.0.1:0", config, move |_req| {
            Response::text(body.clone())
        })
    })
}

#[test]
fn pipelined_large_files_hold_bounded_resources() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = ScratchDir::new("backpressure");
    let base = dir.path().to_path_buf();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(base.join("big.bin"), &big).unwrap();
    let root = base.clone();
    let srv = TestServer::start(move |ev| serve_dir(ev, "127.0.0.1:0", &root, Config::default()));

    let mut s = connect(srv.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let baseline = open_fds();
    const N: usize = 200; // 200 MB of responses if all were answered at once
    let requests = "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".repeat(N);
    s.write_all(requests.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let held = open_fds().saturating_sub(baseline);
    // One file per response being sent; without the limit, one per request (200).
    assert!(
        held <= 10,
        "{held} more fds open while the client does not read"
    );

    let mut pending = Vec::new();
    for i in 0..N {
        let r = read_response(&mut s, &mut pending, false)
            .unwrap_or_else(|| panic!("response {i} missing"));
        assert_eq!(r.status, 200);
        assert!(r.body == big, "response {i}: {} bytes", r.body.len());
    }
    assert!(pending.is_empty());
    drop(s);
    drop(srv);
}

#[test]
fn many_small_pipelined_responses_are_bounded_too() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let srv = sized_server(16 * 1024, Config::default());
    let mut s = connect(srv.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    const N: usize = 2000; // 32 MB of responses to one read's worth of requests
    let before = resident_bytes();
    s.write_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(N).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < 12 << 20,
        "{grown} bytes more resident while the client does not read"
    );
    let mut pending = Vec::new();
    for i in 0..N {
        let r = read_response(&mut s, &mut pending, false)
            .unwrap_or_else(|| panic!("response {i} missing"));
        assert_eq!((r.status, r.body.len()), (200, 16 * 1024));
    }
}

#[test]
fn half_closed_client_gets_every_pipelined_answer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let srv = sized_server(4 << 20, Config::default());
    let mut s = connect(srv.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(6).as_bytes())
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the answers back up meanwhile
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap(); // ends when the server closes
    let answers = parse_all(&all);
    assert_eq!(answers.len(), 6);
    assert!(answers
        .iter()
        .all(|r| r.status == 200 && r.body.len() == 4 << 20));
}

#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config::default().idle_timeout(Duration::from_millis(300));
    let srv = sized_server(16 << 20, config);
    let mut s = connect(srv.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // not reading
    let started = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < 16 << 20,
        "the whole response arrived: the connection was kept"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the read did not end"
    );
}
