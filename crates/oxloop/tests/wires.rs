//! Wires: order, counts and timing of each combinator, the loop timeout, cancellation,
//! failures, and the Poller.

use oxloop::io::Async;
use oxloop::wire::LoopWireExt;
use oxloop::wire::{
    Call, Forever, Poller, Repeat, RunError, Wire, WireError, WireHandle, WireLoop,
};
use oxloop::{task, EventLoop};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::default()
}

/// A wire that appends `entry` to `log`, then is done.
fn push(log: &Log, entry: &str) -> Wire {
    let (log, entry) = (log.clone(), entry.to_string());
    Call(move || log.borrow_mut().push(entry.clone()))
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// Sets its flag when dropped: tells whether a cancelled wire's state was freed.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Records every message the loop's exception handler receives.
fn record_errors(ev: &EventLoop) -> Log {
    let errors = log();
    let sink = errors.clone();
    ev.set_exception_handler(move |panic| sink.borrow_mut().push(panic.message().to_string()));
    errors
}

#[test]
fn sequence_runs_in_order() {
    let ev = EventLoop::new().unwrap();
    let log = log();
    let l = log.clone();
    let first = Wire::new(move |_| {
        let l = l.clone();
        async move {
            task::sleep(5 * MS).await;
            l.borrow_mut().push("a".into());
        }
    });
    let wires = WireLoop::new(&ev);
    wires.start(first >> push(&log, "b") >> push(&log, "c"));
    wires.run().unwrap();
    assert_eq!(entries(&log), ["a", "b", "c"]);
}

#[test]
fn a_wire_hands_on_the_next_wire() {
    fn countdown(log: Log, n: u32) -> Wire {
        Wire::new(move |_| {
            let log = log.clone();
            async move {
                log.borrow_mut().push(n.to_string());
                (n > 1).then(|| countdown(log, n - 1))
            }
        })
    }
    let ev = EventLoop::new().unwrap();
    let log = log();
    let wires = WireLoop::new(&ev);
    wires.start(countdown(log.clone(), 3) >> push(&log, "liftoff"));
    wires.run().unwrap();
    assert_eq!(entries(&log), ["3", "2", "1", "liftoff"]);
}

#[test]
fn plain_async_fns_are_wires() {
    thread_local!(static RUNS: Cell<u32> = const { Cell::new(0) });
    async fn again(_ev: EventLoop) -> Option<Wire> {
        let runs = RUNS.with(|r| {
            r.set(r.get() + 1);
            r.get()
        });
        (runs < 4).then(|| Wire::new(again))
    }
    let ev = EventLoop::new().unwrap();
    let wires = WireLoop::new(&ev);
    wires.start(again);
    wires.run().unwrap();
    assert_eq!(RUNS.with(Cell::get), 4);
}

#[test]
fn repeat_and_mul_count_runs() {
    let ev = EventLoop::new().unwrap();
    let log = log();
    let wires = WireLoop::new(&ev);
    wires.start(Repeat(push(&log, "r"), 3));
    wires.start(push(&log, "m") * 4);
    wires.start(Repeat(push(&log, "zero"), 0));
    wires.start((push(&log, "n") * 2) * 3);
    wires.run().unwrap();
    let count = |s: &str| entries(&log).iter().filter(|e| *e == s).count();
    assert_eq!(count("r"), 3);
    assert_eq!(count("m"), 4);
    assert_eq!(count("zero"), 0);
    assert_eq!(count("n"), 6);
}

#[test]
fn repeat_runs_the_whole_sequence_each_time() {
    let ev = EventLoop::new().unwrap();
    let log = log();
    let wires = WireLoop::new(&ev);
    wires.start(((push(&log, "a") >> push(&log, "b")) * 3) >> push(&log, "end"));
    wires.run().unwrap();
    assert_eq!(entries(&log), ["a", "b", "a", "b", "a", "b", "end"]);
}

#[test]
fn call_awaits_async_functions_and_beeps_are_spaced() {
    let ev = EventLoop::new().unwrap();
    let beeps: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let b = beeps.clone();
    let start = Instant::now();
    let prog =
        (Call(|| task::sleep(30 * MS)) >> Call(move || b.borrow_mut().push(Instant::now()))) * 4;
    let wires = WireLoop::new(&ev);
    wires.start(prog);
    wires.run().unwrap();
    let beeps = beeps.borrow();
    assert_eq!(beeps.len(), 4);
    let mut previous = start;
    for beep in beeps.iter() {
        assert!(*beep - previous >= 30 * MS, "beeps closer than the sleep");
        previous = *beep;
    }
    assert!(start.elapsed() >= 120 * MS);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn forever_runs_until_the_loop_timeout() {
    let ev = EventLoop::new().unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let start = Instant::now();
    let wires = WireLoop::new(&ev).timeout(100 * MS);
    let handle = wires.start(Forever(Call(move || {
        r.set(r.get() + 1);
        task::sleep(10 * MS)
    })));
    let result = wires.run();
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(RunError::TimedOut(d)) if d == 100 * MS));
    assert!(elapsed >= 100 * MS, "timed out early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5));
    assert!((2..=11).contains(&runs.get()), "runs: {}", runs.get());
    assert_eq!(ev.block_on(handle).unwrap(), Err(WireError::Cancelled));
}

#[test]
fn a_busy_forever_does_not_starve_other_wires() {
    let ev = EventLoop::new().unwrap();
    let spins = Rc::new(Cell::new(0u64));
    let s = spins.clone();
    let log = log();
    // The window is wide so that a loaded machine cannot make the 10 ms wire miss it.
    let wires = WireLoop::new(&ev).timeout(500 * MS);
    wires.start(Forever(Call(move || s.set(s.get() + 1))));
    wires.start(Call(|| task::sleep(10 * MS)) >> push(&log, "timer wire done"));
    assert!(matches!(wires.run(), Err(RunError::TimedOut(_))));
    assert_eq!(entries(&log), ["timer wire done"]);
    assert!(spins.get() > 10);
}

#[test]
fn the_timeout_cancels_every_wire_and_drops_its_state() {
    let ev = EventLoop::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let child_dropped = Rc::new(Cell::new(false));
    let log = log();
    let (d, cd, l) = (dropped.clone(), child_dropped.clone(), log.clone());
    let parent = Wire::new(move |ev: EventLoop| {
        let guard = DropFlag(d.clone());
        let child_guard = DropFlag(cd.clone());
        let l = l.clone();
        async move {
            // A wire started by a wire is cancelled by the timeout too.
            ev.start_wire(Call(move || {
                let _held = &child_guard;
                task::sleep(Duration::from_secs(3600))
            }));
            let _held = guard;
            task::sleep(Duration::from_secs(3600)).await;
            l.borrow_mut().push("never".into());
        }
    });
    let wires = WireLoop::new(&ev).timeout(30 * MS);
    let handle = wires.start(parent >> push(&log, "never either"));
    let start = Instant::now();
    assert!(matches!(wires.run(), Err(RunError::TimedOut(_))));
    assert!(start.elapsed() >= 30 * MS);
    assert!(dropped.get(), "the cancelled wire's state is still alive");
    assert!(child_dropped.get(), "the child wire's state is still alive");
    assert!(entries(&log).is_empty());
    assert!(handle.is_finished());
    assert_eq!(ev.tasks_alive(), 0);
}

#[test]
fn a_run_whose_wires_finish_returns_normally() {
    let ev = EventLoop::new().unwrap();
    let log = log();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    wires.start(Call(|| task::sleep(20 * MS)) >> push(&log, "done"));
    let start = Instant::now();
    wires.run().unwrap();
    assert!(start.elapsed() >= 20 * MS);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(entries(&log), ["done"]);
    // The loop can run more wires afterwards.
    wires.start(push(&log, "again"));
    wires.run().unwrap();
    assert_eq!(entries(&log), ["done", "again"]);
}

#[test]
fn wires_started_by_wires_are_waited_for() {
    let ev = EventLoop::new().unwrap();
    let log = log();
    let l = log.clone();
    let wires = WireLoop::new(&ev);
    wires.start(Wire::new(move |ev: EventLoop| {
        let l = l.clone();
        async move {
            ev.start_wire(Call(|| task::sleep(20 * MS)) >> push(&l, "child"));
            l.borrow_mut().push("parent".into());
        }
    }));
    wires.run().unwrap();
    assert_eq!(entries(&log), ["parent", "child"]);
}

#[test]
fn the_start_handle_cancels_a_wire() {
    let ev = EventLoop::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let log = log();
    let d = dropped.clone();
    let long = Wire::new(move |_| {
        let guard = DropFlag(d.clone());
        async move {
            let _held = guard;
            task::sleep(Duration::from_secs(3600)).await;
        }
    });
    let handle: Rc<WireHandle> = Rc::new(ev.start_wire(long >> push(&log, "after")));
    let h = handle.clone();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    wires.start(Call(|| task::sleep(10 * MS)) >> Call(move || h.cancel()));
    let start = Instant::now();
    wires.run().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(dropped.get());
    assert!(entries(&log).is_empty());
    let handle = Rc::try_unwrap(handle).unwrap();
    assert_eq!(ev.block_on(handle).unwrap(), Err(WireError::Cancelled));
}

#[test]
fn a_failing_wire_does_not_stop_the_others() {
    let ev = EventLoop::new().unwrap();
    let errors = record_errors(&ev);
    let log = log();
    let failing = Wire::new(|_| async {
        task::sleep(5 * MS).await;
        Err::<(), _>("boom")
    });
    let panicking = Wire::new(|_| async {
        task::sleep(5 * MS).await;
        if true {
            panic!("kaboom");
        }
    });
    let wires = WireLoop::new(&ev);
    let failed = wires.start(failing >> push(&log, "after failure"));
    let panicked = wires.start(panicking >> push(&log, "after panic"));
    wires.start((Call(|| task::sleep(5 * MS)) >> push(&log, "ok")) * 3);
    wires.run().unwrap();
    assert_eq!(entries(&log), ["ok", "ok", "ok"]);
    let errors = entries(&errors);
    assert!(
        errors.contains(&"wire failed: boom".to_string()),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("kaboom")), "{errors:?}");
    assert_eq!(
        ev.block_on(failed).unwrap(),
        Err(WireError::Failed("boom".into()))
    );
    assert!(matches!(
        ev.block_on(panicked).unwrap(),
        Err(WireError::Panicked(msg)) if msg.contains("kaboom")
    ));
}

