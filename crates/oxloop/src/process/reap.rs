//! Learning that a child exited, and reaping children nobody waits for.
//!
//! - pidfd (Linux): the pidfd becomes readable when the child exits; it is an
//!   [`Async`] source while a [`super::Child`] waits, and a plain unreferenced reader
//!   callback once the `Child` is dropped unreaped.
//! - `SIGCHLD` (elsewhere, or when `pidfd_open` fails): one unreferenced handler per
//!   loop wakes every waiting task (each checks its own child with `try_wait`) and
//!   retries the loop's orphans.
//! - A process-wide list takes the orphans a loop can no longer watch (no loop, loop
//!   destroyed); it is retried at every spawn and every `SIGCHLD`.

use crate::event_loop::Inner;
use crate::io::Async;
use crate::{EventLoop, Handle};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child as StdChild, ExitStatus};
use std::rc::Weak;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// Children whose loop is gone, reaped opportunistically.
static ORPHANS: Mutex<Vec<StdChild>> = Mutex::new(Vec::new());

thread_local! {
    /// Test switch: use the `SIGCHLD` path even where pidfds work.
    static FORCE_SIGCHLD: Cell<bool> = const { Cell::new(false) };
    /// This thread's `SIGCHLD` reaper, for the loop it was installed on.
    static SIGCHLD: RefCell<Option<SigchldReaper>> = const { RefCell::new(None) };
}

/// Makes children spawned from this thread from now on use the `SIGCHLD` fallback
/// instead of a pidfd (for testing that path on Linux).
pub fn force_sigchld_reaping(on: bool) {
    FORCE_SIGCHLD.with(|f| f.set(on));
}

/// Whether `child` has been reaped (or can no longer be: someone else reaped it).
fn reaped(child: &mut StdChild) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// Retries the process-wide orphans.
pub(crate) fn reap_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    orphans.retain_mut(|c| !reaped(c));
}

fn adopt_globally(mut child: StdChild) {
    if !reaped(&mut child) {
        ORPHANS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
    }
}

/// How a child's exit is noticed.
pub(crate) enum ExitWatch {
    /// `None` only while being dropped.
    Pidfd(Option<Async<OwnedFd>>),
    Sigchld,
}

impl ExitWatch {
    pub fn new(ev: &EventLoop, child: &StdChild) -> ExitWatch {
        match open_pidfd(ev, child) {
            Some(fd) => ExitWatch::Pidfd(Some(fd)),
            None => ExitWatch::Sigchld,
        }
    }

    pub fn poll_exit(
        &self,
        cx: &mut Context<'_>,
        child: &mut StdChild,
    ) -> Poll<io::Result<ExitStatus>> {
        match self {
            ExitWatch::Pidfd(Some(fd)) => fd.poll_read_with(cx, |_| match child.try_wait()? {
                Some(status) => Ok(status),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }),
            _ => {
                // Register first, then look: an exit in between still sends SIGCHLD.
                sigchld_wait(cx.waker())?;
                match child.try_wait()? {
                    Some(status) => Poll::Ready(Ok(status)),
                    None => Poll::Pending,
                }
            }
        }
    }

