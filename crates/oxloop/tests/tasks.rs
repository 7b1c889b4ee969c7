//! Tasks: spawn, join, abort, detach, panics, block_on, time, cross-thread wakes.

use oxloop::task::{self, JoinError};
use oxloop::EventLoop;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

#[test]
fn spawn_and_join_return_the_output() {
    let ev = EventLoop::new().unwrap();
    let out = ev
        .block_on(async {
            let a = task::spawn(async { 1 });
            let b = task::spawn(async { 2 });
            a.await.unwrap() + b.await.unwrap()
        })
        .unwrap();
    assert_eq!(out, 3);
    assert_eq!(ev.tasks_alive(), 0);
}

#[test]
fn not_send_futures_are_fine_and_tasks_keep_run_going() {
    let ev = EventLoop::new().unwrap();
    let counter = Rc::new(Cell::new(0));
    for i in 0..10 {
        let c = counter.clone();
        ev.spawn(async move {
            task::sleep(Duration::from_millis(i)).await;
            c.set(c.get() + 1);
        });
    }
    ev.run().unwrap();
    assert_eq!(counter.get(), 10);
}

#[test]
fn abort_drops_the_future_and_reports_cancelled() {
    let ev = EventLoop::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    struct OnDrop(Rc<Cell<bool>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let d = OnDrop(dropped.clone());
    let handle = ev.spawn(async move {
        let _d = d;
        task::sleep(Duration::from_secs(3600)).await;
        7
    });
    let result = ev
        .block_on(async {
            task::sleep(Duration::from_millis(5)).await;
            handle.abort();
            handle.await
        })
        .unwrap();
    assert_eq!(result, Err(JoinError::Cancelled));
    assert!(dropped.get());
    assert_eq!(ev.tasks_alive(), 0);
    // With the task gone, run() has nothing left (the hour-long timer was cancelled).
    let start = Instant::now();
    ev.run().unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn dropping_the_join_handle_detaches() {
    let ev = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    drop(ev.spawn(async move {
        task::sleep(Duration::from_millis(10)).await;
        d.set(true);
    }));
    ev.run().unwrap();
    assert!(done.get());
}

#[test]
fn a_panicking_task_reports_to_the_handler_and_its_handle() {
    let ev = EventLoop::new().unwrap();
    let caught = Rc::new(RefCell::new(Vec::new()));
    let c = caught.clone();
    ev.set_exception_handler(move |p| c.borrow_mut().push(p.message().to_string()));
    let result = ev
        .block_on(async {
            let bad = task::spawn(async {
                task::yield_now().await;
                panic!("task boom");
            });
            let good = task::spawn(async { 5 });
            (bad.await, good.await)
        })
        .unwrap();
    assert_eq!(result.0, Err(JoinError::Panicked("task boom".into())));
    assert_eq!(result.1, Ok(5));
    assert_eq!(*caught.borrow(), vec!["task boom".to_string()]);
}

#[test]
fn a_task_woken_from_another_thread() {
    let ev = EventLoop::new().unwrap();
    let (tx, rx) = futures_oneshot();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx(42);
    });
    let got = ev.block_on(ev.spawn(rx)).unwrap().unwrap();
    assert_eq!(got, 42);
    t.join().unwrap();
}

/// A minimal one-shot channel whose sender is `Send` and wakes through `Waker::wake`
/// from the sending thread.
fn futures_oneshot() -> (
    impl FnOnce(u32) + Send,
    impl std::future::Future<Output = u32>,
) {
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};
    type Slot = Arc<Mutex<(Option<u32>, Option<Waker>)>>;
    let slot: Slot = Arc::new(Mutex::new((None, None)));
    let s = slot.clone();
    // Waits for the receiving task's first poll, so that the value always comes with a
    // wake-up from this thread (however late the loop polls, under valgrind say).
    let send = move |v| {
        let waker = loop {
            let mut g = s.lock().unwrap();
            if let Some(waker) = g.1.take() {
                g.0 = Some(v);
                break waker;
            }
            drop(g);
            std::thread::sleep(Duration::from_millis(1));
        };
        waker.wake();
    };
    let recv = std::future::poll_fn(move |cx| {
        let mut g = slot.lock().unwrap();
        match g.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    });
    (send, recv)
}

