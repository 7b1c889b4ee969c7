//! The core loop through its public API: ordering, cancellation, run/stop/step,
//! cross-thread calls, fd watchers on real pipes and sockets, panics.

use oxloop::EventLoop;
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Log<T> = Rc<RefCell<Vec<T>>>;
type Checker = Box<dyn FnMut(usize, usize)>;

fn log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn call_soon_runs_in_fifo_order() {
    let ev = EventLoop::new().unwrap();
    let seen = log();
    for i in 0..100 {
        let seen = seen.clone();
        ev.call_soon(move || seen.borrow_mut().push(i));
    }
    ev.run().unwrap();
    assert_eq!(*seen.borrow(), (0..100).collect::<Vec<_>>());
}

#[test]
fn callback_scheduled_during_an_iteration_waits_for_the_next() {
    let ev = EventLoop::new().unwrap();
    let seen: Log<(&str, u64)> = log();
    let (s, e) = (seen.clone(), ev.clone());
    ev.call_soon(move || {
        s.borrow_mut().push(("first", e.iterations()));
        let (s2, e2) = (s.clone(), e.clone());
        e.call_soon(move || s2.borrow_mut().push(("second", e2.iterations())));
    });
    ev.run().unwrap();
    let seen = seen.borrow();
    assert_eq!(seen[0].0, "first");
    assert_eq!(seen[1].0, "second");
    assert_eq!(
        seen[1].1,
        seen[0].1 + 1,
        "the nested callback ran in the same iteration"
    );
}

#[test]
fn io_is_not_starved_by_a_self_rescheduling_callback() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let got_io = Rc::new(Cell::new(false));
    let g = got_io.clone();
    let e = ev.clone();
    let fd = a.as_raw_fd();
    ev.add_reader(fd, move || {
        g.set(true);
        e.remove_reader(fd);
        e.stop();
    })
    .unwrap();
    fn spin(ev: EventLoop, count: Rc<Cell<u32>>) {
        count.set(count.get() + 1);
        let e = ev.clone();
        ev.call_soon(move || spin(e, count));
    }
    let count = Rc::new(Cell::new(0));
    spin(ev.clone(), count.clone());
    ev.run_forever().unwrap();
    assert!(got_io.get());
    assert!(count.get() < 10, "I/O waited {} iterations", count.get());
    drop(a);
    // The spinning callback is still queued and holds the loop: only `destroy` frees it.
    ev.destroy();
}

#[test]
fn timers_fire_in_deadline_order_fifo_among_equals_never_early() {
    let ev = EventLoop::new().unwrap();
    let seen: Log<(u32, Duration)> = log();
    let start = Instant::now();
    let at = start + Duration::from_millis(30);
    for (i, delay_ms) in [(1, 40u64), (2, 10), (3, 20), (4, 10)] {
        let s = seen.clone();
        ev.call_later(Duration::from_millis(delay_ms), move || {
            s.borrow_mut().push((i, start.elapsed()))
        });
    }
    for i in [5, 6] {
        let s = seen.clone();
        ev.call_at(at, move || s.borrow_mut().push((i, start.elapsed())));
    }
    ev.run().unwrap();
    let seen = seen.borrow();
    let order: Vec<u32> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, vec![2, 4, 3, 5, 6, 1]);
    let deadlines = [(1, 40), (2, 10), (3, 20), (4, 10), (5, 30), (6, 30)];
    for (i, elapsed) in seen.iter() {
        let due = deadlines.iter().find(|(n, _)| n == i).unwrap().1;
        assert!(
            *elapsed >= Duration::from_millis(due),
            "timer {i} fired after {elapsed:?}, before its {due} ms"
        );
    }
}

#[test]
fn call_at_in_the_past_runs_next_iteration() {
    let ev = EventLoop::new().unwrap();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    ev.call_at(Instant::now() - Duration::from_secs(1), move || r.set(true));
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert!(ran.get());
}

