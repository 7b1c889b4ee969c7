//! `101 Switching Protocols`: the connection handed to an `Upgraded` protocol, with
//! the bytes that followed the request, its end, and a graceful shutdown.

mod common;

use common::*;
use oxloop::protocol::Transport;
use oxloop_http::{Config, HttpServer, Response, Upgraded};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

/// Echoes bytes upper-cased; says "BYE" and closes on a graceful shutdown.
struct Shout {
    transport: Option<Transport>,
}

impl Upgraded for Shout {
    fn connected(&mut self, transport: Transport, buffered: &[u8]) {
        self.transport = Some(transport);
        self.data_received(buffered);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            let _ = t.write(&data.to_ascii_uppercase());
        }
    }

    fn connection_lost(&mut self, _err: Option<io::Error>) {
        self.transport = None;
    }

    fn shut_down(&mut self) {
        if let Some(t) = &self.transport {
            let _ = t.write(b"BYE");
            t.close();
        }
    }
}

fn shout() -> Shout {
    Shout { transport: None }
}

const UPGRADE: &str = "GET /s HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n";

/// Reads until `want` bytes arrived.
fn read_n(s: &mut std::net::TcpStream, pending: &mut Vec<u8>, want: usize) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    while pending.len() < want {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {pending:?}");
        pending.extend_from_slice(&buf[..n]);
    }
    pending.drain(..want).collect()
}

fn check_switch(s: &mut std::net::TcpStream, pending: &mut Vec<u8>) {
    let r = read_response(s, pending, false).unwrap();
    assert_eq!(r.status, 101, "{}", r.head);
    assert!(r.head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert_eq!(r.header("upgrade").as_deref(), Some("shout"));
    assert_eq!(r.header("connection").as_deref(), Some("Upgrade"));
    assert_eq!(r.header("x-extra").as_deref(), Some("1"));
    assert!(r.header("content-length").is_none());
}

#[test]
fn async_handler_switches_and_the_new_protocol_gets_the_bytes() {
    let srv = TestServer::start(|ev| {
        HttpServer::bind_async(ev, "127.0.0.1:0", Config::default(), |req| async move {
            if req.header("upgrade") == Some(b"shout") {
                Response::upgrade("shout", shout()).header("X-Extra", "1")
            } else {
                Response::text("plain")
            }
        })
    });
    let mut s = connect(srv.addr);
    // The first bytes of the new protocol in the same write as the request.
    s.write_all(format!("{UPGRADE}early ").as_bytes()).unwrap();
    let mut pending = Vec::new();
    check_switch(&mut s, &mut pending);
    assert_eq!(read_n(&mut s, &mut pending, 6), b"EARLY ");
    s.write_all(b"hello").unwrap();
    assert_eq!(read_n(&mut s, &mut pending, 5), b"HELLO");
    // Not HTTP any more: a request line is just bytes.
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_n(&mut s, &mut pending, 18), b"GET / HTTP/1.1\r\n\r\n");
    // The default `eof_received` closes the connection.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(&mut s));
    // Other connections still speak HTTP.
    let r = parse_all(&exchange(
        srv.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(r[0].body, b"plain");
}

#[test]
fn closure_handler_switches_with_pipelined_bytes() {
    let srv = TestServer::start(|ev| {
        HttpServer::bind(ev, "127.0.0.1:0", Config::default(), |_req| {
            Response::upgrade("shout", shout()).header("X-Extra", "1")
        })
    });
    let mut s = connect(srv.addr);
    s.write_all(format!("{UPGRADE}abc").as_bytes()).unwrap();
    let mut pending = Vec::new();
    check_switch(&mut s, &mut pending);
    assert_eq!(read_n(&mut s, &mut pending, 3), b"ABC");
    // A request split across reads goes through the connection's buffer.
    let mut s = connect(srv.addr);
    s.write_all(&UPGRADE.as_bytes()[..20]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    s.write_all(format!("{}xyz", &UPGRADE[20..]).as_bytes())
        .unwrap();
    let mut pending = Vec::new();
    check_switch(&mut s, &mut pending);
    assert_eq!(read_n(&mut s, &mut pending, 3), b"XYZ");
}

#[test]
fn graceful_shutdown_asks_the_upgraded_protocol_to_end() {
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
                Response::upgrade("shout", shout()).header("X-Extra", "1")
            }
        })?;
        *me.borrow_mut() = Some(server.clone());
        Ok(server)
    });
    let mut s = connect(srv.addr);
    s.write_all(UPGRADE.as_bytes()).unwrap();
    let mut pending = Vec::new();
    check_switch(&mut s, &mut pending);
    let all = exchange(srv.addr, b"GET /shutdown HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(parse_all(&all)[0].body, b"bye");
    pending.extend(read_to_close(&mut s));
    assert_eq!(pending, b"BYE");
}

#[test]
fn a_bad_protocol_name_is_a_server_error() {
    let srv = TestServer::start(|ev| {
        HttpServer::bind(ev, "127.0.0.1:0", Config::default(), |_req| {
            Response::upgrade("bad name\r\n", shout())
        })
    });
    let r = parse_all(&exchange(srv.addr, UPGRADE.as_bytes()));
    assert_eq!(r[0].status, 500);
}

#[test]
fn http10_and_head_cannot_switch() {
    let srv = TestServer::start(|ev| {
        HttpServer::bind(ev, "127.0.0.1:0", Config::default(), |_req| {
            Response::upgrade("shout", shout())
        })
    });
    for request in [
        "GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n",
    ] {
        let r = parse_all(&exchange(srv.addr, request.as_bytes()));
        assert_eq!(r[0].status, 400, "{request}");
    }
}
