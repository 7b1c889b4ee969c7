//! oxloop inside a tokio runtime, and tokio futures awaited from oxloop.

use oxloop::io::Async;
use oxloop::source::tokio::{drive, TokioBridge};
use oxloop::EventLoop;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn oxloop_and_tokio_both_progress_on_one_thread() {
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    let ev = EventLoop::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));

    // oxloop side: a timer, a socket read by a task, a call from another thread.
    let l = log.clone();
    ev.call_later(Duration::from_millis(5), move || {
        l.borrow_mut().push("oxloop timer")
    });
    let (a, mut b) = UnixStream::pair().unwrap();
    let l = log.clone();
    ev.spawn(async move {
        let a = Async::new(a).unwrap();
        let mut buf = [0; 5];
        let n = a.read_with(|mut s| s.read(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        l.borrow_mut().push("oxloop socket");
    });
    let remote = ev.remote();
    let keep = Rc::new(RefCell::new(Some(ev.keep_alive())));
    let k = keep.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        b.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        remote.call_from_thread(|| {}).unwrap();
    });
    // The cross-thread call must wake the loop while tokio sleeps: record it through a
    // flag set by the closure (closures from threads must be Send).
    let called = Arc::new(AtomicBool::new(false));

    // tokio side: a timer and a socket pair.
    let l2 = log.clone();
    let c = called.clone();
    let remote = ev.remote();
    let start = Instant::now();
    local.block_on(&rt, async move {
        let tokio_side = tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            l2.borrow_mut().push("tokio timer");
            let (mut x, mut y) = tokio::net::UnixStream::pair().unwrap();
            x.write_all(b"ping").await.unwrap();
            let mut buf = [0; 4];
            y.read_exact(&mut buf).await.unwrap();
            l2.borrow_mut().push("tokio socket");
            // From another thread, a call into the oxloop loop.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(60));
                remote
                    .call_from_thread(move || c.store(true, Ordering::SeqCst))
                    .unwrap();
            });
        });
        // Drop the keep-alive once the cross-thread call arrived. This tokio task is
        // outside the loop's callbacks, so it wakes the loop to have the change seen.
        let nudge = ev.remote();
        let watcher = tokio::task::spawn_local(async move {
            while !called.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            k.borrow_mut().take();
            nudge.call_from_thread(|| {}).unwrap();
        });
        drive(&ev).await.unwrap();
        tokio_side.await.unwrap();
        watcher.await.unwrap();
    });
    writer.join().unwrap();
    drop(keep);
    assert!(start.elapsed() < Duration::from_secs(5));
    let log = log.borrow();
    for event in [
        "oxloop timer",
        "oxloop socket",
        "tokio timer",
        "tokio socket",
    ] {
        assert!(log.contains(&event), "missing {event}: {log:?}");
    }
}

#[test]
fn a_call_from_another_thread_wakes_the_driven_loop_promptly() {
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    let ev = EventLoop::new().unwrap();
    let keep = ev.keep_alive();
    let keep = Rc::new(RefCell::new(Some(keep)));
    let remote = ev.remote();
    let arrived = Arc::new(std::sync::Mutex::new(None));
    let a = arrived.clone();
    let sent = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let sent = Instant::now();
        remote
            .call_from_thread(move || *a.lock().unwrap() = Some(sent.elapsed()))
            .unwrap();
    });
    let k = keep.clone();
    let ev2 = ev.clone();
    // Ends the drive once the call has run (checked by an oxloop timer).
    fn check(
        ev: EventLoop,
        arrived: Arc<std::sync::Mutex<Option<Duration>>>,
        k: Rc<RefCell<Option<oxloop::KeepAlive>>>,
    ) {
        let ev2 = ev.clone();
        ev.call_later(Duration::from_millis(50), move || {
            if arrived.lock().unwrap().is_some() {
                k.borrow_mut().take();
            } else {
                check(ev2, arrived, k);
            }
        });
    }
    check(ev2, arrived.clone(), k);
    local.block_on(&rt, drive(&ev)).unwrap();
    t.join().unwrap();
    let latency = arrived.lock().unwrap().expect("the call ran");
    // Without `prepare_wait` the call would wait for the next 50 ms check timer.
    assert!(latency < Duration::from_millis(40), "latency {latency:?}");
    assert!(sent.elapsed() < Duration::from_secs(5));
}

#[test]
fn bridge_runs_tokio_futures_for_oxloop() {
    let ev = EventLoop::new().unwrap();
    let bridge = TokioBridge::new().unwrap();
    // A tokio-only API: tokio's TCP listener and stream, driven on the bridge's runtime.
    let got = ev
        .block_on(bridge.spawn(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(b"over tokio").await.unwrap();
            });
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut text = String::new();
            conn.read_to_string(&mut text).await.unwrap();
            client.await.unwrap();
            text
        }))
        .unwrap()
        .unwrap();
    assert_eq!(got, "over tokio");
    let n = ev
        .block_on(async {
            let a = bridge.spawn(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                1
            });
            let b = bridge.spawn(async { 2 });
            a.await.unwrap() + b.await.unwrap()
        })
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn dropping_the_bridged_future_cancels_the_tokio_task() {
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let ev = EventLoop::new().unwrap();
    let bridge = TokioBridge::new().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = SetOnDrop(dropped.clone());
    let result = ev
        .block_on(oxloop::task::timeout(
            Duration::from_millis(20),
            bridge.spawn(async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }),
        ))
        .unwrap();
    assert!(result.is_err(), "timed out");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the tokio task was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Dropping the bridge shuts its runtime down: pending work is refused.
    let pending = bridge.spawn(async { tokio::time::sleep(Duration::from_secs(60)).await });
    let start = Instant::now();
    drop(bridge);
    assert!(start.elapsed() < Duration::from_secs(5));
    let err = ev.block_on(pending).unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
}