#[test]
fn time_is_cached_per_iteration_and_monotonic() {
    let ev = EventLoop::new().unwrap();
    let t0 = ev.time();
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(ev.time(), t0, "time() changed without an iteration");
    ev.run_once(Some(Duration::ZERO)).unwrap();
    let t1 = ev.time();
    assert!(t1 >= t0 + Duration::from_millis(2));
    // Read at the first use after a wait, then the same for the rest of the iteration.
    let seen: Log<Instant> = log();
    let (s, e) = (seen.clone(), ev.clone());
    ev.call_soon(move || {
        s.borrow_mut().push(e.time());
        std::thread::sleep(Duration::from_millis(2));
        s.borrow_mut().push(e.time());
    });
    ev.run_once(Some(Duration::ZERO)).unwrap();
    let seen = seen.borrow();
    assert_eq!(seen[0], seen[1], "time() changed within an iteration");
    assert!(seen[0] >= t1);
}

#[test]
fn every_kind_of_handle_can_be_cancelled() {
    let ev = EventLoop::new().unwrap();
    let seen: Log<&str> = log();
    let s = seen.clone();
    let soon = ev.call_soon(move || s.borrow_mut().push("soon"));
    let s = seen.clone();
    let later = ev.call_later(Duration::from_millis(1), move || {
        s.borrow_mut().push("later")
    });
    let s = seen.clone();
    let at = ev.call_at(Instant::now(), move || s.borrow_mut().push("at"));
    let s = seen.clone();
    let kept = ev.call_soon(move || s.borrow_mut().push("kept"));
    assert!(soon.is_pending() && later.is_pending() && at.is_pending());
    assert!(soon.cancel());
    assert!(later.cancel());
    assert!(at.cancel());
    assert!(!soon.cancel(), "a second cancel reports nothing to cancel");
    assert!(!later.is_pending());
    ev.run().unwrap();
    assert_eq!(*seen.borrow(), vec!["kept"]);
    assert!(!kept.is_pending());
    assert!(!kept.cancel(), "cancelling after it ran does nothing");
}

#[test]
fn cancelling_drops_the_callback_at_once() {
    let ev = EventLoop::new().unwrap();
    let token = Rc::new(());
    let t = token.clone();
    let h = ev.call_later(Duration::from_secs(3600), move || drop(t));
    assert_eq!(Rc::strong_count(&token), 2);
    h.cancel();
    assert_eq!(Rc::strong_count(&token), 1);
}

#[test]
fn a_callback_can_cancel_a_later_one_in_the_same_iteration() {
    let ev = EventLoop::new().unwrap();
    let seen: Log<u32> = log();
    let victim: Rc<RefCell<Option<oxloop::Handle>>> = Rc::new(RefCell::new(None));
    let (s, v) = (seen.clone(), victim.clone());
    ev.call_soon(move || {
        s.borrow_mut().push(1);
        v.borrow().as_ref().unwrap().cancel();
    });
    let s = seen.clone();
    *victim.borrow_mut() = Some(ev.call_soon(move || s.borrow_mut().push(2)));
    ev.run().unwrap();
    assert_eq!(*seen.borrow(), vec![1]);
}

#[test]
fn run_returns_when_work_runs_out() {
    let ev = EventLoop::new().unwrap();
    let start = Instant::now();
    ev.call_later(Duration::from_millis(20), || {});
    ev.run().unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(20));
    assert!(took < Duration::from_secs(5));
    // Nothing at all: returns at once.
    ev.run().unwrap();
}

#[test]
fn unreferenced_handles_do_not_keep_run_going() {
    let ev = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let h = ev.call_later(Duration::from_secs(3600), move || f.set(true));
    h.unref();
    let (a, _b) = UnixStream::pair().unwrap();
    ev.add_reader(a.as_raw_fd(), || {}).unwrap();
    assert!(ev.set_fd_ref(a.as_raw_fd(), false));
    let start = Instant::now();
    ev.run().unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(!fired.get());
    // Re-referenced, the fd keeps the loop alive: run_once must be used to observe it.
    assert!(ev.set_fd_ref(a.as_raw_fd(), true));
    assert!(ev.has_work());
    ev.remove_reader(a.as_raw_fd());
    h.set_ref(true);
    assert!(ev.has_work());
    h.cancel();
    assert!(!ev.has_work());
}

#[test]
fn unreferenced_timer_still_fires_while_the_loop_runs_for_others() {
    let ev = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    ev.call_later(Duration::from_millis(5), move || f.set(true))
        .unref();
    ev.call_later(Duration::from_millis(30), || {});
    ev.run().unwrap();
    assert!(fired.get());
}

