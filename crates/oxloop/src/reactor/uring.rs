//! Linux backend: `io_uring` (the `io-uring` crate), readiness through poll requests.
//!
//! Every watched fd has at most one poll request in the ring. Level-triggered and
//! one-shot interest use single-shot `IORING_OP_POLL_ADD` requests: a level-triggered
//! one is armed again after each report, just before the next `io_uring_enter`, that is
//! after the callbacks ran, so an fd that is still ready reports again at once and one
//! that was drained stays quiet (the same reports `epoll` gives). Edge-triggered
//! interest uses one multishot poll request, which reports each wake-up of the fd.
//!
//! A report of a single-shot request that completed between two waits is a snapshot
//! older than the wait: the request is armed again in that wait instead, so a report
//! says what was true when the loop waited, as with `epoll`.
//!
//! Registrations ([`Backend::add`], [`Backend::modify`], [`Backend::delete`]) are
//! submitted at once, one system call each as with `epoll_ctl`: the ring's fd must
//! tell a host loop about a new watcher, and a poll request holds a reference to its
//! file, so it must be gone before the caller closes the fd, or the socket would stay
//! open (no FIN sent). Re-arming after a report is not sent on its own: it is queued
//! in the submission ring and reaches the kernel with the next wait, which submits
//! everything and waits for completions in one `io_uring_enter` (the timer deadline is
//! the wait's timeout), or with [`Backend::flush`] (`EventLoop::prepare_wait`).
//!
//! The request's user data is the fd in the low 32 bits and a per-fd generation in the
//! high 32 bits; a completion whose generation is not the fd's current one belongs to
//! a request that was removed or replaced, and is ignored.

use super::{Interest, Ready, Trigger};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// Submission ring size: requests queued between two waits before one is forced.
const RING_ENTRIES: u32 = 256;

/// The user data of requests whose completions carry nothing to dispatch (removals).
const IGNORED: u64 = u64::MAX;

/// What the kernel currently holds for one fd.
#[derive(Clone, Copy, Default)]
struct FdState {
    /// Registered with [`Backend::add`] and not deleted since.
    registered: bool,
    interest: Interest,
    mode: Trigger,
    /// A one-shot registration that reported: quiet until modified.
    disabled: bool,
    /// Queued for (re-)arming before the next wait.
    dirty: bool,
    /// The generation of the live poll request, if one is armed (or queued).
    armed: Option<u32>,
    /// The mask and mode of that request.
    armed_mask: u32,
    armed_multishot: bool,
    /// The latest generation handed out for this fd.
    generation: u32,
}

struct State {
    ring: IoUring,
    fds: Vec<FdState>,
    /// fds whose poll request must be (re-)armed before the next wait.
    dirty: Vec<RawFd>,
    /// fds whose single-shot request just completed (reused by `reap`).
    completed: Vec<RawFd>,
}

/// An io_uring instance used for readiness.
pub(crate) struct Backend {
    state: RefCell<State>,
    /// The ring's fd, kept apart so `as_fd` needs no borrow.
    ring_fd: RawFd,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoUringBackend")
            .field("ring_fd", &self.ring_fd)
            .finish()
    }
}

/// The reports of one wait; kept by the loop and reused every iteration.
pub(crate) struct Events {
    list: Vec<Ready>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            list: Vec::with_capacity(RING_ENTRIES as usize),
        }
    }

    /// The reports of the last wait.
    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, Ready>> {
        self.list.iter().copied()
    }
}

fn user_data(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(fd as u32)
}

fn poll_mask(interest: Interest) -> u32 {
    let mut mask = 0;
    if interest.read {
        mask |= (libc::POLLIN | libc::POLLRDHUP) as u32;
    }
    if interest.write {
        mask |= libc::POLLOUT as u32;
    }
    mask
}

