//! `oxloop serve-http` serves a directory, refuses traversal, logs each request (in
//! the common log format) and shuts down on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    serve_until_sigterm(1);
}

/// `--threads 2`: two loops share the port (a cluster); every request is answered and
/// SIGTERM stops both.
#[test]
fn serves_with_two_loops_until_sigterm() {
    serve_until_sigterm(2);
}

fn serve_until_sigterm(threads: usize) {
    let dir = std::env::temp_dir().join(format!("oxloop-serve-{}-{threads}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from a file\n").unwrap();
    let threads_arg = threads.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .args(["serve-http", "--dir", dir.to_str().unwrap(), "--port", "0"])
        .args(["--threads", &threads_arg])
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

    for _ in 0..20 {
        let ok = get(&addr, "/hello.txt");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("text/plain"), "{ok}");
        assert!(ok.ends_with("hello from a file\n"), "{ok}");
    }
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

/// The body of a whole response read by [`get`].
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[test]
fn serves_on_loopback_logs_common_format_and_exits_soon_after_sigterm() {
    let dir = std::env::temp_dir().join(format!("oxloop-http-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "from the binary").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .args(["serve-http", "--dir", dir.to_str().unwrap(), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit_once("http://")
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(addr.ip().is_loopback(), "127.0.0.1 by default");

    let response = get(&addr.to_string(), "/hello.txt");
    assert_eq!(body(&response), "from the binary");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("\"GET /hello.txt HTTP/1.1\" 200 15"),
        "log: {log}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Bad arguments: a usage message and a failure status.
    let out = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .args(["serve-http"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .to_lowercase()
        .contains("usage"));
}
