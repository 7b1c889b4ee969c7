//! Model checks of the loop's cross-thread protocol with loom: every interleaving (and
//! every reordering the memory model allows) of the real `event_loop/mailbox.rs`,
//! compiled here against loom's atomics and mutex instead of the standard library's.
//!
//! Every shared write in the modelled code is a read-modify-write, none a plain store:
//! loom 0.7 models a plain store racing a read-modify-write wrongly and reports
//! executions the memory model forbids (tokio-rs/loom issues 254 and 282), so the
//! code is written the way loom checks correctly.
//!
//! The waker fd is modelled by a flag: a caller sets it when told to wake the loop, and
//! the loop clears it on every poll (the real loop drains the fd when the poll reports
//! it). A loop that blocks waits for that flag; if a wake-up could be lost, the model
//! would find an execution where it waits forever, and fail.

/// What `mailbox.rs` is written against (`super::sync` from inside it).
mod sync {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    pub(crate) use loom::sync::{Mutex, MutexGuard};
}

#[path = "../src/event_loop/mailbox.rs"]
#[allow(dead_code)]
mod mailbox;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use mailbox::{Mailbox, ScheduledFlag};

/// A loop and its waker fd.
struct Model {
    mailbox: Mailbox<u32>,
    waker: AtomicBool,
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model {
            mailbox: Mailbox::new(),
            waker: AtomicBool::new(false),
        })
    }

    /// A remote's `call_from_thread`.
    fn call(&self, item: u32) -> bool {
        match self.mailbox.push(item) {
            Ok(must_wake) => {
                if must_wake {
                    self.waker.swap(true, Ordering::AcqRel);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// One iteration of the loop, as `EventLoop::iterate` does it: sleep only if
    /// `prepare_sleep` allows, then take the calls if notified. Returns them.
    fn iterate(&self, want_to_sleep: bool) -> Vec<u32> {
        if want_to_sleep && self.mailbox.prepare_sleep() {
            // Blocked in the poll until the waker fd becomes readable.
            while !self.waker.swap(false, Ordering::AcqRel) {
                thread::yield_now();
            }
        } else {
            // A poll that does not block still reports (and drains) a readable waker.
            self.waker.swap(false, Ordering::AcqRel);
        }
        let mut batch = Vec::new();
        if self.mailbox.after_wake() {
            self.mailbox.take(&mut batch);
        }
        batch
    }
}

/// Calls from two threads reach a loop that sleeps whenever it has nothing to do: none
/// is lost and the loop never sleeps through one.
#[test]
fn calls_from_two_threads_always_wake_the_loop() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let model = Model::new();
        let callers: Vec<_> = (1..=2)
            .map(|i| {
                let model = model.clone();
                thread::spawn(move || assert!(model.call(i)))
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(model.iterate(true));
        }
        got.sort();
        assert_eq!(got, [1, 2]);
        for caller in callers {
            caller.join().unwrap();
        }
    });
}

/// A call made while the loop is busy costs the caller no wake-up, and the loop still
/// takes it before it sleeps.
#[test]
fn a_call_while_the_loop_is_awake_is_taken_before_it_sleeps() {
    loom::model(|| {
        let model = Model::new();
        let caller = {
            let model = model.clone();
            thread::spawn(move || assert!(model.call(7)))
        };
        let mut got = model.iterate(false);
        while got.is_empty() {
            got = model.iterate(true);
        }
        assert_eq!(got, [7]);
        caller.join().unwrap();
    });
}

/// A host that asks the loop to prepare its wait (`prepare_wait`, then polls the
/// loop's fd itself) and then runs one cycle: `prepare_sleep` runs twice with no wake
/// between, and a call from another thread still wakes the loop.
#[test]
fn a_call_reaches_a_loop_prepared_twice() {
    loom::model(|| {
        let model = Model::new();
        let caller = {
            let model = model.clone();
            thread::spawn(move || assert!(model.call(3)))
        };
        let prepared = model.mailbox.prepare_sleep();
        let mut got = model.iterate(prepared);
        while got.is_empty() {
            got = model.iterate(true);
        }
        assert_eq!(got, [3]);
        caller.join().unwrap();
    });
}

/// A stop asked from another thread always reaches a sleeping loop.
#[test]
fn a_stop_request_always_wakes_the_loop() {
    loom::model(|| {
        let model = Model::new();
        let stopper = {
            let model = model.clone();
            thread::spawn(move || {
                if model.mailbox.request_stop() == Some(true) {
                    model.waker.swap(true, Ordering::AcqRel);
                }
            })
        };
        loop {
            model.iterate(true);
            if model.mailbox.take_stop() {
                break;
            }
        }
        stopper.join().unwrap();
    });
}

/// Closing the mailbox while a call is made: the call is either refused (the caller
/// learns the loop is gone) or handed back by `close`; it is never silently dropped.
#[test]
fn a_call_racing_close_is_refused_or_handed_back() {
    loom::model(|| {
        let model = Model::new();
        let caller = {
            let model = model.clone();
            thread::spawn(move || model.call(1))
        };
        let leftovers = model.mailbox.close();
        let accepted = caller.join().unwrap();
        assert_eq!(accepted, leftovers == [1]);
        assert!(!model.call(2), "a closed mailbox refuses calls");
    });
}

/// A task woken from another thread while the loop polls it: whatever the order, the
/// task either saw the data in that poll or is queued again, exactly once however many
/// threads wake it.
#[test]
fn a_wake_during_a_poll_is_never_lost_and_queues_once() {
    loom::model(|| {
        let flag = Arc::new(ScheduledFlag::new_scheduled());
        // What the future waits for, behind a lock as a channel's state is.
        let data = Arc::new(Mutex::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let (flag, data, queued) = (flag.clone(), data.clone(), queued.clone());
                thread::spawn(move || {
                    *data.lock().unwrap() += 1;
                    if flag.wake() {
                        queued.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // The loop takes the task from the ready queue and polls it once.
        flag.begin_poll();
        let seen = *data.lock().unwrap();
        for waker in wakers {
            waker.join().unwrap();
        }
        let queued = queued.load(Ordering::Relaxed);
        assert!(queued <= 1, "a task is queued at most once");
        if seen < 2 {
            assert_eq!(
                queued, 1,
                "the poll missed a wake and the task was not queued (it saw {seen} of 2)"
            );
        }
    });
}
