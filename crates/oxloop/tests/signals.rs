//! Signal handlers with real signals. Dispositions are process-wide and the tests of
//! one binary run in parallel, so every test here uses a signal no other test touches.

use oxloop::EventLoop;
use std::cell::RefCell;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;
use std::time::Duration;

fn raise(signum: i32) {
    assert_eq!(unsafe { libc::raise(signum) }, 0);
}

fn disposition(signum: i32) -> libc::sighandler_t {
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signum, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

/// Runs iterations until `done` says so (bounded, so a lost signal fails instead of hanging).
fn run_until(ev: &EventLoop, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        ev.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    panic!("condition not reached");
}

#[test]
fn several_handlers_per_signal_run_on_the_loop_thread_in_order() {
    let ev = EventLoop::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let loop_thread = std::thread::current().id();
    let mut handles = Vec::new();
    for name in ["a", "b", "c"] {
        let s = seen.clone();
        handles.push(
            ev.add_signal_handler(libc::SIGUSR1, move || {
                assert_eq!(std::thread::current().id(), loop_thread);
                s.borrow_mut().push(name)
            })
            .unwrap(),
        );
    }
    // Raised from another thread: still handled on the loop's thread.
    std::thread::spawn(|| raise(libc::SIGUSR1)).join().unwrap();
    run_until(&ev, || seen.borrow().len() == 3);
    assert_eq!(*seen.borrow(), vec!["a", "b", "c"]);

    // Cancelling one handle removes that handler only.
    assert!(handles[1].cancel());
    assert!(!handles[1].is_pending());
    seen.borrow_mut().clear();
    raise(libc::SIGUSR1);
    run_until(&ev, || seen.borrow().len() == 2);
    assert_eq!(*seen.borrow(), vec!["a", "c"]);
    assert_ne!(disposition(libc::SIGUSR1), libc::SIG_DFL);

    // Removing all restores the default disposition.
    assert!(ev.remove_signal_handler(libc::SIGUSR1));
    assert!(!ev.remove_signal_handler(libc::SIGUSR1));
    assert!(!handles[0].is_pending());
    assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
}

#[test]
fn cancelling_the_last_handler_restores_the_previous_disposition() {
    // Whatever was installed before the loop (here: SIG_IGN, set explicitly) must come
    // back, not just the default.
    unsafe { libc::signal(libc::SIGURG, libc::SIG_IGN) };
    let ev = EventLoop::new().unwrap();
    let h1 = ev.add_signal_handler(libc::SIGURG, || {}).unwrap();
    let h2 = ev.add_signal_handler(libc::SIGURG, || {}).unwrap();
    assert_ne!(disposition(libc::SIGURG), libc::SIG_IGN);
    h1.cancel();
    assert_ne!(disposition(libc::SIGURG), libc::SIG_IGN);
    h2.cancel();
    assert_eq!(disposition(libc::SIGURG), libc::SIG_IGN);
}

#[test]
fn a_handler_can_cancel_itself_and_signals_keep_run_going() {
    let ev = EventLoop::new().unwrap();
    let handle: Rc<RefCell<Option<oxloop::Handle>>> = Rc::new(RefCell::new(None));
    let count = Rc::new(RefCell::new(0));
    let (h, c) = (handle.clone(), count.clone());
    *handle.borrow_mut() = Some(
        ev.add_signal_handler(libc::SIGUSR2, move || {
            *c.borrow_mut() += 1;
            h.borrow().as_ref().unwrap().cancel();
        })
        .unwrap(),
    );
    // The handler keeps run() going until the signal arrives and it cancels itself.
    let t = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(30));
        raise(libc::SIGUSR2);
    });
    ev.run().unwrap();
    t.join().unwrap();
    assert_eq!(*count.borrow(), 1);
    assert_eq!(disposition(libc::SIGUSR2), libc::SIG_DFL);
}

#[test]
fn an_unreferenced_handler_does_not_keep_run_going() {
    let ev = EventLoop::new().unwrap();
    ev.add_signal_handler(libc::SIGTTIN, || {}).unwrap().unref();
    ev.run().unwrap();
    ev.remove_signal_handler(libc::SIGTTIN);
}

#[test]
fn loops_on_two_threads_both_get_the_signal() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let other = std::thread::spawn(move || {
        let ev = EventLoop::new().unwrap();
        let got = Rc::new(RefCell::new(false));
        let g = got.clone();
        ev.add_signal_handler(libc::SIGXCPU, move || *g.borrow_mut() = true)
            .unwrap();
        ready_tx.send(()).unwrap();
        run_until(&ev, || *got.borrow());
        tx.send(()).unwrap();
    });
    let ev = EventLoop::new().unwrap();
    let got = Rc::new(RefCell::new(false));
    let g = got.clone();
    ev.add_signal_handler(libc::SIGXCPU, move || *g.borrow_mut() = true)
        .unwrap();
    ready_rx.recv().unwrap();
    raise(libc::SIGXCPU);
    run_until(&ev, || *got.borrow());
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    other.join().unwrap();
}

#[test]
fn uncatchable_and_fault_signals_are_refused() {
    let ev = EventLoop::new().unwrap();
    for signum in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 0, 65, -1] {
        let err = ev.add_signal_handler(signum, || {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "signal {signum}");
    }
    assert!(!ev.has_work());
}

#[test]
fn destroying_the_loop_restores_dispositions() {
    let ev = EventLoop::new().unwrap();
    ev.add_signal_handler(libc::SIGPWR, || {}).unwrap();
    assert_ne!(disposition(libc::SIGPWR), libc::SIG_DFL);
    drop(ev);
    assert_eq!(disposition(libc::SIGPWR), libc::SIG_DFL);
}

/// In a child process: handle SIGINT once, remove the handler, and raise it again,
/// which must end the process as Ctrl-C does.
#[test]
fn ctrl_c_after_removal_still_ends_the_process() {
    if std::env::var_os("OXLOOP_SIGINT_CHILD").is_some() {
        // Start from the default disposition, as a program run from a terminal does: a
        // shell that runs the tests in the background starts them with SIGINT ignored,
        // and removing the handler restores what was there before.
        // SAFETY: setting a disposition to SIG_DFL installs no handler; no other thread
        // of this child process handles signals.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
        let ev = EventLoop::new().unwrap();
        let got = Rc::new(RefCell::new(false));
        let g = got.clone();
        ev.add_signal_handler(libc::SIGINT, move || *g.borrow_mut() = true)
            .unwrap();
        raise(libc::SIGINT);
        run_until(&ev, || *got.borrow());
        println!("handled the first SIGINT");
        ev.remove_signal_handler(libc::SIGINT);
        raise(libc::SIGINT);
        std::thread::sleep(Duration::from_secs(5));
        println!("still alive after the second SIGINT");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "ctrl_c_after_removal_still_ends_the_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OXLOOP_SIGINT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("handled the first SIGINT"), "{stdout}");
    assert!(!stdout.contains("still alive"), "{stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{:?}", out.status);
}
