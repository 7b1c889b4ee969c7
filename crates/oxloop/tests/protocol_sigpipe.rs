//! Writing to a peer that went away never raises SIGPIPE, even with the default
//! disposition (which kills the process). Alone in its binary: it changes a
//! process-wide signal disposition.

use oxloop::protocol::{ConnectOptions, LoopNetExt, Protocol, ServerOptions, Transport};
use oxloop::EventLoop;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// Writes 8 MiB at once (most of it buffered), then keeps writing until the
/// connection is lost.
struct Flood {
    t: Option<Transport>,
    lost: Rc<RefCell<Vec<Option<io::ErrorKind>>>>,
}

impl Protocol for Flood {
    fn connection_made(&mut self, t: Transport) {
        t.write(&vec![7u8; 8 << 20]).unwrap();
        let t2 = t.clone();
        fn again(t: Transport) {
            if t.write(&[1u8; 4096]).is_ok() {
                let t2 = t.clone();
                t.event_loop()
                    .clone()
                    .call_later(Duration::from_millis(1), move || again(t2));
            }
        }
        t.call_later(Duration::from_millis(1), move || again(t2));
        self.t = Some(t);
    }
    fn data_received(&mut self, _: &[u8]) {}
    fn connection_lost(&mut self, err: Option<io::Error>) {
        self.lost.borrow_mut().push(err.map(|e| e.kind()));
    }
}

/// Connects, reads a little, then closes without reading the rest.
struct Quitter(Option<Transport>, usize);

impl Protocol for Quitter {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.1 += data.len();
        if self.1 > 100_000 {
            self.0.as_ref().unwrap().abort();
        }
    }
}

fn check(ev: &EventLoop, unix: bool) {
    let lost = Rc::new(RefCell::new(Vec::new()));
    let l = lost.clone();
    let factory = move || Flood {
        t: None,
        lost: l.clone(),
    };
    let dir = std::env::temp_dir().join(format!("oxloop-sigpipe-{}", std::process::id()));
    let path = dir.join("s.sock");
    let server = if unix {
        std::fs::create_dir_all(&dir).unwrap();
        ev.create_unix_server(&path, &ServerOptions::new(), factory)
            .unwrap()
    } else {
        ev.create_server("127.0.0.1:0", factory).unwrap()
    };
    let s = server.clone();
    let done = move |r: io::Result<Transport>| {
        r.unwrap();
        s.close();
    };
    if unix {
        ev.create_unix_connection(&path, Quitter(None, 0), &ConnectOptions::new(), done)
            .unwrap();
    } else {
        let addr = server.socket_addrs()[0];
        ev.create_connection(addr, Quitter(None, 0), &ConnectOptions::new(), done)
            .unwrap();
    }
    ev.run().unwrap();
    let lost = lost.borrow();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let kind = lost[0].expect("the write error did not reach connection_lost");
    assert!(
        matches!(
            kind,
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{kind:?}"
    );
    if unix {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn writes_to_a_closed_peer_do_not_raise_sigpipe() {
    // SAFETY: restores the default action (terminate) for SIGPIPE in this test
    // process, so a SIGPIPE would kill the test instead of being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let ev = EventLoop::new().unwrap();
    ev.set_propagate_panics(true);
    let e = ev.clone();
    ev.call_later(Duration::from_secs(8), move || {
        e.stop();
        panic!("timed out: {e:?}");
    })
    .unref();
    check(&ev, false);
    check(&ev, true);
    // The time-out guard holds a clone of the loop: end it.
    ev.destroy();
}
