//! The protocol through raw sockets: keep-alive, pipelining, split input, bodies,
//! malformed and smuggling-shaped input, limits and timeouts.

mod common;

use common::*;
use oxloop_http::{Config, HttpServer, Response};
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Answers `METHOD path body-length body` so tests can see what arrived.
fn echo_server(config: Config) -> TestServer {
    TestServer::start(move |ev| {
        HttpServer::bind(ev, "127.0.0.1:0", config, |req| {
            if req.path() == "/panic" {
                panic!("handler panic (expected by the test)");
            }
            let mut text = format!("{} {} {} ", req.method(), req.target(), req.body().len());
            text.push_str(&String::from_utf8_lossy(req.body()));
            Response::text(text)
        })
    })
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

#[test]
fn keep_alive_and_pipelining_in_order() {
    let srv = echo_server(Config::default());
    let mut s = connect(srv.addr);
    let mut pending = Vec::new();
    for i in 0..3 {
        s.write_all(get(&format!("/k{i}")).as_bytes()).unwrap();
        let r = read_response(&mut s, &mut pending, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("GET /k{i} 0 ").as_bytes());
        assert!(r.header("date").is_some());
        assert_eq!(r.header("server").as_deref(), Some("oxloop"));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
    // 16 requests in one write, some with bodies.
    let mut batch = String::new();
    for i in 0..16 {
        if i % 4 == 0 {
            batch.push_str(&format!(
                "POST /p{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            ));
        } else {
            batch.push_str(&get(&format!("/p{i}")));
        }
    }
    s.write_all(batch.as_bytes()).unwrap();
    for i in 0..16 {
        let r = read_response(&mut s, &mut pending, false).unwrap();
        let want = if i % 4 == 0 {
            format!("POST /p{i} 3 abc")
        } else {
            format!("GET /p{i} 0 ")
        };
        assert_eq!(String::from_utf8(r.body).unwrap(), want);
    }
}

#[test]
fn byte_by_byte() {
    let srv = echo_server(Config::default());
    let mut s = connect(srv.addr);
    let req = b"POST /split HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n";
    for b in req.iter() {
        s.write_all(std::slice::from_ref(b)).unwrap();
        s.flush().unwrap();
    }
    let mut pending = Vec::new();
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.body, b"POST /split 11 hello world");
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.body, b"GET /after 0 ");
}

#[test]
fn expect_continue_head_and_versions() {
    let srv = echo_server(Config::default());
    let mut s = connect(srv.addr);
    let mut pending = Vec::new();
    s.write_all(b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.status, 100);
    s.write_all(b"data").unwrap();
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.body, b"PUT /e 4 data");

    // HEAD: same headers, no body.
    s.write_all(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut pending, true).unwrap();
    assert_eq!(r.header("content-length").as_deref(), Some("10"));
    s.write_all(get("/x").as_bytes()).unwrap();
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.body, b"GET /x 0 ", "nothing was left over from HEAD");

    // HTTP/1.0: closes unless asked to keep alive.
    let all = exchange(srv.addr, b"GET /old HTTP/1.0\r\n\r\n");
    let rs = parse_all(&all);
    assert_eq!(rs.len(), 1);
    assert!(rs[0].head.starts_with("HTTP/1.0 200"));
    assert_eq!(rs[0].header("connection").as_deref(), Some("close"));
    let mut s = connect(srv.addr);
    s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut pending = Vec::new();
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    s.write_all(b"GET /b HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.body, b"GET /b 0 ");
    assert!(closed(&mut s));

    // Connection: close from the client: answered, then closed; later requests
    // on the same connection are ignored.
    let all = exchange(
        srv.addr,
        b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let rs = parse_all(&all);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].header("connection").as_deref(), Some("close"));
}

fn status_of(srv: &TestServer, request: &[u8]) -> (Vec<u16>, bool) {
    let mut s = connect(srv.addr);
    let _ = s.write_all(request);
    let all = read_to_close(&mut s);
    let rs = parse_all(&all);
    let closed_with_close = rs
        .last()
        .is_some_and(|r| r.header("connection").as_deref() == Some("close"));
    (rs.iter().map(|r| r.status).collect(), closed_with_close)
}