#[test]
fn keep_alive_guard_keeps_run_going_until_dropped() {
    let ev = EventLoop::new().unwrap();
    let guard = Rc::new(RefCell::new(Some(ev.keep_alive())));
    let g = guard.clone();
    // Before the timer is made: its 20 ms count from then.
    let start = Instant::now();
    ev.call_later(Duration::from_millis(20), move || {
        g.borrow_mut().take();
    });
    ev.run().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(guard.borrow().is_none());
}

#[test]
fn stop_from_a_callback_ends_run_forever_after_that_iteration() {
    let ev = EventLoop::new().unwrap();
    let seen: Log<&str> = log();
    let (s, e) = (seen.clone(), ev.clone());
    ev.call_soon(move || {
        s.borrow_mut().push("stopper");
        e.stop();
        let s2 = s.clone();
        e.call_soon(move || s2.borrow_mut().push("next iteration"));
    });
    let s = seen.clone();
    ev.call_soon(move || s.borrow_mut().push("same iteration"));
    ev.run_forever().unwrap();
    assert_eq!(*seen.borrow(), vec!["stopper", "same iteration"]);
    // The loop can be run again and picks up where it stopped.
    ev.run().unwrap();
    assert_eq!(seen.borrow().last(), Some(&"next iteration"));
}

#[test]
fn stop_before_run_does_one_non_blocking_iteration() {
    let ev = EventLoop::new().unwrap();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    ev.call_soon(move || r.set(true));
    ev.call_later(Duration::from_secs(3600), || {});
    ev.stop();
    let start = Instant::now();
    ev.run_forever().unwrap();
    assert!(ran.get());
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn stop_from_another_thread() {
    let ev = EventLoop::new().unwrap();
    let remote = ev.remote();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        remote.stop().unwrap();
    });
    let start = Instant::now();
    ev.run_forever().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(15));
    t.join().unwrap();
}

#[test]
fn run_once_with_zero_timeout_does_not_block() {
    let ev = EventLoop::new().unwrap();
    ev.call_later(Duration::from_secs(3600), || {});
    let (a, _b) = UnixStream::pair().unwrap();
    ev.add_reader(a.as_raw_fd(), || {}).unwrap();
    let start = Instant::now();
    for _ in 0..100 {
        ev.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(ev.iterations(), 100);
}

#[test]
fn run_once_with_a_timeout_waits_that_long_or_until_io() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let got = Rc::new(Cell::new(0));
    let g = got.clone();
    let mut reader = a.try_clone().unwrap();
    reader.set_nonblocking(true).unwrap();
    ev.add_reader(a.as_raw_fd(), move || {
        let mut buf = [0; 16];
        g.set(g.get() + reader.read(&mut buf).unwrap());
    })
    .unwrap();
    let start = Instant::now();
    ev.run_once(Some(Duration::from_millis(30))).unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(30),
        "returned after {waited:?}"
    );
    assert_eq!(got.get(), 0);

    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        b.write_all(b"hello").unwrap();
        b
    });
    let start = Instant::now();
    ev.run_once(Some(Duration::from_secs(10))).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(got.get(), 5);
    drop(writer.join().unwrap());
}

#[test]
fn next_timeout_reports_how_long_the_loop_may_sleep() {
    let ev = EventLoop::new().unwrap();
    assert_eq!(ev.next_timeout(), None);
    let h = ev.call_later(Duration::from_millis(500), || {});
    let t = ev.next_timeout().unwrap();
    assert!(t > Duration::from_millis(400) && t <= Duration::from_millis(500));
    ev.call_soon(|| {});
    assert_eq!(ev.next_timeout(), Some(Duration::ZERO));
    ev.run_once(None).unwrap();
    h.cancel();
    assert_eq!(ev.next_timeout(), None);
}

