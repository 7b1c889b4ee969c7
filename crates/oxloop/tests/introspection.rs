//! Loop statistics and debug mode.

use oxloop::{task, EventLoop};
use std::cell::RefCell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn stats_change_as_work_is_added_and_run() {
    let ev = EventLoop::new().unwrap();
    let before = ev.stats();
    assert_eq!(before.iterations, 0);
    assert_eq!(before.callbacks_run, 0);
    for _ in 0..5 {
        ev.call_soon(|| {});
    }
    let t = ev.call_later(Duration::from_secs(3600), || {});
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    ev.add_reader(a.as_raw_fd(), || {}).unwrap();
    let h = ev.spawn(async { task::sleep(Duration::from_secs(3600)).await });
    let s = ev.stats();
    assert_eq!(
        (s.ready, s.timers_pending, s.fds_watched, s.tasks_alive),
        (6, 1, 1, 1)
    );

    ev.run_once(Some(Duration::ZERO)).unwrap();
    let s = ev.stats();
    assert_eq!(s.iterations, 1);
    assert_eq!(s.callbacks_run, 6, "5 callbacks and one task step");
    assert_eq!(s.ready, 0);
    assert_eq!(s.timers_pending, 2, "the task's sleep added a timer");

    // Waiting and running are both accounted, once asked for.
    ev.run_once(Some(Duration::from_millis(30))).unwrap();
    assert_eq!(ev.stats().time_waiting, Duration::ZERO);
    ev.track_wait_time(true);
    ev.run_once(Some(Duration::from_millis(30))).unwrap();
    ev.call_soon(|| std::thread::sleep(Duration::from_millis(30)));
    ev.run_once(Some(Duration::ZERO)).unwrap();
    ev.run_once(Some(Duration::ZERO)).unwrap();
    let s = ev.stats();
    assert!(s.time_waiting >= Duration::from_millis(25), "{s:?}");
    assert!(s.time_running >= Duration::from_millis(25), "{s:?}");

    h.abort();
    t.cancel();
    ev.remove_reader(a.as_raw_fd());
    let s = ev.stats();
    assert_eq!((s.timers_pending, s.fds_watched, s.tasks_alive), (0, 0, 0));
}

/// Collects what `tracing` prints while `f` runs on this thread.
fn captured_logs(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let s = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || s.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = sink.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn debug_mode_reports_slow_callbacks_and_task_steps_with_their_origin() {
    let ev = EventLoop::new().unwrap();
    ev.set_slow_callback_threshold(Duration::from_millis(10));
    assert!(ev.is_debug());
    let soon_line = line!() + 1;
    ev.call_soon(|| std::thread::sleep(Duration::from_millis(30)));
    let task_line = line!() + 1;
    ev.spawn(async { std::thread::sleep(Duration::from_millis(30)) });
    ev.call_soon(|| {}); // fast: not reported
    let logs = captured_logs(|| ev.run().unwrap());
    assert!(logs.contains("slow callback"), "{logs}");
    assert!(
        logs.contains(&format!("introspection.rs:{soon_line}")),
        "{logs}"
    );
    assert!(logs.contains("slow task step"), "{logs}");
    assert!(
        logs.contains(&format!("introspection.rs:{task_line}")),
        "{logs}"
    );
    assert_eq!(logs.matches("slow ").count(), 2, "{logs}");

    // Off again: nothing is reported.
    ev.set_debug(false);
    ev.call_soon(|| std::thread::sleep(Duration::from_millis(30)));
    let logs = captured_logs(|| ev.run().unwrap());
    assert!(!logs.contains("slow"), "{logs}");
}

#[test]
fn debug_mode_shows_where_a_panicking_callback_was_scheduled() {
    let ev = EventLoop::new().unwrap();
    ev.set_debug(true);
    let origins = Rc::new(RefCell::new(Vec::new()));
    let o = origins.clone();
    ev.set_exception_handler(move |p| {
        o.borrow_mut()
            .push((p.origin().map(|l| l.line()), p.to_string()))
    });
    let line = line!() + 1;
    ev.call_later(Duration::from_millis(1), || panic!("late boom"));
    ev.run().unwrap();
    let origins = origins.borrow();
    assert_eq!(origins[0].0, Some(line));
    assert!(origins[0].1.contains("scheduled at"), "{}", origins[0].1);
    // Without debug mode the origin is unknown.
    ev.set_debug(false);
    drop(origins);
}
