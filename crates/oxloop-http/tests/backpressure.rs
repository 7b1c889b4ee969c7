//! A client that pipelines many requests without reading: the server stops answering
//! while the connection's output is above its high-water mark, so it neither buffers
//! responses nor holds files open without bound; everything arrives once the client
//! reads. (Its own test binary: it counts the process's open fds.)

mod common;

use common::*;
use oxloop_http::{serve_dir, Config};
use std::io::Write;
use std::time::Duration;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn pipelined_large_files_hold_bounded_resources() {
    let base =
        std::env::temp_dir().join(format!("oxloop-http-backpressure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
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
    let _ = std::fs::remove_dir_all(&base);
}
