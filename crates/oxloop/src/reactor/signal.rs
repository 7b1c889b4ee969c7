//! Process-wide signal plumbing: `sigaction`, and a handler that only sets bits and
//! writes to wake-up fds.
//!
//! Signals belong to the process, handlers to loops. Each loop that watches signals
//! claims one [`SignalSlot`]: an entry in a fixed static table holding the loop's wake-up
//! fd, the set of signals it watches, and the set that arrived since it last looked. The
//! C-level handler (which may run on any thread, at any moment) walks the table, marks the
//! signal pending in every interested slot and writes to that slot's wake-up fd. It uses
//! only atomics and `write(2)`, both async-signal-safe. The loop then runs the user's
//! handlers on its own thread, never inside the signal handler.
//!
//! The handler is installed when the first loop starts watching a signal, and the
//! signal's previous disposition is restored when the last one stops.
//!
//! `signal-hook-registry` is not used because it never restores the previous disposition
//! after the last action is removed (a removed SIGINT handler would leave Ctrl-C ignored).

use super::waker::WAKE_BYTES;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// How many loops may watch signals at the same time.
pub(crate) const MAX_SIGNAL_LOOPS: usize = 64;

/// Signals numbered 1..=64 fit in a `u64` bit set (Linux goes up to SIGRTMAX = 64).
const MAX_SIGNAL: i32 = 64;

/// Signals that cannot be caught, or that mean a fault in the thread that raised them:
/// deferring those to the loop would re-run the faulting instruction forever.
const FORBIDDEN: [i32; 6] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
];

struct Slot {
    /// The wake-up fd to write to, or -1 when the slot is free.
    fd: AtomicI32,
    /// Signals this slot's loop watches (bit `n - 1` for signal `n`).
    interest: AtomicU64,
    /// Signals that arrived and the loop has not yet taken.
    pending: AtomicU64,
    /// Signal handlers currently between reading `fd` and writing to it.
    busy: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE_SLOT: Slot = Slot {
    fd: AtomicI32::new(-1),
    interest: AtomicU64::new(0),
    pending: AtomicU64::new(0),
    busy: AtomicU32::new(0),
};

static SLOTS: [Slot; MAX_SIGNAL_LOOPS] = [FREE_SLOT; MAX_SIGNAL_LOOPS];

/// Bookkeeping changed only under the lock, never touched by the handler.
struct Registry {
    claimed: [bool; MAX_SIGNAL_LOOPS],
    /// How many slots watch each signal.
    watchers: [u32; MAX_SIGNAL as usize + 1],
    /// The disposition each signal had before our handler was installed.
    previous: [Option<libc::sigaction>; MAX_SIGNAL as usize + 1],
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    claimed: [false; MAX_SIGNAL_LOOPS],
    watchers: [0; MAX_SIGNAL as usize + 1],
    previous: [None; MAX_SIGNAL as usize + 1],
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bit(signum: i32) -> u64 {
    1u64 << (signum - 1)
}

/// Checks that `signum` is a signal a loop may handle.
pub(crate) fn validate(signum: i32) -> io::Result<()> {
    if !(1..=MAX_SIGNAL).contains(&signum) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{signum} is not a signal number"),
        ));
    }
    if FORBIDDEN.contains(&signum) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signum} cannot be handled by an event loop"),
        ));
    }
    Ok(())
}

