//! Three event loops, one thread: tokio hosts oxloop, oxloop hosts calloop.
//!
//! Each loop owns a timer, a socket and a channel:
//!
//! - the timers fire at 5, 10 and 15 ms; each writes to the next loop's socket
//!   (oxloop → calloop → tokio → oxloop), so every socket is read by its own loop;
//! - a helper thread sends one message into each loop's channel.
//!
//! Once the nine events have arrived, the program shuts down from the outside in: the
//! oxloop driver returns to tokio, the calloop loop is taken out of oxloop (handed
//! back, then dropped), and oxloop is destroyed. Run it with
//! `cargo run -p oxloop --example three_loops --features tokio,calloop`.

use calloop::generic::Generic;
use calloop::timer::{TimeoutAction, Timer};
use oxloop::source::calloop::Calloop;
use oxloop::source::LoopSourceExt;
use oxloop::source::{channel, ChannelEvent};
use oxloop::{EventLoop, KeepAlive, LoopRemote};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The events each loop must see.
const EXPECTED: usize = 9;

/// What has happened so far; when everything has, the keep-alive is released.
struct Progress {
    events: Vec<String>,
    keep_alive: Option<KeepAlive>,
    remote: LoopRemote,
}

impl Progress {
    fn record(&mut self, event: String) {
        println!("{event}");
        self.events.push(event);
        if self.events.len() == EXPECTED {
            // Let the oxloop driver return; the nudge makes it look at once even when
            // this runs in a tokio task, outside oxloop's callbacks.
            self.keep_alive = None;
            let _ = self.remote.call_from_thread(|| {});
        }
    }
}

type Shared = Rc<RefCell<Progress>>;

/// Sets up all three loops, runs them until every event arrived, shuts them down and
/// returns the events in the order they came.
pub fn run() -> io::Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let ev = EventLoop::new()?;
    let progress: Shared = Rc::new(RefCell::new(Progress {
        events: Vec::new(),
        keep_alive: Some(ev.keep_alive()),
        remote: ev.remote(),
    }));

    // One socket pair per loop: the loop reads `*_in`, its predecessor writes `*_out`.
    let (oxloop_in, oxloop_out) = UnixStream::pair()?;
    let (calloop_in, calloop_out) = UnixStream::pair()?;
    let (tokio_in, tokio_out) = UnixStream::pair()?;

    // oxloop: a timer writing to calloop, a reader, a channel.
    let mut calloop_out = Some(calloop_out);
    let p = progress.clone();
    ev.call_later(Duration::from_millis(5), move || {
        p.borrow_mut().record("oxloop: timer".into());
        let mut out = calloop_out.take().expect("fires once");
        out.write_all(b"from oxloop").expect("socket write");
    });
    let p = progress.clone();
    let mut reader = oxloop_in;
    reader.set_nonblocking(true)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
    let ev2 = ev.clone();
    ev.add_reader(fd, move || {
        let mut buf = [0; 64];
        if let Ok(n) = reader.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            p.borrow_mut()
                .record(format!("oxloop: socket got {text:?}"));
            ev2.remove_reader(fd);
        }
    })?;
    let p = progress.clone();
    let (oxloop_tx, oxloop_rx) = channel(move |event: ChannelEvent<&'static str>| {
        if let ChannelEvent::Msg(m) = event {
            p.borrow_mut().record(format!("oxloop: channel got {m:?}"));
        }
    })?;
    ev.insert_source(oxloop_rx)?;

    // calloop: the same three, inside its own loop, itself inside oxloop.
    let inner: calloop::EventLoop<'static, ()> =
        calloop::EventLoop::try_new().map_err(io::Error::other)?;
    let handle = inner.handle();
    let p = progress.clone();
    let mut tokio_out = Some(tokio_out);
    handle
        .insert_source(
            Timer::from_duration(Duration::from_millis(10)),
            move |_, _, _| {
                p.borrow_mut().record("calloop: timer".into());
                let mut out = tokio_out.take().expect("fires once");
                out.write_all(b"from calloop").expect("socket write");
                TimeoutAction::Drop
            },
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
    let p = progress.clone();
    handle
        .insert_source(
            Generic::new(calloop_in, calloop::Interest::READ, calloop::Mode::Level),
            move |_, socket, _| {
                let mut buf = [0; 64];
                let n = (&**socket).read(&mut buf)?;
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                p.borrow_mut()
                    .record(format!("calloop: socket got {text:?}"));
                Ok(calloop::PostAction::Remove)
            },
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
    let (calloop_tx, calloop_rx) = calloop::channel::channel::<&'static str>();
    let p = progress.clone();
    handle
        .insert_source(calloop_rx, move |event, _, _| {
            if let calloop::channel::Event::Msg(m) = event {
                p.borrow_mut().record(format!("calloop: channel got {m:?}"));
            }
        })
        .map_err(|e| io::Error::other(e.to_string()))?;
    // calloop's timers are not visible on its fd: dispatch it every millisecond too.
    let calloop = ev.insert_source(Calloop::new(inner, ()).poll_every(Duration::from_millis(1)))?;
    // It rides along: oxloop's own work (and the keep-alive) decide when oxloop is done.
    calloop.set_ref(false);

    // tokio: the same three, as tasks on the runtime that hosts everything.
    let (tokio_tx, mut tokio_rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();

    // The helper thread feeds the three channels.
    let feeder = std::thread::spawn(move || {
        oxloop_tx.send("hello oxloop").expect("oxloop channel");
        calloop_tx.send("hello calloop").expect("calloop channel");
        tokio_tx.send("hello tokio").expect("tokio channel");
    });

    let start = Instant::now();
    let driven = local.block_on(&runtime, async {
        let p = progress.clone();
        let mut out = Some(oxloop_out);
        tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            p.borrow_mut().record("tokio: timer".into());
            out.take()
                .expect("once")
                .write_all(b"from tokio")
                .expect("socket write");
        });
        let p = progress.clone();
        tokio::task::spawn_local(async move {
            tokio_in.set_nonblocking(true).expect("non-blocking");
            let mut socket = tokio::net::UnixStream::from_std(tokio_in).expect("register");
            let mut buf = [0; 64];
            let n = socket.read(&mut buf).await.expect("socket read");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            p.borrow_mut().record(format!("tokio: socket got {text:?}"));
        });
        let p = progress.clone();
        tokio::task::spawn_local(async move {
            if let Some(m) = tokio_rx.recv().await {
                p.borrow_mut().record(format!("tokio: channel got {m:?}"));
            }
        });
        // oxloop (and calloop within it) run until the nine events are in.
        tokio::time::timeout(Duration::from_secs(10), oxloop::source::tokio::drive(&ev)).await
    });
    feeder.join().expect("feeder thread");
    driven.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the loops stalled"))??;
    println!("all {EXPECTED} events in {:?}", start.elapsed());

    // Shut down from the outside in.
    let (calloop_loop, ()) = calloop
        .remove()
        .expect("the calloop loop is still inserted")
        .into_inner();
    drop(calloop_loop);
    println!("calloop handed back and dropped");
    ev.destroy();
    drop(ev);
    drop(local);
    drop(runtime);
    println!("oxloop destroyed, tokio runtime dropped");
    let events = std::mem::take(&mut progress.borrow_mut().events);
    Ok(events)
}

#[allow(dead_code)] // also compiled into a test, which calls `run` directly
fn main() -> io::Result<()> {
    run()?;
    Ok(())
}