#[test]
fn cross_thread_calls_from_8_threads_are_delivered_exactly_once_in_order() {
    const THREADS: usize = 8;
    const CALLS: usize = 100_000;
    let ev = EventLoop::new().unwrap();
    let next: Rc<RefCell<Vec<usize>>> = Rc::new(RefCell::new(vec![0; THREADS]));
    let total = Arc::new(AtomicUsize::new(0));
    let guard = Rc::new(RefCell::new(Some(ev.keep_alive())));
    let mut threads = Vec::new();
    // Each call carries (thread, index); the loop thread checks each thread's sequence
    // arrives complete and in order. The counter lives on the loop thread, reached
    // through the thread-local current loop.
    thread_local! {
        static CHECK: RefCell<Option<Checker>> = const { RefCell::new(None) };
    }
    let n = next.clone();
    let g = guard.clone();
    let tot = total.clone();
    CHECK.with(|c| {
        *c.borrow_mut() = Some(Box::new(move |thread, i| {
            let mut n = n.borrow_mut();
            assert_eq!(
                n[thread], i,
                "thread {thread}: call {i} out of order or repeated"
            );
            n[thread] += 1;
            if tot.fetch_add(1, Ordering::Relaxed) + 1 == THREADS * CALLS {
                g.borrow_mut().take();
            }
        }))
    });
    for thread in 0..THREADS {
        let remote = ev.remote();
        threads.push(std::thread::spawn(move || {
            for i in 0..CALLS {
                remote
                    .call_from_thread(move || {
                        CHECK.with(|c| (c.borrow_mut().as_mut().unwrap())(thread, i))
                    })
                    .unwrap();
            }
        }));
    }
    ev.run().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(total.load(Ordering::Relaxed), THREADS * CALLS);
    assert!(next.borrow().iter().all(|&n| n == CALLS));
    CHECK.with(|c| c.borrow_mut().take());
}

/// The loop's waits announce that it sleeps only once something that another thread
/// can wake it through exists: a remote handed out by a callback, after the loop has
/// already blocked without one, must still wake its next blocking wait.
#[test]
fn a_remote_handed_out_while_running_wakes_the_blocked_loop() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        b.write_all(b"x").unwrap();
        b
    });
    let called = Arc::new(AtomicUsize::new(0));
    let helper = Rc::new(RefCell::new(None));
    let (ev2, c, h) = (ev.clone(), called.clone(), helper.clone());
    let mut reader = a.try_clone().unwrap();
    let fd = a.as_raw_fd();
    ev.add_reader(fd, move || {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).unwrap();
        ev2.remove_reader(fd);
        let (remote, c) = (ev2.remote(), c.clone());
        *h.borrow_mut() = Some(std::thread::spawn(move || {
            // Long enough for the loop to be blocked in its next wait.
            std::thread::sleep(Duration::from_millis(50));
            remote
                .call_from_thread(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            remote.stop().unwrap();
        }));
    })
    .unwrap();
    // A safety net: were the wake-up lost, this would end the run, far too late. A
    // watched fd, not a timer: a pending timer keeps the loop announcing its sleeps,
    // and the wait without the announcement is what this test is about.
    let (net, mut net_writer) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = net_writer.write_all(b"!");
    });
    let ev3 = ev.clone();
    ev.add_reader(net.as_raw_fd(), move || ev3.stop()).unwrap();
    let started = Instant::now();
    ev.run_forever().unwrap();
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    ev.remove_reader(net.as_raw_fd());
    writer.join().unwrap();
    helper.borrow_mut().take().unwrap().join().unwrap();
}

#[test]
fn call_from_thread_fails_once_the_loop_is_gone() {
    let ev = EventLoop::new().unwrap();
    let remote = ev.remote();
    assert!(!remote.is_closed());
    drop(ev);
    assert!(remote.is_closed());
    assert!(remote.call_from_thread(|| {}).is_err());
    assert!(remote.stop().is_err());
}

#[test]
fn reader_is_level_triggered_and_can_remove_itself() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"unread").unwrap();
    let calls = Rc::new(Cell::new(0));
    let (c, e) = (calls.clone(), ev.clone());
    let fd = a.as_raw_fd();
    ev.add_reader(fd, move || {
        c.set(c.get() + 1);
        if c.get() == 3 {
            assert!(
                e.remove_reader(fd),
                "removing itself reports it was installed"
            );
        }
    })
    .unwrap();
    ev.run().unwrap(); // ends once the reader removed itself
    assert_eq!(
        calls.get(),
        3,
        "not called on every iteration while readable"
    );
    assert!(!ev.remove_reader(fd));
}