impl State {
    /// Queues `entry`, submitting what is queued first if the ring is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: poll and poll-removal requests point at no user memory: the
            // kernel reads only the fd and the numbers inside the entry.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Queues the removal of `fd`'s armed poll request, if any.
    fn disarm(&mut self, fd: RawFd) -> io::Result<()> {
        let entry = &mut self.fds[fd as usize];
        let Some(generation) = entry.armed.take() else {
            return Ok(());
        };
        let remove = opcode::PollRemove::new(user_data(fd, generation))
            .build()
            .user_data(IGNORED);
        self.push(&remove)
    }

    /// Makes the kernel's poll request for `fd` match its registration.
    fn arm(&mut self, fd: RawFd) -> io::Result<()> {
        let entry = self.fds[fd as usize];
        self.fds[fd as usize].dirty = false;
        if !entry.registered || entry.disabled {
            return self.disarm(fd);
        }
        let mask = poll_mask(entry.interest);
        let multishot = entry.mode == Trigger::Edge;
        if entry.armed.is_some() {
            if entry.armed_mask == mask && entry.armed_multishot == multishot {
                return Ok(());
            }
            self.disarm(fd)?;
        }
        let entry = &mut self.fds[fd as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.armed = Some(entry.generation);
        entry.armed_mask = mask;
        entry.armed_multishot = multishot;
        let poll = opcode::PollAdd::new(types::Fd(fd), mask)
            .multi(multishot)
            .build()
            .user_data(user_data(fd, entry.generation));
        self.push(&poll)
    }

    fn mark_dirty(&mut self, fd: RawFd) {
        let entry = &mut self.fds[fd as usize];
        if !entry.dirty {
            entry.dirty = true;
            self.dirty.push(fd);
        }
    }

    /// Arms every fd queued since the last wait.
    fn arm_dirty(&mut self) -> io::Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut result = Ok(());
        for &fd in &dirty {
            if self.fds[fd as usize].dirty {
                result = result.and(self.arm(fd));
            }
        }
        dirty.clear();
        self.dirty = dirty;
        result
    }

    /// Turns the completions in the ring into reports. `refresh`: the completions were
    /// posted before this wait began, so a level-triggered one is a stale snapshot
    /// (the fd may have been drained, or become ready in the other direction, since):
    /// its request is armed again instead, and the wait reports what it finds.
    fn reap(&mut self, events: &mut Events, refresh: bool) {
        let mut rearm = std::mem::take(&mut self.completed);
        for cqe in self.ring.completion() {
            let data = cqe.user_data();
            if data == IGNORED {
                continue;
            }
            let fd = data as u32 as RawFd;
            let generation = (data >> 32) as u32;
            let Some(entry) = self.fds.get_mut(fd as usize) else {
                continue;
            };
            if entry.armed != Some(generation) {
                continue; // a removed or replaced request
            }
            if !cqueue::more(cqe.flags()) {
                entry.armed = None;
                if entry.mode == Trigger::Oneshot {
                    entry.disabled = true;
                } else if entry.registered {
                    rearm.push(fd);
                }
            }
            if refresh && entry.mode == Trigger::Level && entry.armed.is_none() {
                continue;
            }
            match cqe.result() {
                bits if bits >= 0 => events.list.push(Ready::from_epoll(fd, bits as u32)),
                e if e == -libc::ECANCELED => {}
                e if e == -libc::EBADF => {
                    // Closed behind the loop's back: forget it, as epoll does.
                    entry.registered = false;
                    rearm.pop_if(|last| *last == fd);
                }
                _ => events.list.push(Ready::from_epoll(
                    fd,
                    (libc::POLLERR | libc::POLLHUP) as u32,
                )),
            }
        }
        for &fd in &rearm {
            self.mark_dirty(fd);
        }
        rearm.clear();
        self.completed = rearm;
    }
}

