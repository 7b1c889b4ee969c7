//! `oxloop::cluster`: several loops on their own threads serving one address, with a
//! graceful shutdown, and a failing loop that does not take the others down.

use oxloop::cluster::{Cluster, LoopFailed};
use oxloop::protocol::{Protocol, Transport};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Echoes, and counts its connections per loop thread.
struct Echo {
    t: Option<Transport>,
    served: Arc<Mutex<HashMap<String, usize>>>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        *self.served.lock().unwrap().entry(name).or_default() += 1;
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data).unwrap();
    }
}

fn echo_once(addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn two_loops_share_one_port_and_stop_gracefully() {
    let served = Arc::new(Mutex::new(HashMap::new()));
    let s = served.clone();
    let cluster = Cluster::serve("127.0.0.1:0", 2, move || Echo {
        t: None,
        served: s.clone(),
    })
    .unwrap();
    assert_eq!(cluster.loops(), 2);
    let addr = cluster.local_addrs()[0];
    assert_ne!(addr.port(), 0);
    for i in 0..40 {
        let msg = format!("message {i}");
        assert_eq!(echo_once(addr, msg.as_bytes()), msg.as_bytes());
    }
    let counts = served.lock().unwrap().clone();
    assert_eq!(counts.values().sum::<usize>(), 40, "{counts:?}");
    // The kernel spreads 40 connections over both listeners (all on one: 2 in 2^40).
    assert_eq!(counts.len(), 2, "both loops served: {counts:?}");
    cluster.shutdown();
    for outcome in cluster.join() {
        outcome.unwrap();
    }
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

/// What a connection was sent before the shutdown still arrives, in full.
#[test]
fn shutdown_flushes_what_connections_buffered() {
    struct Greeter;
    impl Protocol for Greeter {
        fn connection_made(&mut self, t: Transport) {
            t.write(&vec![7u8; 4 << 20]).unwrap();
        }
        fn data_received(&mut self, _: &[u8]) {}
    }
    let cluster = Cluster::serve("127.0.0.1:0", 2, || Greeter).unwrap();
    let addr = cluster.local_addrs()[0];
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).unwrap(); // connected and served
    cluster.shutdown();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap(); // ends at the server's close
    assert_eq!(rest.len() + 1, 4 << 20);
    for outcome in cluster.join() {
        outcome.unwrap();
    }
}

/// A loop whose callback panics (with panics propagating) ends with the panic as its
/// outcome; the other loop goes on serving until the shutdown.
#[test]
fn a_panicking_loop_does_not_stop_the_others() {
    let served = Arc::new(Mutex::new(HashMap::new()));
    let s = served.clone();
    let cluster = Cluster::start(2, move |ev, index| {
        if index == 0 {
            ev.set_propagate_panics(true);
            ev.call_soon(|| panic!("loop zero fails"));
            return Ok(());
        }
        let s = s.clone();
        Cluster::serve_on(ev, &["127.0.0.1:0".parse().unwrap()], move || Echo {
            t: None,
            served: s.clone(),
        })
        .map(drop)
    })
    .unwrap();
    let addr = cluster.local_addrs()[0];
    assert_eq!(echo_once(addr, b"still here"), b"still here");
    cluster.shutdown();
    let outcomes = cluster.join();
    assert!(
        matches!(&outcomes[0], Err(LoopFailed::Panicked(msg)) if msg == "loop zero fails"),
        "{outcomes:?}"
    );
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
}

/// A `setup` that fails: `start` returns its error, after stopping and joining the
/// loops that did start.
#[test]
fn a_failed_setup_is_the_error_of_start() {
    let err = Cluster::start(3, |ev, index| {
        if index == 1 {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "loop one cannot bind",
            ));
        }
        // The others have work that would keep them running for ever.
        ev.call_later(Duration::from_secs(3600), || {});
        Ok(())
    })
    .err()
    .expect("start fails");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(err.to_string(), "loop one cannot bind");
}

/// The async API in a cluster: each loop accepts on its own `SO_REUSEPORT` listener in
/// a task, one task per connection; the shutdown hook ends the accepting task and the
/// loops end when their connections have.
#[test]
fn async_tasks_serve_in_every_loop() {
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    use oxloop::cluster::SharedAddrs;
    use oxloop::net::TcpListener;

    let served = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let s = served.clone();
    let addrs = SharedAddrs::new(vec!["127.0.0.1:0".parse().unwrap()]);
    let for_loops = addrs.clone();
    let cluster = Cluster::start(2, move |ev, _| {
        let listener = TcpListener::bind_reuse_port(for_loops.get()[0])?;
        for_loops.set(vec![listener.local_addr()?]);
        let served = s.clone();
        let accepting = ev.spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let name = std::thread::current().name().unwrap().to_string();
                *served.lock().unwrap().entry(name).or_default() += 1;
                oxloop::task::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => conn.write_all(&buf[..n]).await.unwrap(),
                        }
                    }
                });
            }
        });
        Cluster::on_shutdown(move || accepting.abort());
        Ok(())
    })
    .unwrap();
    let addr = addrs.get()[0];
    for i in 0..40 {
        let msg = format!("async {i}");
        assert_eq!(echo_once(addr, msg.as_bytes()), msg.as_bytes());
    }
    let counts = served.lock().unwrap().clone();
    assert_eq!(counts.values().sum::<usize>(), 40, "{counts:?}");
    assert_eq!(counts.len(), 2, "both loops served: {counts:?}");
    cluster.shutdown();
    for outcome in cluster.join() {
        outcome.unwrap();
    }
}
