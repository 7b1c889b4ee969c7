//! 1,000 connections opened and closed leave the process with the fds it had before.
//! Alone in its binary: /proc/self/fd counts are process-wide.

mod support;

use oxloop::protocol::{ConnectOptions, LoopNetExt, Protocol, Transport};
use oxloop::EventLoop;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use support::{open_fds, DestroyOnDrop};

struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.as_ref().unwrap().write(data).unwrap();
    }
}

/// Sends a greeting, closes when it came back.
struct Hello {
    t: Option<Transport>,
    done: Rc<Cell<usize>>,
}

impl Protocol for Hello {
    fn connection_made(&mut self, t: Transport) {
        t.write(b"hello").unwrap();
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        assert_eq!(data, b"hello");
        self.t.as_ref().unwrap().close();
    }
    fn connection_lost(&mut self, err: Option<std::io::Error>) {
        assert!(err.is_none());
        self.done.set(self.done.get() + 1);
    }
}

#[test]
fn thousand_connections_return_fds_to_baseline() {
    let ev = EventLoop::new().unwrap();
    let _destroy = DestroyOnDrop(ev.clone());
    ev.set_propagate_panics(true);
    // Not a clone of `ev`: a pending callback holding its own loop keeps it allocated.
    ev.call_later(support::time_limit(Duration::from_secs(8)), || {
        let e = EventLoop::current().expect("the test's loop");
        e.stop();
        panic!("timed out: {e:?}");
    })
    .unref();
    let baseline = open_fds();
    let server = ev.create_server("127.0.0.1:0", || Echo(None)).unwrap();
    let addr = server.socket_addrs()[0];
    let done = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    const N: usize = 1000;
    for _ in 0..N {
        let (d, p, s) = (done.clone(), peak.clone(), server.clone());
        ev.create_connection(
            addr,
            Hello {
                t: None,
                done: done.clone(),
            },
            &ConnectOptions::new(),
            move |r| {
                r.unwrap();
                p.set(p.get().max(open_fds()));
                if s.accepted() as usize == N && d.get() == N {
                    s.close();
                }
            },
        )
        .unwrap();
    }
    // Close the server once every client finished.
    fn watch(ev: EventLoop, s: oxloop::protocol::Server, d: Rc<Cell<usize>>) {
        if d.get() == N {
            s.close();
        } else {
            let e2 = ev.clone();
            ev.call_later(Duration::from_millis(5), move || watch(e2, s, d));
        }
    }
    watch(ev.clone(), server.clone(), done.clone());
    ev.run().unwrap();
    assert_eq!(done.get(), N);
    assert_eq!(server.accepted() as usize, N);
    assert!(
        peak.get() > baseline + N / 2,
        "peak {} baseline {baseline}",
        peak.get()
    );
    assert_eq!(open_fds(), baseline, "fds leaked");
}