#[test]
fn writer_on_a_pipe_fills_it_then_removes_itself() {
    let ev = EventLoop::new().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    set_nonblocking(writer.as_raw_fd());
    let written = Rc::new(Cell::new(0usize));
    let (w, e) = (written.clone(), ev.clone());
    let fd = writer.as_raw_fd();
    let mut writer = Some(writer);
    ev.add_writer(fd, move || {
        // A full pipe is not reported writable, so fill it within one call.
        let chunk = [7u8; 4096];
        loop {
            match writer.as_mut().unwrap().write(&chunk) {
                Ok(n) => w.set(w.get() + n),
                Err(e2) if e2.kind() == io::ErrorKind::WouldBlock => {
                    assert!(e.remove_writer(fd));
                    writer.take(); // closes the write end from inside its own callback
                    break;
                }
                Err(e2) => panic!("{e2}"),
            }
        }
    })
    .unwrap();
    ev.run().unwrap();
    assert!(
        written.get() >= 4096,
        "pipe took only {} bytes",
        written.get()
    );
    let mut all = Vec::new();
    reader.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), written.get());
    assert!(all.iter().all(|&b| b == 7));
}

fn set_nonblocking(fd: i32) {
    // Test helper: std's pipe ends have no set_nonblocking, so go through fcntl.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

#[test]
fn reader_and_writer_on_one_socket_and_replacing_a_callback() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let seen: Log<String> = log();
    let fd = a.as_raw_fd();
    let s = seen.clone();
    ev.add_reader(fd, move || s.borrow_mut().push("old reader".into()))
        .unwrap();
    let (s, e, mut sock) = (seen.clone(), ev.clone(), a.try_clone().unwrap());
    ev.add_reader(fd, move || {
        let mut buf = [0; 64];
        let n = sock.read(&mut buf).unwrap();
        s.borrow_mut()
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        e.remove_reader(fd);
    })
    .unwrap();
    let (s, e, mut sock) = (seen.clone(), ev.clone(), a.try_clone().unwrap());
    ev.add_writer(fd, move || {
        sock.write_all(b"ping").unwrap();
        s.borrow_mut().push("wrote".into());
        e.remove_writer(fd);
    })
    .unwrap();
    b.write_all(b"hello").unwrap();
    ev.run().unwrap();
    assert_eq!(
        *seen.borrow(),
        vec!["hello".to_string(), "wrote".to_string()]
    );
    let mut buf = [0; 4];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn peer_hang_up_wakes_the_reader() {
    let ev = EventLoop::new().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let (e, mut sock) = (ev.clone(), a.try_clone().unwrap());
    let eof = Rc::new(Cell::new(false));
    let f = eof.clone();
    let fd = a.as_raw_fd();
    ev.add_reader(fd, move || {
        let mut buf = [0; 8];
        if sock.read(&mut buf).unwrap() == 0 {
            f.set(true);
            e.remove_reader(fd);
        }
    })
    .unwrap();
    drop(b);
    ev.run().unwrap();
    assert!(eof.get());
}

#[test]
fn unwatchable_fds_are_errors_not_panics() {
    let ev = EventLoop::new().unwrap();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let err = ev.add_reader(file.as_raw_fd(), || {}).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let (a, _b) = UnixStream::pair().unwrap();
    let closed = a.as_raw_fd();
    drop(a);
    assert!(ev.add_reader(closed, || {}).is_err());
    assert!(ev.add_writer(-1, || {}).is_err());
    assert!(
        !ev.has_work(),
        "a refused watcher must leave nothing behind"
    );
}

#[test]
fn a_watcher_left_on_a_closed_fd_can_be_replaced_when_the_number_is_reused() {
    let ev = EventLoop::new().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    ev.add_reader(fd, || {}).unwrap();
    drop(a); // closed behind the loop's back: the kernel forgets it
    let (c, mut d) = UnixStream::pair().unwrap();
    let got = Rc::new(Cell::new(false));
    let (g, e) = (got.clone(), ev.clone());
    let cfd = c.as_raw_fd();
    ev.add_reader(cfd, move || {
        g.set(true);
        e.remove_reader(cfd);
    })
    .unwrap();
    if cfd != fd {
        ev.remove_reader(fd);
    }
    d.write_all(b"x").unwrap();
    ev.run().unwrap();
    assert!(got.get());
}

#[test]
fn one_loop_per_thread_and_the_current_loop() {
    assert_eq!(
        EventLoop::current().unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    let ev = EventLoop::new().unwrap();
    let err = EventLoop::new().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert!(EventLoop::current().unwrap().ptr_eq(&ev));
    // Other threads have their own.
    std::thread::spawn(|| {
        assert!(EventLoop::current().is_err());
        let other = EventLoop::new().unwrap();
        assert!(EventLoop::current().unwrap().ptr_eq(&other));
    })
    .join()
    .unwrap();
    // After destroy (other handles still alive) a new loop can be created.
    let keep = ev.clone();
    ev.destroy();
    assert!(EventLoop::current().is_err());
    let again = EventLoop::new().unwrap();
    assert!(!again.ptr_eq(&keep));
    drop(again);
    // And after the last handle is dropped.
    let third = EventLoop::new().unwrap();
    drop(third);
    EventLoop::new().unwrap();
}

#[test]
fn a_destroyed_loop_refuses_work_and_drops_what_it_held() {
    let ev = EventLoop::new().unwrap();
    let token = Rc::new(());
    let (t1, t2, t3) = (token.clone(), token.clone(), token.clone());
    ev.call_soon(move || drop(t1));
    ev.call_later(Duration::from_secs(60), move || drop(t2));
    let (a, _b) = UnixStream::pair().unwrap();
    ev.add_reader(a.as_raw_fd(), move || {
        let _ = &t3;
    })
    .unwrap();
    assert_eq!(Rc::strong_count(&token), 4);
    ev.destroy();
    assert_eq!(Rc::strong_count(&token), 1);
    assert!(ev.is_destroyed());
    assert!(ev.run().is_err());
    assert!(ev.add_reader(a.as_raw_fd(), || {}).is_err());
    assert!(!ev.call_soon(|| {}).is_pending());
    ev.destroy(); // idempotent
}

#[test]
fn destroy_from_inside_a_callback_ends_the_run() {
    let ev = EventLoop::new().unwrap();
    let e = ev.clone();
    ev.call_soon(move || e.destroy());
    ev.call_later(Duration::from_secs(3600), || {});
    ev.run().unwrap();
    assert!(ev.is_destroyed());
}

#[test]
fn running_twice_is_refused() {
    let ev = EventLoop::new().unwrap();
    let e = ev.clone();
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    ev.call_soon(move || *r.borrow_mut() = Some(e.run_once(Some(Duration::ZERO))));
    ev.run().unwrap();
    let err = result.borrow_mut().take().unwrap().unwrap_err();
    assert!(err.to_string().contains("already running"));
}

#[test]
fn a_panicking_callback_goes_to_the_exception_handler_and_the_loop_goes_on() {
    let ev = EventLoop::new().unwrap();
    let caught: Log<String> = log();
    let c = caught.clone();
    ev.set_exception_handler(move |p| c.borrow_mut().push(p.message().to_string()));
    let after = Rc::new(Cell::new(0));
    ev.call_soon(|| panic!("boom in call_soon"));
    let a = after.clone();
    ev.call_soon(move || a.set(a.get() + 1));
    ev.call_later(Duration::from_millis(1), || panic!("boom in a timer"));
    let (s, mut w) = UnixStream::pair().unwrap();
    w.write_all(b"x").unwrap();
    let e = ev.clone();
    let fd = s.as_raw_fd();
    ev.add_reader(fd, move || {
        e.remove_reader(fd);
        panic!("boom in a reader")
    })
    .unwrap();
    let a = after.clone();
    ev.call_later(Duration::from_millis(5), move || a.set(a.get() + 1));
    ev.run().unwrap();
    assert_eq!(after.get(), 2);
    let mut caught = caught.borrow().clone();
    caught.sort();
    assert_eq!(
        caught,
        vec!["boom in a reader", "boom in a timer", "boom in call_soon"]
    );
}

#[test]
fn panics_go_to_the_default_handler_without_one_set() {
    let ev = EventLoop::new().unwrap();
    let ran = Rc::new(Cell::new(false));
    ev.call_soon(|| panic!("logged, not fatal"));
    let r = ran.clone();
    ev.call_soon(move || r.set(true));
    ev.run().unwrap();
    assert!(ran.get());
}

#[test]
fn panics_can_be_made_to_propagate() {
    let ev = EventLoop::new().unwrap();
    ev.set_propagate_panics(true);
    ev.call_soon(|| panic!("through run"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ev.run()));
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"through run"));
    assert!(!ev.is_running(), "the loop must not stay marked as running");
    ev.run().unwrap();
}

