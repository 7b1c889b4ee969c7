//! `oxloop serve-http` serves a directory, refuses traversal, logs each request and
//! shuts down on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_a_directory_until_sigterm() {
    let dir = std::env::temp_dir().join(format!("oxloop-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from a file\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .args(["serve-http", "--dir", dir.to_str().unwrap(), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .rsplit("http://")
        .next()
        .expect("a 'serving DIR on http://ADDR' line")
        .to_string();

    let ok = get(&addr, "/hello.txt");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("text/plain"), "{ok}");
    assert!(ok.ends_with("hello from a file\n"), "{ok}");
    let traversal = get(&addr, "/../../etc/passwd");
    assert!(
        traversal.starts_with("HTTP/1.1 404")
            || traversal.starts_with("HTTP/1.1 403")
            || traversal.starts_with("HTTP/1.1 400"),
        "{traversal}"
    );
    assert!(!traversal.contains("root:"), "{traversal}");

    // SAFETY: sending a signal to our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("/hello.txt"), "no request log line: {log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_http_without_dir_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .arg("serve-http")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
}
