//! Async handlers: streamed request and response bodies, ordering, panics.

mod common;

use common::*;
use oxloop::task;
use oxloop_http::{Config, HttpServer, Response};
use std::io::Write;
use std::time::Duration;

fn server() -> TestServer {
    TestServer::start(|ev| {
        HttpServer::bind_async(ev, "127.0.0.1:0", Config::default(), |mut req| async move {
            match req.path() {
                "/echo" => {
                    let body = match req.take_body() {
                        Some(mut b) => b.read_to_end().await.unwrap_or_default(),
                        None => Vec::new(),
                    };
                    Response::bytes("application/octet-stream", body)
                }
                "/count" => {
                    // Reads the body piece by piece without keeping it.
                    let mut n = 0;
                    if let Some(mut b) = req.take_body() {
                        while let Ok(Some(chunk)) = b.chunk().await {
                            n += chunk.len();
                        }
                    }
                    Response::text(n.to_string())
                }
                "/stream" => {
                    let (response, mut writer) = Response::stream(200);
                    task::spawn(async move {
                        for i in 0..5 {
                            task::sleep(Duration::from_millis(5)).await;
                            if writer.send(format!("part{i};")).await.is_err() {
                                return;
                            }
                        }
                        writer.send(vec![b'x'; 200_000]).await.ok();
                        writer.finish();
                    });
                    response.content_type("text/plain")
                }
                "/panic" => panic!("async handler panic (expected by the test)"),
                p if p.starts_with("/now") => Response::text(p.to_string()),
                p => {
                    // Later requests finish first unless order is kept.
                    let delay: u64 = p.trim_start_matches("/sleep").parse().unwrap_or(0);
                    task::sleep(Duration::from_millis(delay)).await;
                    Response::text(p.to_string())
                }
            }
        })
    })
}

#[test]
fn streamed_request_bodies() {
    let srv = server();
    let mut s = connect(srv.addr);
    let mut pending = Vec::new();
    let body: Vec<u8> = (0..500_000u32).map(|i| i as u8).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let writer = {
        let mut s2 = s.try_clone().unwrap();
        std::thread::spawn(move || s2.write_all(&req).unwrap())
    };
    let r = read_response(&mut s, &mut pending, false).unwrap();
    writer.join().unwrap();
    assert_eq!(r.body, body);
    // Chunked, 3 MB, counted piece by piece (bounded memory on the server).
    let mut req = b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..48 {
        req.extend_from_slice(b"10000\r\n");
        req.extend_from_slice(&[b'q'; 0x10000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let writer = {
        let mut s2 = s.try_clone().unwrap();
        std::thread::spawn(move || s2.write_all(&req).unwrap())
    };
    let r = read_response(&mut s, &mut pending, false).unwrap();
    writer.join().unwrap();
    assert_eq!(r.body, (48 * 0x10000).to_string().as_bytes());
    // A handler that ignores the body: the rest is skipped, the connection goes on.
    s.write_all(b"POST /sleep0 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        b"/sleep0"
    );
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        b"/after"
    );
}

#[test]
fn streamed_responses_and_order() {
    let srv = server();
    let mut s = connect(srv.addr);
    let mut pending = Vec::new();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut pending, false).unwrap();
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.starts_with("part0;part1;part2;part3;part4;xxx"));
    assert_eq!(text.len(), 30 + 200_000);
    // Pipelined: the slow first request is still answered first.
    s.write_all(b"GET /sleep100 HTTP/1.1\r\nHost: t\r\n\r\nGET /sleep0 HTTP/1.1\r\nHost: t\r\n\r\nGET /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /sleep1 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        b"/sleep100"
    );
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        b"/sleep0"
    );
    assert_eq!(
        read_response(&mut s, &mut pending, false)
            .unwrap()
            .body
            .len(),
        200_030
    );
    assert_eq!(
        read_response(&mut s, &mut pending, false).unwrap().body,
        b"/sleep1"
    );
    // HTTP/1.0 gets the stream unframed, ended by the close.
    let all = exchange(srv.addr, b"GET /stream HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("Connection: close"));
    assert!(!text.contains("Transfer-Encoding"));
    assert!(text.ends_with(&"x".repeat(100)));
}

#[test]
fn answers_at_once_and_later_keep_their_order() {
    let srv = server();
    let mut s = connect(srv.addr);
    let mut pending = Vec::new();
    // Handlers that answer without waiting (answered in the read callback) between
    // ones that wait (tasks), some with bodies the handler does not read.
    let paths = [
        "/now0", "/now1", "/sleep20", "/now2", "/sleep0", "/now3", "/now4",
    ];
    let mut batch = String::new();
    for (i, path) in paths.iter().enumerate() {
        if i % 3 == 1 {
            batch.push_str(&format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            ));
        } else {
            batch.push_str(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        }
    }
    for _ in 0..2 {
        s.write_all(batch.as_bytes()).unwrap();
        for path in paths {
            let r = read_response(&mut s, &mut pending, false).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body, path.as_bytes());
        }
    }
}

#[test]
fn panics_and_disconnects() {
    let srv = server();
    let all = exchange(srv.addr, b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(parse_all(&all)[0].status, 500);
    // Clients leaving mid-request or mid-stream.
    for req in [
        &b"GET /sleep50 HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc",
    ] {
        let mut s = connect(srv.addr);
        s.write_all(req).unwrap();
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(srv.alive());
    let all = exchange(
        srv.addr,
        b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(parse_all(&all)[0].body, b"/ok");
}