#[test]
fn the_loop_fd_becomes_readable_when_there_is_io_to_dispatch() {
    let ev = EventLoop::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let got = Rc::new(Cell::new(false));
    let (g, e) = (got.clone(), ev.clone());
    let fd = a.as_raw_fd();
    ev.add_reader(fd, move || {
        g.set(true);
        e.remove_reader(fd);
    })
    .unwrap();
    let poll_loop_fd = |timeout_ms: i32| {
        let mut pfd = libc::pollfd {
            fd: ev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) }
    };
    assert_eq!(poll_loop_fd(0), 0, "nothing ready yet");
    b.write_all(b"x").unwrap();
    assert_eq!(poll_loop_fd(1000), 1);
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert!(got.get());
    // A cross-thread call makes it readable too, so a host loop wakes for it.
    let remote = ev.remote();
    std::thread::spawn(move || remote.call_from_thread(|| {}).unwrap())
        .join()
        .unwrap();
    assert!(ev.next_timeout() == Some(Duration::ZERO) || poll_loop_fd(1000) == 1);
}

#[test]
fn detached_loops_live_beside_the_current_one() {
    let current = EventLoop::new().unwrap();
    let a = EventLoop::new_detached().unwrap();
    let b = EventLoop::new_detached().unwrap();
    assert!(EventLoop::current().unwrap().ptr_eq(&current));
    let ran = std::rc::Rc::new(std::cell::Cell::new(0));
    for ev in [&a, &b] {
        let ran = ran.clone();
        ev.call_soon(move || ran.set(ran.get() + 1));
    }
    a.run().unwrap();
    assert_eq!(ran.get(), 1, "running one loop runs only its own callbacks");
    b.run().unwrap();
    assert_eq!(ran.get(), 2);
    a.destroy();
    assert!(EventLoop::current().unwrap().ptr_eq(&current));
}

