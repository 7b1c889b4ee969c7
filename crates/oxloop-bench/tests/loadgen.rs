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