extern "C" fn on_signal(signum: libc::c_int) {
    let saved_errno = errno::errno();
    if (1..=MAX_SIGNAL).contains(&signum) {
        let bit = bit(signum);
        for slot in &SLOTS {
            if slot.interest.load(Ordering::Acquire) & bit == 0 {
                continue;
            }
            slot.pending.fetch_or(bit, Ordering::AcqRel);
            slot.busy.fetch_add(1, Ordering::AcqRel);
            let fd = slot.fd.load(Ordering::Acquire);
            if fd >= 0 {
                // SAFETY: write(2) is async-signal-safe; the buffer is a static of the
                // length given. The fd stays open while `busy` is non-zero: `release` waits
                // for it before the loop may close the fd.
                unsafe { libc::write(fd, WAKE_BYTES.as_ptr().cast(), WAKE_BYTES.len()) };
            }
            slot.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
    errno::set_errno(saved_errno);
}

fn install(signum: i32) -> io::Result<libc::sigaction> {
    // SAFETY: `sigaction` is plain old data for which all-zeroes is a valid value, and
    // sigemptyset initialises the mask it is given. `on_signal` only uses
    // async-signal-safe operations (atomics, write(2), errno).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signum, &action, &mut previous) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(previous)
    }
}

fn restore(signum: i32, previous: &libc::sigaction) {
    // SAFETY: `previous` is the value the kernel gave us for this signal earlier.
    unsafe { libc::sigaction(signum, previous, std::ptr::null_mut()) };
}

/// One loop's entry in the process-wide signal table.
#[derive(Debug)]
pub(crate) struct SignalSlot {
    index: usize,
}

impl SignalSlot {
    /// Claims a free slot whose wake-ups go to `wake_fd`.
    pub fn claim(wake_fd: RawFd) -> io::Result<SignalSlot> {
        let mut reg = registry();
        let index = reg.claimed.iter().position(|c| !c).ok_or_else(|| {
            io::Error::other(format!(
                "at most {MAX_SIGNAL_LOOPS} event loops can handle signals at once"
            ))
        })?;
        reg.claimed[index] = true;
        let slot = &SLOTS[index];
        slot.pending.store(0, Ordering::Release);
        slot.interest.store(0, Ordering::Release);
        slot.fd.store(wake_fd, Ordering::Release);
        Ok(SignalSlot { index })
    }

    /// Starts delivering `signum` to this slot, installing the handler if no slot did.
    pub fn watch(&self, signum: i32) -> io::Result<()> {
        validate(signum)?;
        let slot = &SLOTS[self.index];
        if slot.interest.load(Ordering::Acquire) & bit(signum) != 0 {
            return Ok(());
        }
        let mut reg = registry();
        let n = signum as usize;
        if reg.watchers[n] == 0 {
            reg.previous[n] = Some(install(signum)?);
        }
        reg.watchers[n] += 1;
        slot.interest.fetch_or(bit(signum), Ordering::AcqRel);
        Ok(())
    }

    /// Stops delivering `signum` to this slot, restoring the previous disposition when
    /// no slot watches it any more.
    pub fn unwatch(&self, signum: i32) {
        let slot = &SLOTS[self.index];
        if validate(signum).is_err() || slot.interest.load(Ordering::Acquire) & bit(signum) == 0 {
            return;
        }
        let mut reg = registry();
        slot.interest.fetch_and(!bit(signum), Ordering::AcqRel);
        slot.pending.fetch_and(!bit(signum), Ordering::AcqRel);
        let n = signum as usize;
        reg.watchers[n] -= 1;
        if reg.watchers[n] == 0 {
            if let Some(previous) = reg.previous[n].take() {
                restore(signum, &previous);
            }
        }
    }

    /// Takes the set of signals that arrived since the last call (bit `n - 1` for signal `n`).
    pub fn take_pending(&self) -> u64 {
        let slot = &SLOTS[self.index];
        if slot.pending.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        slot.pending.swap(0, Ordering::AcqRel)
    }
}

impl Drop for SignalSlot {
    fn drop(&mut self) {
        let slot = &SLOTS[self.index];
        let interest = slot.interest.load(Ordering::Acquire);
        for signum in 1..=MAX_SIGNAL {
            if interest & bit(signum) != 0 {
                self.unwatch(signum);
            }
        }
        slot.fd.store(-1, Ordering::Release);
        // A handler that read the fd before it was cleared may still be writing to it.
        while slot.busy.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        registry().claimed[self.index] = false;
    }
}

/// Iterates over the signal numbers in a pending set.
pub(crate) fn signals_in(mut set: u64) -> impl Iterator<Item = i32> {
    std::iter::from_fn(move || {
        if set == 0 {
            return None;
        }
        let n = set.trailing_zeros();
        set &= set - 1;
        Some(n as i32 + 1)
    })
}
