//! Serving a directory: types, dates, large files, and traversal attempts.

mod common;

use common::*;
use oxloop_http::{serve_dir, Config};
use std::io::Write;
use std::path::PathBuf;

struct Site {
    _dir: ScratchDir,
    root: PathBuf,
}

fn site(name: &str) -> Site {
    let dir = ScratchDir::new(name);
    let base = dir.path().to_path_buf();
    let root = base.join("www");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(base.join("secret.txt"), "SECRET").unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("a.txt"), "plain text").unwrap();
    std::fs::write(root.join("style.css"), "b{}").unwrap();
    std::fs::write(root.join("sub/data.json"), "{}").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), big).unwrap();
    std::os::unix::fs::symlink(&base, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("secret_link")).unwrap();
    std::os::unix::fs::symlink(root.join("a.txt"), root.join("inside_link")).unwrap();
    Site { _dir: dir, root }
}

fn start(root: PathBuf) -> TestServer {
    TestServer::start(move |ev| serve_dir(ev, "127.0.0.1:0", &root, Config::default()))
}

fn fetch(srv: &TestServer, raw: &str) -> Resp {
    let mut s = connect(srv.addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut pending = Vec::new();
    read_response(&mut s, &mut pending, raw.starts_with("HEAD")).unwrap()
}

fn get(srv: &TestServer, path: &str) -> Resp {
    fetch(srv, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
}

#[test]
fn files_types_and_dates() {
    let site = site("files");
    let srv = start(site.root.clone());
    let r = get(&srv, "/");
    assert_eq!((r.status, &r.body[..]), (200, &b"<h1>home</h1>"[..]));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let r = get(&srv, "/a.txt");
    assert_eq!(r.body, b"plain text");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let modified = r.header("last-modified").unwrap();
    assert_eq!(
        get(&srv, "/style.css").header("content-type").as_deref(),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        get(&srv, "/sub/data.json")
            .header("content-type")
            .as_deref(),
        Some("application/json")
    );
    assert_eq!(get(&srv, "/inside_link").body, b"plain text");
    let r = get(&srv, "/sub?x=1");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").as_deref(), Some("/sub/?x=1"));
    assert_eq!(get(&srv, "/sub/").status, 404, "no index.html, no listing");
    let r = get(&srv, "//sub");
    assert_eq!(
        r.header("location").as_deref(),
        Some("/sub/"),
        "no open redirect"
    );
    assert_eq!(get(&srv, "/a%2etxt").body, b"plain text");
    // Conditional GET.
    let r = fetch(
        &srv,
        &format!("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {modified}\r\n\r\n"),
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = fetch(
        &srv,
        "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // Large file, streamed, byte for byte; and HEAD.
    let r = get(&srv, "/big.bin");
    assert_eq!(r.body, std::fs::read(site.root.join("big.bin")).unwrap());
    let r = fetch(&srv, "HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.header("content-length").as_deref(), Some("300000"));
    // Missing, wrong method.
    assert_eq!(get(&srv, "/nope.txt").status, 404);
    assert_eq!(get(&srv, "/a.txt/x").status, 404);
    let r = fetch(&srv, "DELETE /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    // Several files pipelined on one connection, the big one in the middle.
    let mut s = connect(srv.addr);
    s.write_all(
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /style.css HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut pending = Vec::new();
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        b"plain text"
    );
    assert_eq!(
        read_response(&mut s, &mut pending, false)
            .unwrap()
            .body
            .len(),
        300_000
    );
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        b"b{}"
    );
}

#[test]
fn traversal_is_refused() {
    let site = site("traversal");
    let srv = start(site.root.clone());
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/escape/secret.txt",
        "/secret_link",
        "/%00",
        "/a.txt%00.html",
        "/%zz",
    ] {
        let r = get(&srv, path);
        assert!(
            [400, 403, 404].contains(&r.status),
            "{path}: status {}",
            r.status
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("SECRET"),
            "{path} leaked"
        );
    }
    assert_eq!(get(&srv, "/../secret.txt").status, 403);
    assert_eq!(get(&srv, "/escape/secret.txt").status, 403);
    assert_eq!(get(&srv, "/secret_link").status, 403);
}