#[test]
fn a_failure_inside_repeat_ends_the_whole_chain() {
    let ev = EventLoop::new().unwrap();
    let errors = record_errors(&ev);
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let flaky = Wire::new(move |_| {
        let r = r.clone();
        async move {
            r.set(r.get() + 1);
            if r.get() == 2 {
                Err("second run fails")
            } else {
                Ok(None)
            }
        }
    });
    let log = log();
    let wires = WireLoop::new(&ev);
    wires.start((flaky * 5) >> push(&log, "after"));
    wires.run().unwrap();
    assert_eq!(runs.get(), 2);
    assert!(entries(&log).is_empty());
    assert_eq!(entries(&errors), ["wire failed: second run fails"]);
}

fn nonblocking_pair() -> (Rc<Async<UnixStream>>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (Rc::new(Async::new(ours).unwrap()), theirs)
}

/// A wire reading up to `max` bytes from `sock` into `log` (as one entry); at end of
/// stream it removes the fd from the Poller.
fn reader(
    sock: &Rc<Async<UnixStream>>,
    max: usize,
    log: &Log,
    handle: &oxloop::wire::PollerHandle,
) -> Wire {
    let (sock, log, handle) = (sock.clone(), log.clone(), handle.clone());
    Wire::new(move |_| {
        let (sock, log, handle) = (sock.clone(), log.clone(), handle.clone());
        async move {
            let mut buf = vec![0; max];
            let n = sock.read_with(|s| (&*s).read(&mut buf)).await?;
            if n == 0 {
                handle.remove(&*sock);
            } else {
                log.borrow_mut()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            Ok::<_, std::io::Error>(())
        }
    })
}

#[test]
fn the_poller_runs_each_fds_wire_when_readable() {
    let ev = EventLoop::new().unwrap();
    let (a, a_peer) = nonblocking_pair();
    let (b, b_peer) = nonblocking_pair();
    let log = log();
    let poller = Poller::new();
    let handle = poller.handle();
    let poller = poller
        .on(&*a, reader(&a, 64, &log, &handle))
        .unwrap()
        .on(&*b, reader(&b, 64, &log, &handle))
        .unwrap();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    let poller = wires.start(poller);
    wires.start(
        Call(|| task::sleep(10 * MS))
            >> Call(move || (&a_peer).write_all(b"from a").unwrap())
            >> Call(|| task::sleep(10 * MS))
            >> Call(move || {
                (&b_peer).write_all(b"from b").unwrap();
                b_peer.shutdown(std::net::Shutdown::Both).unwrap();
            }),
    );
    // `a_peer` closes when the writer wire is dropped: both fds reach end of stream,
    // both are removed, and the Poller is done.
    wires.run().unwrap();
    assert_eq!(entries(&log), ["from a", "from b"]);
    assert_eq!(ev.block_on(poller).unwrap(), Ok(()));
}

#[test]
fn the_poller_is_level_triggered() {
    let ev = EventLoop::new().unwrap();
    let (unread, mut unread_peer) = nonblocking_pair();
    let (sipped, mut sipped_peer) = nonblocking_pair();
    let unread_runs = Rc::new(Cell::new(0));
    let u = unread_runs.clone();
    let log = log();
    let poller = Poller::new();
    let handle = poller.handle();
    let poller = poller
        .on(&*unread, Call(move || u.set(u.get() + 1)))
        .unwrap()
        .on(&*sipped, reader(&sipped, 1, &log, &handle))
        .unwrap();
    unread_peer.write_all(b"x").unwrap();
    sipped_peer.write_all(b"abc").unwrap();
    let stop = handle.clone();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    wires.start(poller);
    wires.start(Call(|| task::sleep(50 * MS)) >> Call(move || stop.stop()));
    wires.run().unwrap();
    // Data left unread makes its wire run again and again...
    assert!(unread_runs.get() > 3, "runs: {}", unread_runs.get());
    // ...and a wire reading one byte per run runs once per byte, then waits.
    assert_eq!(entries(&log), ["a", "b", "c"]);
    assert!(handle.is_stopped());
}

#[test]
fn a_failing_fd_wire_is_dropped_and_the_other_fds_go_on() {
    let ev = EventLoop::new().unwrap();
    let errors = record_errors(&ev);
    let (bad, bad_peer) = nonblocking_pair();
    let (good, good_peer) = nonblocking_pair();
    let bad_runs = Rc::new(Cell::new(0));
    let br = bad_runs.clone();
    let log = log();
    let poller = Poller::new();
    let handle = poller.handle();
    let poller = poller
        .on(
            &*bad,
            Wire::new(move |_| {
                br.set(br.get() + 1);
                async { Err::<(), _>("bad fd wire") }
            }),
        )
        .unwrap()
        .on(&*good, reader(&good, 64, &log, &handle))
        .unwrap();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    wires.start(poller);
    wires.start(
        Call(move || (&bad_peer).write_all(b"!").unwrap())
            >> Call(|| task::sleep(20 * MS))
            >> Call(move || {
                (&good_peer).write_all(b"still here").unwrap();
                good_peer.shutdown(std::net::Shutdown::Both).unwrap();
            }),
    );
    wires.run().unwrap();
    assert_eq!(bad_runs.get(), 1);
    assert_eq!(entries(&log), ["still here"]);
    assert_eq!(entries(&errors), ["wire failed: bad fd wire"]);
}

#[test]
fn a_poller_is_cancelled_by_the_timeout() {
    let ev = EventLoop::new().unwrap();
    let (quiet, _peer) = nonblocking_pair();
    let dropped = Rc::new(Cell::new(false));
    let guard = Rc::new(DropFlag(dropped.clone()));
    let poller = Poller::new()
        .on(
            &*quiet,
            Call(move || {
                let _held = &guard;
            }),
        )
        .unwrap();
    let wires = WireLoop::new(&ev).timeout(30 * MS);
    wires.start(poller);
    let start = Instant::now();
    assert!(matches!(wires.run(), Err(RunError::TimedOut(_))));
    assert!(start.elapsed() >= 30 * MS);
    assert!(dropped.get(), "the Poller's wires were not dropped");
    assert_eq!(ev.tasks_alive(), 0);
}

#[test]
fn a_stopped_poller_is_done() {
    let ev = EventLoop::new().unwrap();
    let (quiet, _peer) = nonblocking_pair();
    let poller = Poller::new().on(&*quiet, Call(|| ())).unwrap();
    let handle = poller.handle();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    wires.start(poller >> Call(|| ()));
    wires.start(Call(|| task::sleep(10 * MS)) >> Call(move || handle.stop()));
    let start = Instant::now();
    wires.run().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_poller_takes_oxloop_sockets_and_runs_once_at_a_time() {
    use oxloop::wire::IntoWire;
    let ev = EventLoop::new().unwrap();
    let errors = record_errors(&ev);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let ours = oxloop::net::UnixStream::from_std(ours).unwrap();
    let runs = Rc::new(Cell::new(0));
    let r = runs.clone();
    let poller = Poller::new();
    let handle = poller.handle();
    let stop = handle.clone();
    let wire = poller
        .on(
            &ours,
            Call(move || {
                r.set(r.get() + 1);
                stop.stop();
            }),
        )
        .unwrap()
        .into_wire();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    let first = wires.start(wire.clone());
    let second = wires.start(wire);
    wires.start(Call(|| task::sleep(10 * MS)) >> Call(move || (&theirs).write_all(b"x").unwrap()));
    wires.run().unwrap();
    assert_eq!(runs.get(), 1);
    assert_eq!(ev.block_on(first).unwrap(), Ok(()));
    assert_eq!(
        ev.block_on(second).unwrap(),
        Err(WireError::Failed("this Poller is already running".into()))
    );
    assert_eq!(
        entries(&errors),
        ["wire failed: this Poller is already running"]
    );
}
