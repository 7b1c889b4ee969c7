//! GLib and oxloop in one thread, both ways round. GLib's default main context is
//! process-wide, so the tests take turns.

use oxloop::io::Async;
use oxloop::source::glib::{attach, GlibContext};
use oxloop::source::LoopSourceExt;
use oxloop::EventLoop;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static TURN: Mutex<()> = Mutex::new(());

#[test]
fn glib_context_runs_inside_oxloop() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let ev = EventLoop::new().unwrap();
    let ctx = glib::MainContext::new();
    let count = Arc::new(AtomicUsize::new(0));

    // A GLib timeout, a GLib fd watch, and a call from another thread into GLib.
    let c = count.clone();
    glib::timeout_source_new(
        Duration::from_millis(5),
        None,
        glib::Priority::DEFAULT,
        move || {
            c.fetch_add(1, Ordering::SeqCst);
            glib::ControlFlow::Break
        },
    )
    .attach(Some(&ctx));
    let (a, mut b) = UnixStream::pair().unwrap();
    let c = count.clone();
    let a = Mutex::new(a);
    let fd = a.lock().unwrap().as_raw_fd();
    glib::source::unix_fd_source_new(
        fd,
        glib::IOCondition::IN,
        None,
        glib::Priority::DEFAULT,
        move |_, _| {
            let mut buf = [0; 8];
            let n = a.lock().unwrap().read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"glib");
            c.fetch_add(1, Ordering::SeqCst);
            glib::ControlFlow::Break
        },
    )
    .attach(Some(&ctx));
    let handle = ev.insert_source(GlibContext::new(ctx.clone())).unwrap();
    let c = count.clone();
    let ctx2 = ctx.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        b.write_all(b"glib").unwrap();
        ctx2.invoke(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        b
    });

    let start = Instant::now();
    let ev2 = ev.clone();
    let c = count.clone();
    fn poll(ev: EventLoop, c: Arc<AtomicUsize>) {
        if c.load(Ordering::SeqCst) == 3 {
            ev.stop();
        } else {
            let ev2 = ev.clone();
            ev.call_later(Duration::from_millis(1), move || poll(ev2, c));
        }
    }
    poll(ev2, c);
    ev.run_forever().unwrap();
    let _b = t.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // Handed back, the context still works on its own.
    let ctx = handle.remove().unwrap().into_inner();
    let _owner = ctx.acquire().unwrap();
    ctx.iteration(false);
}

#[test]
fn oxloop_runs_inside_glib() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let ev = EventLoop::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    ev.call_later(Duration::from_millis(5), move || {
        l.borrow_mut().push("oxloop timer")
    });
    let (a, mut b) = UnixStream::pair().unwrap();
    let l = log.clone();
    ev.spawn(async move {
        let a = Async::new(a).unwrap();
        let mut buf = [0; 8];
        let n = a.read_with(|mut s| s.read(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], b"oxloop");
        l.borrow_mut().push("oxloop socket");
    });
    let remote = ev.remote();
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        b.write_all(b"oxloop").unwrap();
        remote
            .call_from_thread(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        b
    });
    let host = attach(&ev).unwrap();
    let ctx = glib::MainContext::default();
    let _owner = ctx.acquire().unwrap();
    let l = log.clone();
    let glib_timer = glib::timeout_add_local_once(Duration::from_millis(3), move || {
        l.borrow_mut().push("glib timer")
    });
    let _ = glib_timer;
    // A watchdog, so a missed wake-up fails the test instead of hanging it.
    let watchdog =
        glib::timeout_add_local(Duration::from_millis(100), || glib::ControlFlow::Continue);
    let start = Instant::now();
    while !(log.borrow().len() == 3 && called.load(Ordering::SeqCst) == 1) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            log.borrow()
        );
        ctx.iteration(true);
    }
    let _b = t.join().unwrap();
    let log = log.borrow();
    for event in ["oxloop timer", "oxloop socket", "glib timer"] {
        assert!(log.contains(&event), "missing {event}: {log:?}");
    }
    watchdog.remove();
    drop(host);
    ev.destroy();
    // Detached: GLib has nothing of oxloop's left to run.
    assert!(!ctx.pending());
}