/// Refuses what `epoll_ctl` refuses: a closed fd, and regular files and directories
/// (always ready, so pointless to watch).
fn check_pollable(fd: RawFd) -> io::Result<()> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fstat` writes a whole `struct stat` into the buffer it is given, which
    // lives on this stack frame for the call; a bad fd is answered with EBADF.
    let rc = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstat` succeeded, so it filled the buffer.
    let mode = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT;
    if mode == libc::S_IFREG || mode == libc::S_IFDIR {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

impl Backend {
    /// Sets up a ring. Fails when the kernel has no io_uring or refuses it (the
    /// `kernel.io_uring_disabled` sysctl, a seccomp filter, a container's policy).
    pub fn new() -> io::Result<Backend> {
        let ring = IoUring::builder().build(RING_ENTRIES)?;
        if !ring.params().is_feature_ext_arg() || !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's io_uring lacks wait timeouts (IORING_FEAT_EXT_ARG, Linux 5.11)",
            ));
        }
        let ring_fd = ring.as_raw_fd();
        Ok(Backend {
            state: RefCell::new(State {
                ring,
                fds: Vec::new(),
                // Sized up front, so that the first reports allocate nothing.
                dirty: Vec::with_capacity(RING_ENTRIES as usize),
                completed: Vec::with_capacity(RING_ENTRIES as usize),
            }),
            ring_fd,
        })
    }

    /// Starts watching `fd` (armed at the next wait).
    pub fn add(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        let index = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        check_pollable(fd)?;
        let mut state = self.state.borrow_mut();
        if index >= state.fds.len() {
            state.fds.resize(index + 1, FdState::default());
        }
        let entry = &mut state.fds[index];
        entry.registered = true;
        entry.disabled = false;
        entry.interest = interest;
        entry.mode = mode;
        // A request left from an fd number that was closed and reused would watch the
        // old file: replace it.
        entry.armed_mask = u32::MAX;
        state.arm(fd)?;
        state.ring.submit()?;
        Ok(())
    }

    /// Changes what `fd` is watched for. The request is always replaced, since the fd
    /// may have been closed and its number reused behind the loop's back.
    pub fn modify(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        let known = {
            let state = self.state.borrow();
            state.fds.get(fd as usize).is_some_and(|e| e.registered)
        };
        if !known {
            return self.add(fd, interest, mode);
        }
        let mut state = self.state.borrow_mut();
        let entry = &mut state.fds[fd as usize];
        entry.disabled = false;
        entry.interest = interest;
        entry.mode = mode;
        entry.armed_mask = u32::MAX;
        state.arm(fd)?;
        state.ring.submit()?;
        Ok(())
    }

    /// Stops watching `fd`, at once (see the module's documentation). An fd that is
    /// already closed or not watched is not an error.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let Some(entry) = state.fds.get_mut(fd as usize) else {
            return Ok(());
        };
        entry.registered = false;
        if entry.armed.is_none() {
            return Ok(());
        }
        state.disarm(fd)?;
        state.ring.submit()?;
        Ok(())
    }

    /// Submits what is queued without waiting, so that the ring's fd reports what the
    /// loop watches (for a host loop that waits on it).
    pub fn flush(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.arm_dirty()?;
        if !state.ring.submission().is_empty() {
            state.ring.submit()?;
        }
        Ok(())
    }

    /// Submits what is queued and waits for completions for at most `timeout` (`None`:
    /// until something happens), in one `io_uring_enter`. An interrupted wait returns
    /// with no reports.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.list.clear();
        let mut state = self.state.borrow_mut();
        if !state.ring.completion().is_empty() {
            state.reap(events, true);
        }
        state.arm_dirty()?;
        let ready = !events.list.is_empty();
        let queued = !state.ring.submission().is_empty();
        let result = if ready || timeout == Some(Duration::ZERO) {
            if queued {
                state.ring.submit().map(drop)
            } else {
                Ok(())
            }
        } else {
            let submitter = state.ring.submitter();
            match timeout {
                None => submitter.submit_and_wait(1).map(drop),
                Some(timeout) => {
                    let timespec = types::Timespec::from(timeout);
                    let args = types::SubmitArgs::new().timespec(&timespec);
                    submitter.submit_with_args(1, &args).map(drop)
                }
            }
        };
        match result {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        state.reap(events, false);
        Ok(())
    }
}

impl AsFd for Backend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the ring (and so its fd) lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.ring_fd) }
    }
}

impl AsRawFd for Backend {
    fn as_raw_fd(&self) -> RawFd {
        self.ring_fd
    }
}