    /// Hands an unreaped child to the loop (or, failing that, the process-wide list).
    pub fn orphan(&mut self, mut child: StdChild) {
        if reaped(&mut child) {
            return;
        }
        match self {
            ExitWatch::Pidfd(fd) => {
                if let Some(fd) = fd.take() {
                    orphan_with_pidfd(child, fd.into_inner());
                } else {
                    adopt_globally(child);
                }
            }
            ExitWatch::Sigchld => {
                // Install first, then look: an exit in between still sends SIGCHLD.
                let kept = with_sigchld_reaper(
                    |reaper, mut child: StdChild| {
                        if !reaped(&mut child) {
                            reaper.orphans.push(child);
                        }
                    },
                    child,
                );
                if let Err(child) = kept {
                    adopt_globally(child);
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn open_pidfd(ev: &EventLoop, child: &StdChild) -> Option<Async<OwnedFd>> {
    if FORCE_SIGCHLD.with(Cell::get) {
        return None;
    }
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).ok()?)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    Async::with_loop(ev, fd).ok()
}

#[cfg(not(target_os = "linux"))]
fn open_pidfd(_ev: &EventLoop, _child: &StdChild) -> Option<Async<OwnedFd>> {
    None
}

/// An unreaped child and its pidfd, owned by a reader callback. If the callback is
/// dropped (loop destroyed) before the child exits, the child moves to the
/// process-wide list.
struct PidfdOrphan {
    child: Option<StdChild>,
    _pidfd: OwnedFd,
}

impl Drop for PidfdOrphan {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            adopt_globally(child);
        }
    }
}

fn orphan_with_pidfd(child: StdChild, pidfd: OwnedFd) {
    let Ok(ev) = EventLoop::current() else {
        return adopt_globally(child);
    };
    let fd = pidfd.as_raw_fd();
    let mut orphan = PidfdOrphan {
        child: Some(child),
        _pidfd: pidfd,
    };
    let watch = ev.add_reader(fd, move || {
        if orphan.child.as_mut().is_none_or(reaped) {
            orphan.child = None;
            if let Ok(ev) = EventLoop::current() {
                ev.remove_reader(fd);
            }
        }
    });
    // On error the callback, and with it the child, was dropped: adopted globally.
    if watch.is_ok() {
        ev.set_fd_ref(fd, false);
    }
}

/// One loop's `SIGCHLD` handler state.
struct SigchldReaper {
    owner: Weak<Inner>,
    handle: Handle,
    waiters: Vec<Waker>,
    orphans: Vec<StdChild>,
}

impl Drop for SigchldReaper {
    fn drop(&mut self) {
        self.orphans.drain(..).for_each(adopt_globally);
    }
}

/// Runs `f` on this thread's `SIGCHLD` reaper, installing it on the current loop first
/// if needed. Without a loop (or if the handler is refused) `arg` comes back.
fn with_sigchld_reaper<A>(f: impl FnOnce(&mut SigchldReaper, A), arg: A) -> Result<(), A> {
    let Ok(ev) = EventLoop::current() else {
        return Err(arg);
    };
    SIGCHLD.with(|r| {
        let mut slot = r.borrow_mut();
        let current = matches!(slot.as_ref(),
            Some(reaper) if reaper.owner.ptr_eq(&ev.downgrade()) && reaper.handle.is_pending());
        if !current {
            let Ok(handle) = ev.add_signal_handler(libc::SIGCHLD, on_sigchld) else {
                return Err(arg);
            };
            handle.unref();
            let old = slot.replace(SigchldReaper {
                owner: ev.downgrade(),
                handle,
                waiters: Vec::new(),
                orphans: Vec::new(),
            });
            drop(old);
        }
        f(slot.as_mut().expect("just installed"), arg);
        Ok(())
    })
}

/// Makes sure this thread's loop handles `SIGCHLD`, and wakes `waker` at the next one.
fn sigchld_wait(waker: &Waker) -> io::Result<()> {
    with_sigchld_reaper(
        |reaper, waker: &Waker| {
            if !reaper.waiters.iter().any(|w| w.will_wake(waker)) {
                reaper.waiters.push(waker.clone());
            }
        },
        waker,
    )
    .map_err(|_| io::Error::other("cannot watch SIGCHLD on this thread's event loop"))
}

fn on_sigchld() {
    let waiters = SIGCHLD.with(|r| {
        let mut slot = r.borrow_mut();
        let reaper = slot.as_mut()?;
        reaper.orphans.retain_mut(|c| !reaped(c));
        Some(std::mem::take(&mut reaper.waiters))
    });
    waiters.into_iter().flatten().for_each(Waker::wake);
    reap_orphans();
}
