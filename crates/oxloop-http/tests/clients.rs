//! Real clients: curl and Python's `http.client`.

mod common;

use common::*;
use oxloop_http::{Config, HttpServer, Response};
use std::process::Command;

fn echo_server() -> TestServer {
    TestServer::start(|ev| {
        HttpServer::bind(ev, "127.0.0.1:0", Config::default(), |req| {
            let mut text = format!("{} {} {} ", req.method(), req.target(), req.body().len());
            text.push_str(&String::from_utf8_lossy(req.body()));
            Response::text(text).header("X-Test", "yes")
        })
    })
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn curl(args: &[&str]) -> String {
    curl_stdin(args, b"")
}

/// Runs curl with `stdin` as its standard input (`--data-binary @-`).
fn curl_stdin(args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_requests() {
    if !have("curl") {
        eprintln!("curl is not installed; .ci/run installs it");
        return;
    }
    let srv = echo_server();
    let base = format!("http://{}", srv.addr);
    assert_eq!(curl(&[&format!("{base}/hi?x=1")]), "GET /hi?x=1 0 ");
    assert_eq!(
        curl(&["-d", "hello=world", &format!("{base}/form")]),
        "POST /form 11 hello=world"
    );
    // Chunked upload, with curl's Expect: 100-continue for a large body.
    let big = "z".repeat(200_000);
    let out = curl_stdin(
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            &format!("{base}/up"),
        ],
        big.as_bytes(),
    );
    assert_eq!(out, format!("POST /up 200000 {big}"));
    // HEAD, headers only.
    let head = curl(&["-I", &format!("{base}/h")]);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Length: 10"), "{head}");
    assert!(head.contains("X-Test: yes"));
    // Several URLs over one keep-alive connection, and HTTP/1.0.
    let out = curl(&[&format!("{base}/a"), &format!("{base}/b")]);
    assert_eq!(out, "GET /a 0 GET /b 0 ");
    assert_eq!(curl(&["--http1.0", &format!("{base}/old")]), "GET /old 0 ");
}

#[test]
fn python_http_client() {
    if !have("python3") {
        eprintln!("python3 is not installed; skipped");
        return;
    }
    let srv = echo_server();
    let script = format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=5)
for i in range(5):
    c.request("GET", "/py%d" % i)
    r = c.getresponse()
    assert r.status == 200, r.status
    assert r.read() == b"GET /py%d 0 " % i
    assert r.getheader("Date")
c.request("POST", "/body", body=b"x" * 1000, headers={{"Content-Type": "application/octet-stream"}})
r = c.getresponse()
assert r.read() == b"POST /body 1000 " + b"x" * 1000
# chunked request body from an iterator
c.request("PUT", "/chunks", body=iter([b"ab", b"cd", b"ef"]), encode_chunked=True)
r = c.getresponse()
assert r.read() == b"PUT /chunks 6 abcdef"
c.request("HEAD", "/head")
r = c.getresponse()
assert r.read() == b"" and r.getheader("Content-Length") == "13"
c.request("GET", "/last", headers={{"Connection": "close"}})
r = c.getresponse()
assert r.getheader("Connection") == "close"
assert r.read() == b"GET /last 0 "
print("ok")
"#,
        port = srv.addr.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