#[test]
fn a_detached_loop_can_become_the_current_one() {
    let ev = EventLoop::new_detached().unwrap();
    assert!(EventLoop::current().is_err());
    ev.make_current().unwrap();
    ev.make_current().unwrap(); // again: nothing changes
    assert!(EventLoop::current().unwrap().ptr_eq(&ev));
    // Tasks need the current loop: their wakers find it there.
    let done = ev.spawn(async {
        oxloop::task::sleep(Duration::from_millis(1)).await;
        7
    });
    assert_eq!(ev.block_on(done).unwrap().unwrap(), 7);
    let other = EventLoop::new_detached().unwrap();
    let err = other.make_current().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    ev.destroy();
    assert!(EventLoop::current().is_err());
    other.make_current().unwrap();
    other.destroy();
}

#[test]
fn the_wait_wrapper_runs_around_blocking_waits_only() {
    thread_local! {
        static WRAPPED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    fn wrapper(wait: &mut dyn FnMut()) {
        WRAPPED.with(|w| w.set(w.get() + 1));
        wait();
    }
    let ev = EventLoop::new_detached().unwrap();
    ev.set_wait_wrapper(Some(wrapper));
    ev.call_soon(|| {});
    ev.run_once(None).unwrap();
    assert_eq!(
        WRAPPED.with(|w| w.get()),
        0,
        "a ready callback means no blocking wait"
    );
    ev.call_later(Duration::from_millis(5), || {});
    ev.run().unwrap();
    assert!(
        WRAPPED.with(|w| w.get()) >= 1,
        "waiting for a timer goes through the wrapper"
    );
}

/// `run_while` runs iterations until its closure says no, running the loop's work as
/// `run_once` does, and the loop counts as running meanwhile.
#[test]
fn run_while_iterates_until_told_to_end() {
    let ev = EventLoop::new().unwrap();
    let ran = Rc::new(Cell::new(0));
    for _ in 0..3 {
        let ran = ran.clone();
        ev.call_soon(move || ran.set(ran.get() + 1));
    }
    let mut iterations = 0;
    let e = ev.clone();
    ev.run_while(|| {
        iterations += 1;
        assert!(e.is_running());
        if iterations == 1 {
            e.call_later(Duration::from_millis(5), || {});
        }
        iterations < 2
    })
    .unwrap();
    assert_eq!(ran.get(), 3);
    assert_eq!(iterations, 2, "the second iteration waited for the timer");
    assert!(!ev.is_running());
}

/// Runs one scenario: the first iteration queues a callback, makes an fd readable, sets
/// a timer that is due at once and has another thread call the loop; the second
/// iteration's wait reports all of them. The order they run in, by name.
fn order_of_an_iteration(io_behind_ready: bool) -> Vec<&'static str> {
    let ev = EventLoop::new().unwrap();
    ev.set_io_behind_ready(io_behind_ready);
    let seen: Log<&'static str> = log();
    let (a, b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    let (s, e) = (seen.clone(), ev.clone());
    ev.call_soon(move || {
        (&b).write_all(b"x").unwrap();
        let (s1, e1) = (s.clone(), e.clone());
        e.add_reader(fd, move || {
            s1.borrow_mut().push("fd");
            e1.remove_reader(fd);
            let s1 = s1.clone();
            e1.call_soon(move || s1.borrow_mut().push("queued by fd"));
        })
        .unwrap();
        let s2 = s.clone();
        e.call_at(Instant::now(), move || s2.borrow_mut().push("timer"));
        let s3 = s.clone();
        e.call_soon(move || s3.borrow_mut().push("ready before the wait"));
        let remote = e.remote();
        std::thread::spawn(move || remote.call_from_thread(|| {}).unwrap())
            .join()
            .unwrap();
    });
    for _ in 0..3 {
        ev.run_once(Some(Duration::ZERO)).unwrap();
    }
    ev.destroy();
    drop(a);
    let seen = seen.borrow().clone();
    seen
}

#[test]
fn io_behind_ready_runs_what_was_ready_before_the_wait_first() {
    // asyncio's order: the callback ready before the wait, the fd it reported, the due
    // timer, then what those queued.
    assert_eq!(
        order_of_an_iteration(true),
        ["ready before the wait", "fd", "timer", "queued by fd"]
    );
    // The default order: fd events, due timers, then the ready queue.
    assert_eq!(
        order_of_an_iteration(false),
        ["fd", "timer", "ready before the wait", "queued by fd"]
    );
}

#[test]
fn io_behind_ready_runs_io_at_once_when_nothing_is_queued() {
    let ev = EventLoop::new().unwrap();
    ev.set_io_behind_ready(true);
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let fd = a.as_raw_fd();
    let iteration = Rc::new(Cell::new(u64::MAX));
    let (seen, e) = (iteration.clone(), ev.clone());
    ev.add_reader(fd, move || {
        seen.set(e.iterations());
        e.remove_reader(fd);
    })
    .unwrap();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        iteration.get(),
        0,
        "the fd callback ran in the first iteration"
    );
    ev.destroy();
}