#[test]
fn malformed_and_smuggling_input_is_refused() {
    let srv = echo_server(Config::default());
    let cases: &[(&str, &[u8])] = &[
        ("garbage", b"HELLO\r\n\r\n"),
        ("no version", b"GET /\r\nHost: t\r\n\r\n"),
        ("bad version", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n"),
        ("no host", b"GET / HTTP/1.1\r\n\r\n"),
        ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n"),
        ("bad header name", b"GET / HTTP/1.1\r\nHost: t\r\nX\x01Y: z\r\n\r\n"),
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE and CL", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("differing CLs", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("CL list", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ("signed CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"),
        ("TE gzip", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("TE list", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
        ("TE twice", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("TE spaced name", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n"),
        ("TE on 1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n 2\r\n\r\n"),
        ("bare LF", b"GET / HTTP/1.1\nHost: t\n\n"),
        ("bare LF in header", b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n"),
        ("chunk size not hex", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("chunk size 0x", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("chunk size bare LF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
        ("chunk data too long", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"),
        ("unknown expectation", b"POST / HTTP/1.1\r\nHost: t\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx"),
        ("NUL in target", b"GET /a\x00b HTTP/1.1\r\nHost: t\r\n\r\n"),
    ];
    for (name, request) in cases {
        let (statuses, close) = status_of(&srv, request);
        assert!(
            statuses.len() == 1 && statuses[0] >= 400 && statuses[0] < 500 && close,
            "{name}: got {statuses:?} close={close}"
        );
        if *name == "unknown expectation" {
            assert_eq!(statuses[0], 417);
        } else {
            assert_eq!(statuses[0], 400, "{name}");
        }
    }
    // A valid request before a bad one is still answered, in order.
    let (statuses, _) = status_of(
        &srv,
        b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\nBAD REQUEST\r\n\r\n",
    );
    assert_eq!(statuses, [200, 400]);
    // A handler panic costs one 500 and the connection, not the server.
    let (statuses, close) = status_of(&srv, get("/panic").as_bytes());
    assert_eq!((statuses, close), (vec![500], true));
    assert!(srv.alive());
    assert_eq!(
        status_of(
            &srv,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .0,
        [200]
    );
}

#[test]
fn size_limits() {
    let srv = echo_server(Config::default().max_head_bytes(1024).max_body_bytes(100));
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(status_of(&srv, big_header.as_bytes()).0, [431]);
    // A head that never ends.
    let endless = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}", "a".repeat(5000));
    assert_eq!(status_of(&srv, endless.as_bytes()).0, [431]);
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    assert_eq!(status_of(&srv, many.as_bytes()).0, [431]);
    let cl = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n";
    assert_eq!(status_of(&srv, cl).0, [413]);
    let chunks = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{}\r\n40\r\n{}\r\n0\r\n\r\n",
        "a".repeat(64),
        "b".repeat(64)
    );
    assert_eq!(status_of(&srv, chunks.as_bytes()).0, [413]);
    // Exactly at the limit is fine.
    let ok = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}",
        "c".repeat(100)
    );
    assert_eq!(status_of(&srv, ok.as_bytes()).0, [200]);
}

#[test]
fn slow_clients_get_408() {
    let config = Config::default()
        .head_timeout(Duration::from_millis(300))
        .body_timeout(Duration::from_millis(300))
        .idle_timeout(Duration::from_millis(400));
    let srv = echo_server(config);
    // Slowloris: a byte every 100 ms never finishes the head in time.
    let mut s = connect(srv.addr);
    let start = Instant::now();
    for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_millis(600) {
            break;
        }
    }
    let rs = parse_all(&read_to_close(&mut s));
    assert_eq!(rs.first().map(|r| r.status), Some(408));
    // A body that stops arriving.
    let mut s = connect(srv.addr);
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let rs = parse_all(&read_to_close(&mut s));
    assert_eq!(rs.first().map(|r| r.status), Some(408));
    // An idle keep-alive connection is closed without a response.
    let mut s = connect(srv.addr);
    s.write_all(get("/").as_bytes()).unwrap();
    let mut pending = Vec::new();
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().status,
        200
    );
    let t = Instant::now();
    assert!(read_to_close(&mut s).is_empty());
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn connection_limit_pauses_accepting() {
    let srv = echo_server(Config::default().max_connections(2));
    let mut a = connect(srv.addr);
    let mut b = connect(srv.addr);
    let mut pending = Vec::new();
    for s in [&mut a, &mut b] {
        s.write_all(get("/").as_bytes()).unwrap();
        assert_eq!(read_response(s, &mut pending, false).unwrap().status, 200);
    }
    // The third connection is queued by the kernel, not served.
    let mut c = connect(srv.addr);
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.write_all(get("/third").as_bytes()).unwrap();
    assert!(read_response(&mut c, &mut pending, false).is_none());
    // More at once: none is served while two are open (some may be refused
    // with 503 if they were accepted in the same burst).
    let mut extra: Vec<_> = (0..6).map(|_| connect(srv.addr)).collect();
    for s in &mut extra {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let _ = s.write_all(get("/extra").as_bytes());
    }
    for s in &mut extra {
        let mut pending = Vec::new();
        if let Some(r) = read_response(s, &mut pending, false) {
            assert_eq!(r.status, 503);
        }
    }
    drop(extra);
    // Once one closes, the queued one is served.
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut pending = Vec::new();
    let r = read_response(&mut c, &mut pending, false).unwrap();
    assert_eq!(r.body, b"GET /third 0 ");
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    let srv = TestServer::start(|ev| {
        let me: Rc<RefCell<Option<HttpServer>>> = Rc::new(RefCell::new(None));
        let me2 = me.clone();
        let server = HttpServer::bind_async(ev, "127.0.0.1:0", Config::default(), move |req| {
            let me = me2.clone();
            async move {
                if req.path() == "/shutdown" {
                    // Taken, not borrowed: the handler holding its own server is a
                    // cycle that would keep the server's state allocated.
                    let server = me.borrow_mut().take();
                    if let Some(s) = server {
                        s.shutdown(|| {});
                    }
                    return Response::text("bye");
                }
                oxloop::task::sleep(Duration::from_millis(300)).await;
                Response::text("slow done")
            }
        })?;
        *me.borrow_mut() = Some(server.clone());
        Ok(server)
    });
    let mut idle = connect(srv.addr);
    let mut slow = connect(srv.addr);
    slow.write_all(get("/slow").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let all = exchange(srv.addr, get("/shutdown").as_bytes());
    assert_eq!(parse_all(&all)[0].body, b"bye");
    // The idle connection is closed at once, the slow one after its response.
    assert!(closed(&mut idle));
    let rs = parse_all(&read_to_close(&mut slow));
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].body, b"slow done");
    assert_eq!(rs[0].header("connection").as_deref(), Some("close"));
    // No longer listening.
    assert!(std::net::TcpStream::connect(srv.addr).is_err());
}