#[test]
fn sleep_and_timeout() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(async {
        let start = Instant::now();
        task::sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));

        let fast = task::timeout(Duration::from_secs(5), async { 1 }).await;
        assert_eq!(fast, Ok(1));
        let start = Instant::now();
        let slow = task::timeout(
            Duration::from_millis(20),
            task::sleep(Duration::from_secs(3600)),
        )
        .await;
        assert!(slow.is_err());
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(start.elapsed() < Duration::from_secs(5));

        let deadline = Instant::now() + Duration::from_millis(10);
        task::sleep_until(deadline).await;
        assert!(Instant::now() >= deadline);
    })
    .unwrap();
}

#[test]
fn yield_now_lets_others_run() {
    let ev = EventLoop::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    for name in ["a", "b"] {
        let l = log.clone();
        ev.spawn(async move {
            for i in 0..3 {
                l.borrow_mut().push(format!("{name}{i}"));
                task::yield_now().await;
            }
        });
    }
    ev.run().unwrap();
    assert_eq!(*log.borrow(), vec!["a0", "b0", "a1", "b1", "a2", "b2"]);
}

#[test]
fn spawn_blocking_runs_off_the_loop_thread() {
    let ev = EventLoop::new().unwrap();
    let loop_thread = std::thread::current().id();
    let (other, value) = ev
        .block_on(async {
            task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(10));
                (std::thread::current().id() != loop_thread, 99)
            })
            .await
        })
        .unwrap()
        .unwrap();
    assert!(other);
    assert_eq!(value, 99);
    let panicked = ev
        .block_on(task::spawn_blocking(|| panic!("blocking boom")))
        .unwrap();
    assert_eq!(panicked, Err(JoinError::Panicked("blocking boom".into())));
}

#[test]
fn block_on_refuses_when_the_loop_is_running_and_stop_interrupts_it() {
    let ev = EventLoop::new().unwrap();
    let e = ev.clone();
    let nested = Rc::new(RefCell::new(None));
    let n = nested.clone();
    ev.call_soon(move || *n.borrow_mut() = Some(e.block_on(async {}).is_err()));
    ev.run().unwrap();
    assert_eq!(*nested.borrow(), Some(true));

    let e = ev.clone();
    ev.call_later(Duration::from_millis(5), move || e.stop());
    let err = ev
        .block_on(task::sleep(Duration::from_secs(3600)))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
}

#[test]
fn destroying_the_loop_cancels_tasks() {
    let ev = EventLoop::new().unwrap();
    let handle = ev.spawn(async {
        task::sleep(Duration::from_secs(3600)).await;
    });
    ev.run_once(Some(Duration::ZERO)).unwrap();
    ev.destroy();
    assert!(handle.is_finished());
    // Polling it (on a fresh loop) yields Cancelled.
    drop(ev);
    let ev2 = EventLoop::new().unwrap();
    assert_eq!(ev2.block_on(handle).unwrap(), Err(JoinError::Cancelled));
}

#[test]
fn many_tasks_ping_pong_through_wakers() {
    let ev = EventLoop::new().unwrap();
    let total = ev
        .block_on(async {
            let mut handles = Vec::new();
            for i in 0..1000u64 {
                handles.push(task::spawn(async move {
                    for _ in 0..10 {
                        task::yield_now().await;
                    }
                    i
                }));
            }
            let mut sum = 0;
            for h in handles {
                sum += h.await.unwrap();
            }
            sum
        })
        .unwrap();
    assert_eq!(total, 999 * 1000 / 2);
}