#[test]
fn io_behind_ready_skips_a_watcher_removed_before_its_turn() {
    let ev = EventLoop::new().unwrap();
    ev.set_io_behind_ready(true);
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let fd = a.as_raw_fd();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    ev.add_reader(fd, move || r.set(true)).unwrap();
    // Queued before the wait: it runs first and removes the watcher the wait reported.
    let e = ev.clone();
    ev.call_soon(move || {
        e.remove_reader(fd);
    });
    ev.run_once(Some(Duration::ZERO)).unwrap();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    assert!(!ran.get());
    ev.destroy();
}

/// Calls sent from another thread that a wait saw, in an iteration a propagated panic
/// then ended, still count as work: `has_work` and `next_timeout` say so, and the next
/// run runs them instead of blocking or returning.
#[test]
fn calls_seen_by_an_iteration_a_propagated_panic_ended_still_run() {
    let ev = EventLoop::new().unwrap();
    ev.set_propagate_panics(true);
    let (a, mut b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    let e = ev.clone();
    ev.add_reader(fd, move || {
        e.remove_reader(fd);
        panic!("boom in a reader");
    })
    .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let remote = ev.remote();
    std::thread::spawn(move || {
        remote
            .call_from_thread(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    })
    .join()
    .unwrap();
    b.write_all(b"x").unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ev.run_once(Some(Duration::from_secs(1)))
    }));
    assert!(outcome.is_err(), "the reader's panic propagates");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the call runs in the tail");
    assert!(ev.has_work());
    assert_eq!(ev.next_timeout(), Some(Duration::ZERO));
    // A bound on a run that would block instead: it fails the test, not hang it.
    ev.call_later(Duration::from_secs(5), || {}).unref();
    let start = Instant::now();
    ev.run().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the run blocked first"
    );
}
