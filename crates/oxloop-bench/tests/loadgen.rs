//! The load generator against each server, briefly: every echoed byte verified, all
//! message counts as requested. (A correctness check, not a benchmark.)

use oxloop_bench::loadgen::{self, LoadConfig};
use oxloop_bench::servers::{self, ServerKind};
use std::net::SocketAddr;
use std::sync::mpsc;

/// Starts `kind` on a thread of its own (it serves until the test process exits).
fn start(kind: ServerKind) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (addr, serve) = servers::bind(kind, "127.0.0.1:0".parse().unwrap(), None).unwrap();
        tx.send(addr).unwrap();
        serve().unwrap();
    });
    rx.recv().unwrap()
}

#[test]
fn every_server_echoes_every_byte() {
    for kind in ServerKind::ALL {
        let addr = start(kind);
        for (connections, size, depth) in [(1, 64, 1), (10, 1024, 16), (3, 16 * 1024, 16)] {
            let cfg = LoadConfig {
                addr,
                connections,
                size,
                depth,
                duration: None,
                messages_per_connection: Some(200),
            };
            let r = loadgen::run(&cfg).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(r.messages, 200 * connections as u64, "{kind} {cfg:?}");
            assert_eq!(r.bytes, r.messages * size as u64);
        }
    }
}

#[test]
fn idle_connections_are_checked() {
    let addr = start(ServerKind::Oxloop);
    let conns = loadgen::open_idle(addr, 50).unwrap();
    assert_eq!(conns.len(), 50);
}

#[test]
fn bad_configurations_are_refused() {
    let cfg = LoadConfig {
        addr: "127.0.0.1:9".parse().unwrap(),
        connections: 1,
        size: 0,
        depth: 1,
        duration: None,
        messages_per_connection: Some(1),
    };
    assert!(loadgen::run(&cfg).is_err());
    assert!("nginx".parse::<ServerKind>().is_err());
}

#[test]
fn the_added_peers_echo_every_byte() {
    let addr = start(ServerKind::Smol);
    let cfg = LoadConfig {
        addr,
        connections: 5,
        size: 1024,
        depth: 4,
        duration: None,
        messages_per_connection: Some(100),
    };
    let r = loadgen::run(&cfg).unwrap();
    assert_eq!(r.messages, 500);
    assert_eq!(r.latency.count(), 500);
    assert!(r.latency.quantile(0.99) >= r.latency.quantile(0.5));
    if let Some(uv) = servers::libuv_program() {
        let server =
            oxloop_bench::suite::ServerProcess::start(uv, ServerKind::Libuv, None).unwrap();
        let r = loadgen::run(&LoadConfig {
            addr: server.addr,
            ..cfg
        })
        .unwrap();
        assert_eq!(r.messages, 500);
    }
}

/// A server that echoes with one byte changed, or closes after a few bytes.
fn bad_server(corrupt: bool) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let mut total = 0;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
                if !corrupt && total > 1000 {
                    break; // closes the connection mid-stream
                }
                if corrupt && total > 1000 {
                    buf[0] ^= 1;
                }
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

#[test]
fn a_changed_byte_or_a_closed_connection_fails_the_run() {
    for corrupt in [true, false] {
        let cfg = LoadConfig {
            addr: bad_server(corrupt),
            connections: 1,
            size: 64,
            depth: 1,
            duration: None,
            messages_per_connection: Some(100),
        };
        let e = loadgen::run(&cfg).unwrap_err();
        let want = if corrupt {
            std::io::ErrorKind::InvalidData
        } else {
            std::io::ErrorKind::UnexpectedEof
        };
        assert_eq!(e.kind(), want, "{e}");
    }
}
