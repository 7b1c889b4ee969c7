//! Linux backend: `io_uring` (the `io-uring` crate): readiness through poll requests,
//! and stream sockets read and written through the ring itself (see "stream sockets"
//! below).
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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
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
    /// Stream sockets whose reads and writes go through the ring, by fd.
    streams: Vec<Option<Box<Stream>>>,
    /// The provided buffers multishot receives fill; made with the first stream.
    buffers: Option<BufferRing>,
    /// Send buffers of streams deleted while their send was in the kernel, by the
    /// send's user data; dropped when the send completes.
    orphans: Vec<(u64, Vec<u8>)>,
    /// The same for sends made from a received buffer ([`Lent`]): the buffer goes back
    /// to the ring when the send completes.
    orphan_buffers: Vec<(u64, u16)>,
    /// The received buffers whose bytes protocols are being handed, while they are:
    /// more than one when a protocol runs a nested loop.
    lending: Vec<Lending>,
    /// Received buffers kept out of the ring by sends ([`Stream::lent`]).
    lent_buffers: u16,
    /// Requests in the kernel whose end the ring must see before it goes: receives
    /// and sends (they use the loop's memory) and accepts (they may still hand the
    /// loop new fds, which must be closed).
    in_kernel: usize,
    /// Listening sockets accepted through the ring (a handful per loop).
    listeners: Vec<Listener>,
    /// Streams with bytes queued to send and no send in the kernel.
    send_queued: Vec<RawFd>,
    /// Reports made without a completion (data already received, when reading
    /// resumes), handed out by the next wait.
    synthetic: Vec<Ready>,
    /// Generations of stream requests, counted across streams, so that a request of a
    /// stream gone before is never taken for one of a new stream on the same fd.
    stream_generation: u32,
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

/// What a request is, in the top two bits of its user data.
const KIND_POLL: u64 = 0;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_ACCEPT: u64 = 3;
/// Generations are counted in the 30 bits between the fd and the kind.
const GENERATION_MASK: u32 = (1 << 30) - 1;

fn user_data(fd: RawFd, generation: u32) -> u64 {
    tagged(KIND_POLL, fd, generation)
}

fn tagged(kind: u64, fd: RawFd, generation: u32) -> u64 {
    (kind << 62) | (u64::from(generation & GENERATION_MASK) << 32) | u64::from(fd as u32)
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
        if self.is_listener(fd) {
            // Accepting is the multishot accept's job: no poll request.
            self.arm_accept(fd, entry.interest.read)?;
            return self.disarm(fd);
        }
        let mut mask = poll_mask(entry.interest);
        if self.is_stream(fd) {
            // Reading is the multishot receive's job; writability is polled for only
            // once the queued bytes are sent (the transport's writer runs then).
            self.arm_receive(fd, entry.interest.read)?;
            let stream = self.stream(fd);
            mask = if entry.interest.write && stream.backlog() == 0 {
                libc::POLLOUT as u32
            } else {
                0
            };
            if mask == 0 {
                return self.disarm(fd);
            }
        }
        let multishot = entry.mode == Trigger::Edge && !self.is_stream(fd);
        if entry.armed.is_some() {
            if entry.armed_mask == mask && entry.armed_multishot == multishot {
                return Ok(());
            }
            self.disarm(fd)?;
        }
        let entry = &mut self.fds[fd as usize];
        entry.generation = entry.generation.wrapping_add(1) & GENERATION_MASK;
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
        // One completion at a time, so that handling it may use the whole state.
        loop {
            let next = self.ring.completion().next();
            let Some(cqe) = next else { break };
            let data = cqe.user_data();
            if data == IGNORED {
                continue;
            }
            let fd = data as u32 as RawFd;
            let generation = (data >> 32) as u32 & GENERATION_MASK;
            match data >> 62 {
                KIND_RECV => {
                    self.on_received(fd, generation, cqe.result(), cqe.flags(), events);
                    continue;
                }
                KIND_SEND => {
                    self.on_sent(data, cqe.result(), events);
                    continue;
                }
                KIND_ACCEPT => {
                    self.on_accepted(fd, generation, cqe.result(), cqe.flags());
                    continue;
                }
                _ => {}
            }
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
                bits if bits >= 0 => events.list.push(Ready::from_ring(fd, bits as u32)),
                e if e == -libc::ECANCELED => {}
                e if e == -libc::EBADF => {
                    // Closed behind the loop's back: forget it, as epoll does.
                    entry.registered = false;
                    rearm.pop_if(|last| *last == fd);
                }
                _ => events
                    .list
                    .push(Ready::from_ring(fd, (libc::POLLERR | libc::POLLHUP) as u32)),
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
        // Completions are posted when the loop next enters the kernel (its wait)
        // rather than by interrupting it while callbacks run (Linux 5.19); older
        // kernels refuse the flags, and get a plain ring.
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::builder().build(RING_ENTRIES))?;
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
                streams: Vec::new(),
                buffers: None,
                orphans: Vec::new(),
                orphan_buffers: Vec::new(),
                lending: Vec::new(),
                lent_buffers: 0,
                in_kernel: 0,
                listeners: Vec::new(),
                send_queued: Vec::new(),
                synthetic: Vec::new(),
                stream_generation: 0,
            }),
            ring_fd,
        })
    }

    /// Starts watching `fd` (armed at the next wait).
    pub fn add(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        let result = self.register(fd, interest, mode);
        if result.is_err() && self.keeps_state(fd) {
            // Never watched: the stream started for it is forgotten, so that the fd
            // number's next owner starts clean.
            let _ = self.delete(fd);
        }
        result
    }

    fn register(&self, fd: RawFd, interest: Interest, mode: Trigger) -> io::Result<()> {
        let index = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // A stream is a connected socket its transport owns: nothing to check, and its
        // receive goes with the next wait (as its sends do), not in a call of its own.
        let stream = self.state.borrow().is_stream(fd);
        if !stream {
            check_pollable(fd)?;
        }
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
        if stream {
            state.mark_dirty(fd);
            return Ok(());
        }
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
        let stream = state.is_stream(fd);
        let entry = &mut state.fds[fd as usize];
        entry.disabled = false;
        entry.interest = interest;
        entry.mode = mode;
        if stream {
            // A transport changing direction: goes with the next wait, as its sends do.
            state.mark_dirty(fd);
            return Ok(());
        }
        entry.armed_mask = u32::MAX;
        state.arm(fd)?;
        state.ring.submit()?;
        Ok(())
    }

    /// Stops reporting on `fd`: a stream keeps its state (reading paused, sends going
    /// on); another fd is deleted.
    pub fn unwatch(&self, fd: RawFd) -> io::Result<()> {
        let mode = {
            let state = self.state.borrow();
            if !state.is_stream(fd) {
                None
            } else {
                Some(state.fds[fd as usize].mode)
            }
        };
        match mode {
            Some(mode) => self.modify(fd, Interest::NONE, mode),
            None => self.delete(fd),
        }
    }

    /// Stops watching `fd`, at once (see the module's documentation). An fd that is
    /// already closed or not watched is not an error.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let stream = state.is_stream(fd);
        if stream {
            state.drop_stream(fd)?;
        }
        let listener = state.is_listener(fd);
        if listener {
            // Its accept ends; the connections it accepted wait for the server.
            state.arm_accept(fd, false)?;
        }
        let served = stream || listener;
        match state.fds.get_mut(fd as usize) {
            Some(entry) => {
                entry.registered = false;
                if !served && entry.armed.is_none() {
                    return Ok(());
                }
                state.disarm(fd)?;
            }
            None if !served => return Ok(()),
            None => {}
        }
        state.ring.submit()?;
        Ok(())
    }

    /// Whether `fd` is a stream served through the ring, whose state stays (reading
    /// paused) until [`delete`](Self::delete).
    pub fn keeps_state(&self, fd: RawFd) -> bool {
        self.state.borrow().is_stream(fd)
    }

    /// Submits what is queued without waiting, so that the ring's fd reports what the
    /// loop watches (for a host loop that waits on it).
    ///
    /// Returns whether reports wait that the ring's fd does not show (made without a
    /// completion, or connections accepted and not yet taken): the host must not sleep.
    pub fn flush(&self) -> io::Result<bool> {
        let mut state = self.state.borrow_mut();
        state.arm_dirty()?;
        state.start_sends()?;
        if !state.ring.submission().is_empty() {
            state.ring.submit()?;
        }
        Ok(!state.synthetic.is_empty() || state.accepted_waiting())
    }

    /// Submits what is queued and waits for completions for at most `timeout` (`None`:
    /// until something happens), in one `io_uring_enter`. An interrupted wait returns
    /// with no reports. Out of line: the epoll path is the one inlined into the loop.
    #[inline(never)]
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.list.clear();
        let mut state = self.state.borrow_mut();
        if !state.ring.completion().is_empty() {
            state.reap(events, true);
        }
        state.arm_dirty()?;
        state.start_sends()?;
        events.list.append(&mut state.synthetic);
        let ready = !events.list.is_empty() || state.accepted_waiting();
        let queued = {
            let submission = state.ring.submission();
            // Completions waiting for the loop to enter the kernel count as queued work.
            !submission.is_empty() || submission.taskrun() || submission.cq_overflow()
        };
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
        state.report_accepted(events);
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

// ---------------------------------------------------------------- stream sockets ---------
//
// A stream socket handed to `Backend::start_stream` (the protocol layer's transports)
// is not polled for reading: one multishot receive (`IORING_OP_RECV` with
// `IORING_RECV_MULTISHOT`) stays in the kernel and fills buffers that the kernel picks
// from a provided-buffer ring; each completion queues the buffer on the stream and
// reports the fd readable. Bytes to send are copied into the stream's queue, and one
// `IORING_OP_SEND` per stream goes out with the next wait, carrying everything queued
// since the last one. The transport asks for writability (a poll) only when it waits
// for the queue to drain. A stream whose reading pauses gives its buffers back at once
// (their bytes copied into the stream): the ring is every stream's. A stream whose
// receive ended for want of buffers is read with plain `recv` calls until its socket is
// drained (see `Stream::starved`).

/// Provided buffers: how many, and how large each.
const BUFFER_COUNT: u16 = 256;
const BUFFER_SIZE: usize = 16 * 1024;
/// The buffer group id of the ring's provided buffers.
const BUFFER_GROUP: u16 = 0;

/// A provided-buffer ring: the ring of descriptors the kernel takes buffers from, and
/// the buffers.
struct BufferRing {
    /// `BUFFER_COUNT` descriptors, page-aligned, shared with the kernel.
    descriptors: *mut types::BufRingEntry,
    /// `BUFFER_COUNT * BUFFER_SIZE` bytes the kernel writes received data into.
    memory: *mut u8,
    /// The next descriptor slot to fill (wraps; the kernel reads it as the ring's tail).
    tail: u16,
    /// Buffers the kernel filled and the loop has not given back.
    out: u16,
}

fn descriptors_layout() -> std::alloc::Layout {
    let size = usize::from(BUFFER_COUNT) * std::mem::size_of::<types::BufRingEntry>();
    std::alloc::Layout::from_size_align(size, 4096).expect("a valid layout")
}

fn memory_layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(usize::from(BUFFER_COUNT) * BUFFER_SIZE, 64)
        .expect("a valid layout")
}

impl BufferRing {
    /// Allocates the ring and its buffers, registers them with `ring`, and hands every
    /// buffer to the kernel.
    fn new(ring: &IoUring) -> io::Result<BufferRing> {
        // SAFETY: both layouts have a non-zero size. The allocations are freed in
        // `BufferRing::free`, only once the kernel can no longer use them (see there).
        let (descriptors, memory) = unsafe {
            (
                std::alloc::alloc_zeroed(descriptors_layout()) as *mut types::BufRingEntry,
                // Zeroed (free for a fresh mapping), so that tools that do not see the
                // kernel's writes (valgrind) take received bytes as initialised.
                std::alloc::alloc_zeroed(memory_layout()),
            )
        };
        if descriptors.is_null() || memory.is_null() {
            std::alloc::handle_alloc_error(descriptors_layout());
        }
        let mut buffers = BufferRing {
            descriptors,
            memory,
            tail: 0,
            out: 0,
        };
        // SAFETY: `descriptors` is page-aligned, zeroed and `BUFFER_COUNT` entries
        // long, and stays allocated until after the group is unregistered or the ring
        // is closed and every request that could use it completed (`State::drop`).
        let registered = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                descriptors as u64,
                BUFFER_COUNT,
                BUFFER_GROUP,
                0,
            )
        };
        if let Err(e) = registered {
            // SAFETY: never registered, so the kernel never saw these allocations.
            unsafe { buffers.free() };
            return Err(e);
        }
        for id in 0..BUFFER_COUNT {
            buffers.publish(id);
        }
        Ok(buffers)
    }

    /// The address of buffer `id`'s first byte.
    fn address(&self, id: u16) -> *const u8 {
        // SAFETY: `id < BUFFER_COUNT`, so the offset stays inside `memory`.
        unsafe { self.memory.add(usize::from(id) * BUFFER_SIZE) }
    }

    /// The bytes of buffer `id`.
    fn slice(&self, id: u16, len: usize) -> &[u8] {
        let len = len.min(BUFFER_SIZE);
        // SAFETY: `id < BUFFER_COUNT`, so the range lies inside `memory`, which lives
        // as long as `self`; the kernel wrote `len` bytes there and no longer writes to
        // this buffer until `give_back(id)` puts it in the ring again.
        unsafe { std::slice::from_raw_parts(self.memory.add(usize::from(id) * BUFFER_SIZE), len) }
    }

    /// Counts buffer `id` as taken out of the ring by a completion.
    fn taken(&mut self) {
        self.out += 1;
    }

    /// Puts buffer `id`, taken by a completion, back in the ring for the kernel to fill.
    fn give_back(&mut self, id: u16) {
        self.out -= 1;
        self.publish(id);
    }

    /// Hands buffer `id` to the kernel.
    fn publish(&mut self, id: u16) {
        let slot = usize::from(self.tail % BUFFER_COUNT);
        // SAFETY: `slot < BUFFER_COUNT`. The kernel reads descriptors only up to the
        // published tail, and this slot is past it until the store below, so nothing
        // else accesses it now. The address points at buffer `id` inside `memory`.
        unsafe {
            let entry = &mut *self.descriptors.add(slot);
            entry.set_addr(self.memory.add(usize::from(id) * BUFFER_SIZE) as u64);
            entry.set_len(BUFFER_SIZE as u32);
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the `resv` field of descriptor 0, in memory that lives
        // as long as `self`; the kernel reads it, so it is published with a release
        // store after the descriptor was written.
        unsafe {
            let tail = types::BufRingEntry::tail(self.descriptors) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Frees the ring and its buffers.
    ///
    /// # Safety
    /// The kernel must no longer use them: never registered, or every request that
    /// could pick a buffer completed and the group was unregistered or the ring closed.
    unsafe fn free(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the caller vouches that the
        // kernel is done with them.
        unsafe {
            std::alloc::dealloc(self.descriptors as *mut u8, descriptors_layout());
            std::alloc::dealloc(self.memory, memory_layout());
        }
    }
}

/// A stream socket served through the ring.
#[derive(Default)]
struct Stream {
    /// Which stream this is, among all the loop's streams over time: a handing-out
    /// that ends after its stream was deleted and the fd number reused must not touch
    /// the new stream.
    serial: u32,
    /// The generation of the multishot receive in the kernel, if one is.
    receiving: Option<u32>,
    /// The generation of a receive cancelled because reading paused: what it still
    /// delivers is kept.
    cancelled: Option<u32>,
    /// Buffers received and not yet taken: (buffer id, length).
    received: std::collections::VecDeque<(u16, u32)>,
    /// Bytes received while reading was paused, copied out of their buffers so that
    /// the buffers went back to the ring at once; taken before `received`.
    spilled: Vec<u8>,
    /// How much of `spilled` was handed out: it goes out a receive buffer's worth at a
    /// time, so that the protocol's flow control (pausing reading when its writes back
    /// up) acts as often as with the ring's buffers (a cancelled receive may still fill
    /// the whole ring).
    spilled_from: usize,
    /// End of the stream (0) or the error (a negative errno) that ended receiving.
    ended: Option<i32>,
    /// The receive ended for want of buffers (`ENOBUFS`): no receive is in the kernel,
    /// and [`Backend::receive`] reads the socket itself until it is drained, then the
    /// multishot receive is armed again.
    starved: bool,
    /// A write of bytes that lie in a received buffer, sent from there (see [`Lent`]);
    /// it goes before `queued`, and while it is in the kernel `sent` counts its bytes.
    lent: Option<Lent>,
    /// Bytes written and not yet handed to the kernel.
    queued: Vec<u8>,
    /// The bytes of the send in the kernel, and how far it got.
    sending: Vec<u8>,
    sent: usize,
    /// The generation of the send in the kernel, if one is.
    send_generation: Option<u32>,
    /// The error that ended sending (a negative errno).
    send_error: Option<i32>,
}

impl Stream {
    /// Bytes accepted and not yet taken by the kernel.
    fn backlog(&self) -> usize {
        self.queued.len() + self.sending_len() - self.sent
    }

    /// The length of the send in the kernel (or about to go there).
    fn sending_len(&self) -> usize {
        match self.lent {
            Some(lent) => lent.len as usize,
            None => self.sending.len(),
        }
    }

    /// Received bytes are waiting to be taken.
    fn has_received(&self) -> bool {
        self.spilled_from < self.spilled.len() || !self.received.is_empty()
    }
}

/// A send made straight from a received buffer: `len` bytes from `offset` in buffer
/// `id`, which stays out of the ring until the send ends. A protocol that writes back
/// (part of) what it is being handed, as an echo or a proxy does, so costs no copy into
/// the stream's queue, and the kernel reads bytes it has just written.
#[derive(Clone, Copy)]
struct Lent {
    id: u16,
    offset: u32,
    len: u32,
}

/// The received buffer a protocol is being handed (by [`Backend::receive`]).
struct Lending {
    id: u16,
    start: *const u8,
    len: usize,
    /// A send took the buffer: [`Backend::receive`] does not give it back.
    kept: bool,
}

impl Lending {
    /// Lends the buffer to a send of `data`, if `data` lies in it and no other send
    /// took it.
    fn lend(&mut self, data: &[u8]) -> Option<Lent> {
        let offset = (data.as_ptr() as usize).checked_sub(self.start as usize)?;
        if self.kept || data.is_empty() || offset + data.len() > self.len {
            return None;
        }
        self.kept = true;
        Some(Lent {
            id: self.id,
            offset: offset as u32,
            len: data.len() as u32,
        })
    }
}

/// Ends the handing of received bytes of stream `fd` to its protocol
/// ([`Backend::receive`]), when the protocol returns or unwinds: a buffer of the ring
/// (`id`) is taken off [`State::lending`] and given back unless a send keeps it, the
/// part of spilled bytes not handed out yet (from the offset) goes back to the stream,
/// and after a panic the stream is reported again if it has more.
struct Handing<'a> {
    backend: &'a Backend,
    fd: RawFd,
    /// The stream's [`Stream::serial`].
    serial: u32,
    id: Option<u16>,
    spilled: Option<(Vec<u8>, usize)>,
}

impl Drop for Handing<'_> {
    fn drop(&mut self) {
        // Not borrowed but by a panic raised while it was (none is known): then the
        // buffer is lost rather than the process aborted by a second panic.
        let Ok(mut state) = self.backend.state.try_borrow_mut() else {
            return;
        };
        let serial = self.serial;
        if let Some((spilled, from)) = self.spilled.take() {
            let stream =
                stream_at(&mut state.streams, self.fd).filter(|stream| stream.serial == serial);
            if let Some(stream) = stream {
                if from < spilled.len() {
                    if stream.spilled.is_empty() {
                        stream.spilled = spilled;
                        stream.spilled_from = from;
                    } else {
                        // Spilled again meanwhile (reading paused in the protocol's
                        // call): the new bytes go after the rest.
                        let mut rest = spilled[from..].to_vec();
                        rest.extend_from_slice(&stream.spilled[stream.spilled_from..]);
                        stream.spilled = rest;
                        stream.spilled_from = 0;
                    }
                }
            }
        }
        if let Some(id) = self.id {
            // A nested loop run by the protocol handed out buffers of its own
            // meanwhile, and took them off again when it finished.
            let lending = state.lending.pop();
            debug_assert!(lending.as_ref().is_some_and(|l| l.id == id));
            if !lending.is_some_and(|lending| lending.kept) {
                if let Some(buffers) = state.buffers.as_mut() {
                    buffers.give_back(id);
                }
            }
        }
        if std::thread::panicking() {
            // The protocol panicked, and the transport's loop handing out what was
            // received ended with it; the loop goes on (the panic is reported), so the
            // stream's other received bytes must be reported again, as a readiness
            // backend reports a socket with unread bytes again by itself.
            let fd = self.fd;
            if let Some(stream) = stream_at(&mut state.streams, fd).filter(|s| s.serial == serial) {
                if stream.has_received() || stream.ended.is_some() || stream.starved {
                    state
                        .synthetic
                        .push(Ready::from_ring(fd, libc::POLLIN as u32));
                }
            }
        }
    }
}

/// At most this many received buffers are kept by sends, so that peers slow to read
/// cannot keep the ring empty; past it, writes are copied. Half the ring: a busy
/// iteration's streams each keep one buffer for their echo until the next wait, and
/// each needs one to receive into (at a quarter of the ring, 100 echoing connections
/// copied 12-19 % of their bytes for want of it).
const MAX_LENT: u16 = BUFFER_COUNT / 2;

/// The state of stream `fd`, if `fd` is a stream.
fn stream_at(streams: &mut [Option<Box<Stream>>], fd: RawFd) -> Option<&mut Stream> {
    streams.get_mut(usize::try_from(fd).ok()?)?.as_deref_mut()
}

/// What [`Backend::receive`] found.
pub(crate) enum Received {
    /// Nothing received.
    Nothing,
    /// A buffer: its bytes are passed to the caller's function.
    Data,
    /// The peer ended the stream.
    End,
    /// Receiving failed.
    Failed(io::Error),
}

impl State {
    /// Makes the provided-buffer ring, with the first stream or listener; false where
    /// this kernel refuses it (Linux before 5.19, which has no multishot accept
    /// either).
    fn ensure_buffers(&mut self) -> bool {
        if self.buffers.is_none() {
            match BufferRing::new(&self.ring) {
                Ok(buffers) => self.buffers = Some(buffers),
                Err(e) => {
                    tracing::debug!("io_uring provided buffers refused: {e}");
                    return false;
                }
            }
        }
        true
    }

    fn next_generation(&mut self) -> u32 {
        self.stream_generation = self.stream_generation.wrapping_add(1) & GENERATION_MASK;
        self.stream_generation
    }

    fn is_stream(&self, fd: RawFd) -> bool {
        self.streams
            .get(fd as usize)
            .is_some_and(|stream| stream.is_some())
    }

    fn stream(&mut self, fd: RawFd) -> &mut Stream {
        self.streams[fd as usize]
            .as_deref_mut()
            .expect("a stream fd has its state")
    }

    /// Starts (or cancels) the multishot receive of stream `fd`.
    fn arm_receive(&mut self, fd: RawFd, read: bool) -> io::Result<()> {
        let next = self.next_generation();
        if !read {
            self.spill(fd);
            let stream = self.stream(fd);
            if let Some(generation) = stream.receiving.take() {
                stream.cancelled = Some(generation);
                let cancel = opcode::AsyncCancel::new(tagged(KIND_RECV, fd, generation))
                    .build()
                    .user_data(IGNORED);
                return self.push(&cancel);
            }
            return Ok(());
        }
        let stream = self.stream(fd);
        if stream.receiving.is_some() || stream.ended.is_some() || stream.starved {
            if stream.has_received() || stream.ended.is_some() || stream.starved {
                self.synthetic
                    .push(Ready::from_ring(fd, libc::POLLIN as u32));
            }
            return Ok(());
        }
        stream.receiving = Some(next);
        let generation = next;
        if stream.has_received() {
            self.synthetic
                .push(Ready::from_ring(fd, libc::POLLIN as u32));
        }
        let recv = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
            .build()
            .user_data(tagged(KIND_RECV, fd, generation));
        self.in_kernel += 1;
        self.push(&recv)
    }

    /// Copies the buffers stream `fd` received and has not handed out into the
    /// stream's own memory, and gives them back to the ring. For a stream whose reading
    /// is paused: the ring's buffers are every stream's, and a paused stream holding
    /// them (for as long as its protocol wants) would leave every other stream's
    /// receive ending with `ENOBUFS`, its bytes waiting in its socket, until it resumed.
    fn spill(&mut self, fd: RawFd) {
        let (Some(buffers), Some(stream)) =
            (self.buffers.as_mut(), stream_at(&mut self.streams, fd))
        else {
            return;
        };
        for (id, len) in stream.received.drain(..) {
            stream
                .spilled
                .extend_from_slice(buffers.slice(id, len as usize));
            buffers.give_back(id);
        }
    }

    /// A completion of a multishot receive.
    fn on_received(
        &mut self,
        fd: RawFd,
        generation: u32,
        result: i32,
        flags: u32,
        events: &mut Events,
    ) {
        let more = cqueue::more(flags);
        if !more {
            self.in_kernel -= 1;
        }
        let buffer = cqueue::buffer_select(flags);
        if let (Some(_), Some(buffers)) = (buffer, self.buffers.as_mut()) {
            buffers.taken();
        }
        let current = stream_at(&mut self.streams, fd)
            .filter(|s| s.receiving == Some(generation) || s.cancelled == Some(generation));
        let Some(stream) = current else {
            // A receive of a stream deleted meanwhile: its buffer goes back.
            if let (Some(id), Some(buffers)) = (buffer, self.buffers.as_mut()) {
                buffers.give_back(id);
            }
            return;
        };
        let paused = stream.receiving != Some(generation);
        // A receive cancelled when reading paused may still deliver after reading
        // resumed (a newer receive started): those bytes are reported too.
        let reading = stream.receiving.is_some();
        if !more && !paused {
            stream.receiving = None;
        }
        match (result, buffer) {
            (n, Some(id)) if n > 0 => {
                stream.received.push_back((id, n as u32));
                if !reading {
                    self.spill(fd);
                    return;
                }
                events.list.push(Ready::from_ring(fd, libc::POLLIN as u32));
                if !more && !paused {
                    self.mark_dirty(fd); // receive again
                }
            }
            (0, _) => {
                stream.ended = Some(0);
                let bits = (libc::POLLIN | libc::POLLRDHUP) as u32;
                events.list.push(Ready::from_ring(fd, bits));
            }
            (e, _) if e == -libc::ENOBUFS && !more && !paused => {
                // Every buffer was in use. Armed again, the receive would start with
                // the ring as empty as the other streams' receives, still in the
                // kernel, leave it, and lose to them for as long as they have bytes:
                // the transport reads this socket itself instead, until it is drained.
                stream.starved = true;
                events.list.push(Ready::from_ring(fd, libc::POLLIN as u32));
            }
            (e, _) if e == -libc::ENOBUFS || e == -libc::ECANCELED || e == -libc::EINTR => {
                if let (Some(id), Some(buffers)) = (buffer, self.buffers.as_mut()) {
                    buffers.give_back(id);
                }
                if !more && !paused {
                    self.mark_dirty(fd); // receive again
                }
            }
            (e, _) => {
                stream.ended = Some(e.min(-1));
                let bits = (libc::POLLIN | libc::POLLERR) as u32;
                events.list.push(Ready::from_ring(fd, bits));
            }
        }
    }

    /// Hands the kernel one send per stream with bytes queued and none in flight.
    fn start_sends(&mut self) -> io::Result<()> {
        let mut queued = std::mem::take(&mut self.send_queued);
        let mut result = Ok(());
        for &fd in &queued {
            let Some(stream) = stream_at(&mut self.streams, fd) else {
                continue;
            };
            if stream.send_generation.is_some()
                || (stream.queued.is_empty() && stream.lent.is_none())
                || stream.send_error.is_some()
            {
                continue;
            }
            if stream.lent.is_none() {
                std::mem::swap(&mut stream.queued, &mut stream.sending);
            }
            stream.sent = 0;
            self.stream_generation = self.stream_generation.wrapping_add(1) & GENERATION_MASK;
            let stream = self.streams[fd as usize]
                .as_deref_mut()
                .expect("checked above");
            stream.send_generation = Some(self.stream_generation);
            let send = send_entry(fd, stream, self.buffers.as_ref());
            self.in_kernel += 1;
            result = result.and(self.push(&send));
        }
        queued.clear();
        self.send_queued = queued;
        result
    }

    /// A completion of a send.
    fn on_sent(&mut self, data: u64, result: i32, events: &mut Events) {
        self.in_kernel -= 1;
        let fd = data as u32 as RawFd;
        let generation = (data >> 32) as u32 & GENERATION_MASK;
        let current =
            stream_at(&mut self.streams, fd).filter(|s| s.send_generation == Some(generation));
        let Some(stream) = current else {
            // The send of a deleted stream: its buffer can go now.
            self.orphans.retain(|(d, _)| *d != data);
            if let Some(i) = self.orphan_buffers.iter().position(|(d, _)| *d == data) {
                let (_, id) = self.orphan_buffers.swap_remove(i);
                self.release_lent(id);
            }
            return;
        };
        stream.send_generation = None;
        if result < 0 && result != -libc::EINTR && result != -libc::EAGAIN {
            stream.send_error = Some(result);
            if let Some(lent) = stream.lent.take() {
                self.release_lent(lent.id);
            }
            let bits = (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) as u32;
            events.list.push(Ready::from_ring(fd, bits));
            return;
        }
        stream.sent += result.max(0) as usize;
        let writer_waits = self.fds[fd as usize].interest.write;
        if result > 0 && writer_waits {
            // The queue shrank, perhaps to nothing: told at once, since the kernel took
            // the bytes into the socket's buffer, and the socket may not poll writable
            // again until its peer reads (a protocol paused for a full queue, which is
            // now at or under its low-water mark, would wait for ever for its
            // `resume_writing`).
            events.list.push(Ready::from_ring(fd, libc::POLLOUT as u32));
        }
        if stream.sent < stream.sending_len() {
            // A short send: the rest goes on at once.
            stream.send_generation = Some(generation);
            let send = send_entry(fd, stream, self.buffers.as_ref());
            self.in_kernel += 1;
            if self.push(&send).is_err() {
                self.in_kernel -= 1;
                self.stream(fd).send_error = Some(-libc::EIO);
            }
            return;
        }
        stream.sent = 0;
        let lent = stream.lent.take();
        stream.sending.clear();
        if !stream.queued.is_empty() {
            self.send_queued.push(fd);
        } else if writer_waits {
            // The poll for writability follows, for what the writer sends itself (a
            // file range).
            self.mark_dirty(fd);
        }
        if let Some(lent) = lent {
            self.release_lent(lent.id);
        }
    }

    /// Buffer `id`, kept by a send that ended, goes back to the ring; or, if it is
    /// still being handed to a protocol (a nested loop ran the send's completion), when
    /// that ends.
    fn release_lent(&mut self, id: u16) {
        self.lent_buffers -= 1;
        match self.lending.iter_mut().find(|l| l.kept && l.id == id) {
            Some(lending) => lending.kept = false,
            None => {
                if let Some(buffers) = self.buffers.as_mut() {
                    buffers.give_back(id);
                }
            }
        }
    }

    /// Forgets stream `fd`: its receive and send are cancelled, its received buffers go
    /// back to the ring, and a send still in the kernel keeps its bytes until it ends.
    fn drop_stream(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(mut stream) = self.streams.get_mut(fd as usize).and_then(Option::take) else {
            return Ok(());
        };
        if let Some(buffers) = self.buffers.as_mut() {
            for (id, _) in stream.received.drain(..) {
                buffers.give_back(id);
            }
        }
        let mut result = Ok(());
        if let Some(generation) = stream.receiving {
            let cancel = opcode::AsyncCancel::new(tagged(KIND_RECV, fd, generation))
                .build()
                .user_data(IGNORED);
            result = result.and(self.push(&cancel));
        }
        if let Some(generation) = stream.send_generation {
            let data = tagged(KIND_SEND, fd, generation);
            match stream.lent.take() {
                Some(lent) => self.orphan_buffers.push((data, lent.id)),
                None => self
                    .orphans
                    .push((data, std::mem::take(&mut stream.sending))),
            }
            let cancel = opcode::AsyncCancel::new(data).build().user_data(IGNORED);
            result = result.and(self.push(&cancel));
        }
        if let Some(lent) = stream.lent.take() {
            // Never sent.
            self.release_lent(lent.id);
        }
        result
    }
}

/// The send request for the unsent part of `stream.lent` (in `buffers`), or else of
/// `stream.sending`.
fn send_entry(fd: RawFd, stream: &Stream, buffers: Option<&BufferRing>) -> squeue::Entry {
    let (start, len) = match (stream.lent, buffers) {
        (Some(lent), Some(buffers)) => {
            let skip = lent.offset as usize + stream.sent;
            // SAFETY: `offset + len <= BUFFER_SIZE` (checked when the send was lent)
            // and `sent < len`, so the address stays inside buffer `lent.id`.
            let start = unsafe { buffers.address(lent.id).add(skip) };
            (start, lent.len as usize - stream.sent)
        }
        _ => {
            let rest = &stream.sending[stream.sent..];
            (rest.as_ptr(), rest.len())
        }
    };
    let generation = stream.send_generation.expect("a send in flight");
    // The kernel reads these bytes until the send completes: `sending` is neither
    // changed nor freed before that (a deleted stream's bytes wait in
    // `State::orphans`), a lent buffer stays out of the ring until then (a deleted
    // stream's in `State::orphan_buffers`), and `State::drop` waits for every send
    // before freeing either.
    opcode::Send::new(types::Fd(fd), start, len.min(u32::MAX as usize) as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(tagged(KIND_SEND, fd, generation))
}

impl Drop for State {
    fn drop(&mut self) {
        // Requests that use the loop's memory (receive buffers, send bytes) must end
        // before that memory is freed: cancel them all and wait for their completions.
        if self.in_kernel > 0 {
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(IGNORED);
            let _ = self.push(&cancel);
            let mut events = Events::new();
            let timeout = types::Timespec::from(Duration::from_millis(10));
            for _ in 0..200 {
                if self.in_kernel == 0 {
                    break;
                }
                let args = types::SubmitArgs::new().timespec(&timeout);
                let _ = self.ring.submitter().submit_with_args(1, &args);
                events.list.clear();
                self.reap(&mut events, false);
            }
        }
        if self.in_kernel > 0 {
            // The kernel still holds some of it: leaking is the only safe choice.
            tracing::error!("io_uring requests did not end; their buffers are leaked");
            self.orphans.drain(..).for_each(std::mem::forget);
            self.streams.drain(..).for_each(std::mem::forget);
            return;
        }
        if let Some(mut buffers) = self.buffers.take() {
            // Every buffer out of the ring is held by a stream: none was lost.
            let held: usize = (self.streams.iter().flatten())
                .map(|s| s.received.len() + usize::from(s.lent.is_some()))
                .sum();
            debug_assert_eq!(usize::from(buffers.out), held, "receive buffers lost");
            let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
            // SAFETY: no receive is in the kernel any more (`in_kernel` is 0) and the
            // group is unregistered, so the kernel no longer touches the buffers.
            unsafe { buffers.free() };
        }
    }
}

impl Backend {
    /// Serves stream socket `fd` through the ring (multishot receive, queued sends)
    /// once it is added. Returns false where this kernel cannot (no provided-buffer
    /// rings, Linux 5.19): the fd is then watched for readiness like any other.
    pub fn start_stream(&self, fd: RawFd) -> bool {
        let Ok(index) = usize::try_from(fd) else {
            return false;
        };
        let mut state = self.state.borrow_mut();
        if !state.ensure_buffers() {
            return false;
        }
        if index >= state.streams.len() {
            state.streams.resize_with(index + 1, || None);
        }
        // A listener of this fd number not stopped (closed behind the loop's back).
        state.forget_listener(fd);
        let serial = state.next_generation();
        state.streams[index] = Some(Box::new(Stream {
            serial,
            ..Stream::default()
        }));
        true
    }

    /// Takes the next buffer received on stream `fd`, if reading is on, and passes its
    /// bytes to `f` (for a starved stream, reads the socket itself).
    pub fn receive(&self, fd: RawFd, f: impl FnOnce(&[u8])) -> Received {
        let (taken, serial) = {
            let mut state = self.state.borrow_mut();
            let Some(stream) = stream_at(&mut state.streams, fd) else {
                return Received::Nothing;
            };
            let serial = stream.serial;
            if stream.spilled_from < stream.spilled.len() {
                let spilled = std::mem::take(&mut stream.spilled);
                let from = std::mem::take(&mut stream.spilled_from);
                let to = spilled.len().min(from + BUFFER_SIZE);
                drop(state);
                let handing = Handing {
                    backend: self,
                    fd,
                    serial,
                    id: None,
                    spilled: Some((spilled, to)),
                };
                let (spilled, _) = handing.spilled.as_ref().expect("just set");
                f(&spilled[from..to]);
                return Received::Data;
            }
            match stream.received.pop_front() {
                Some(buffer) => (buffer, serial),
                None if stream.starved && stream.ended.is_none() => {
                    drop(state);
                    return self.receive_directly(fd, serial, f);
                }
                None => {
                    return match stream.ended {
                        None => Received::Nothing,
                        Some(0) => Received::End,
                        Some(e) => Received::Failed(io::Error::from_raw_os_error(-e)),
                    }
                }
            }
        };
        let (id, len) = taken;
        let bytes: *const [u8] = {
            let mut state = self.state.borrow_mut();
            let buffers = state.buffers.as_ref().expect("streams have buffers");
            let bytes: *const [u8] = buffers.slice(id, len as usize);
            let lending = Lending {
                id,
                start: bytes as *const u8,
                len: bytes.len(),
                kept: false,
            };
            state.lending.push(lending);
            bytes
        };
        // Gives the buffer back when `f` returns or unwinds (a panicking protocol).
        let _handing = Handing {
            backend: self,
            fd,
            serial,
            id: Some(id),
            spilled: None,
        };
        // SAFETY: the buffer belongs to the loop until `_handing` gives it back (or
        // until the send that keeps it ends): it is out of the kernel's ring, and `f`
        // cannot free the backend, which its caller (a transport holding the loop) keeps
        // alive; `f` may borrow the backend's state again, so the state's borrow is
        // released while it runs.
        f(unsafe { &*bytes });
        Received::Data
    }

    /// One `recv` on starved stream `fd` (its receive ended for want of buffers, and
    /// nothing it received is left), into memory of its own; once the socket is
    /// drained, the multishot receive is armed again with the next wait.
    #[cold]
    fn receive_directly(&self, fd: RawFd, serial: u32, f: impl FnOnce(&[u8])) -> Received {
        let mut buf = vec![0u8; BUFFER_SIZE];
        // SAFETY: `fd` is a stream socket the transport owns and keeps open while it
        // asks for its bytes; the borrow lasts for this one call.
        let sock = unsafe { BorrowedFd::borrow_raw(fd) };
        let result = rustix::net::recv(sock, &mut buf[..], rustix::net::RecvFlags::DONTWAIT);
        let mut state = self.state.borrow_mut();
        let Some(stream) = stream_at(&mut state.streams, fd) else {
            return Received::Nothing;
        };
        match result {
            Ok((0, _)) => {
                stream.ended = Some(0);
                Received::End
            }
            Ok((n, _)) => {
                drop(state);
                let _handing = Handing {
                    backend: self,
                    fd,
                    serial,
                    id: None,
                    spilled: None,
                };
                f(&buf[..n]);
                Received::Data
            }
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => {
                stream.starved = false;
                state.mark_dirty(fd);
                Received::Nothing
            }
            Err(e) => {
                stream.ended = Some(-e.raw_os_error());
                Received::Failed(e.into())
            }
        }
    }

    /// Queues `data` to be sent on stream `fd` with the next wait. Returns the bytes
    /// not yet taken by the kernel, or the error that ended sending.
    pub fn send(&self, fd: RawFd, data: &[u8]) -> io::Result<usize> {
        let mut state = self.state.borrow_mut();
        let Some(stream) = stream_at(&mut state.streams, fd) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        if let Some(e) = stream.send_error {
            return Err(io::Error::from_raw_os_error(-e));
        }
        let first = stream.queued.is_empty() && stream.send_generation.is_none();
        if first && stream.lent.is_none() && state.lent_buffers < MAX_LENT {
            if let Some(lent) = state.lending.last_mut().and_then(|l| l.lend(data)) {
                let stream = stream_at(&mut state.streams, fd).expect("found above");
                stream.lent = Some(lent);
                state.lent_buffers += 1;
                state.send_queued.push(fd);
                return Ok(data.len());
            }
        }
        let stream = stream_at(&mut state.streams, fd).expect("found above");
        stream.queued.extend_from_slice(data);
        let backlog = stream.backlog();
        if first {
            state.send_queued.push(fd);
        }
        Ok(backlog)
    }

    /// The bytes accepted on stream `fd` and not yet taken by the kernel, or the error
    /// that ended sending.
    pub fn backlog(&self, fd: RawFd) -> io::Result<usize> {
        let state = self.state.borrow();
        match state.streams.get(fd as usize).and_then(|s| s.as_deref()) {
            Some(Stream {
                send_error: Some(e),
                ..
            }) => Err(io::Error::from_raw_os_error(-e)),
            Some(stream) => Ok(stream.backlog()),
            None => Ok(0),
        }
    }
}

// ---------------------------------------------------------------- listening sockets ------
//
// A listening socket handed to `Backend::start_listener` (the protocol layer's servers)
// is not polled: while it is watched for reading, one multishot accept
// (`IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT`) stays in the kernel and accepts
// each connection as it arrives, non-blocking and close-on-exec from the accept flags
// (so no `fcntl` follows). The accepted fds wait on the listener until the server takes
// them with `Backend::accept`; the listener is reported readable after every wait while
// some do. An error (out of fds: `EMFILE`) ends the multishot request and is handed to
// the server in its turn, which backs off as on readiness; the request is made again
// when the server watches the listener again. Deleting the listener (the server pausing)
// cancels its accept and keeps the connections it accepted; `Backend::stop_listener`
// (the server closing) closes them.

/// A listening socket accepted through the ring.
struct Listener {
    fd: RawFd,
    /// The generation of the multishot accept in the kernel, if one is.
    accepting: Option<u32>,
    /// Accepts cancelled and not yet ended: the connections they still accept are kept.
    cancelled: Vec<u32>,
    /// Connections accepted and not yet taken, and errors, in the order they came.
    accepted: std::collections::VecDeque<Result<OwnedFd, i32>>,
}

/// What [`Backend::accept`] found.
pub(crate) enum Accepted {
    /// No connection waiting.
    Nothing,
    /// A connection: its socket, non-blocking and close-on-exec.
    Socket(OwnedFd),
    /// Accepting failed (the multishot request ended with this error).
    Failed(io::Error),
}

impl State {
    /// Forgets listener `fd`, if there is one: its accept is cancelled (at once: it
    /// holds the listening socket open until it ends) and the connections it accepted
    /// and nobody took are closed.
    fn forget_listener(&mut self, fd: RawFd) {
        let Some(index) = self.listeners.iter().position(|l| l.fd == fd) else {
            return;
        };
        let listener = self.listeners.swap_remove(index);
        if let Some(generation) = listener.accepting {
            let cancel = opcode::AsyncCancel::new(tagged(KIND_ACCEPT, fd, generation))
                .build()
                .user_data(IGNORED);
            if self.push(&cancel).is_ok() {
                let _ = self.ring.submit();
            }
        }
    }

    fn is_listener(&self, fd: RawFd) -> bool {
        !self.listeners.is_empty() && self.listeners.iter().any(|l| l.fd == fd)
    }

    fn listener(&mut self, fd: RawFd) -> Option<&mut Listener> {
        self.listeners.iter_mut().find(|l| l.fd == fd)
    }

    /// Starts (or cancels) the multishot accept of listener `fd`.
    fn arm_accept(&mut self, fd: RawFd, accept: bool) -> io::Result<()> {
        let next = self.next_generation();
        let Some(listener) = self.listener(fd) else {
            return Ok(());
        };
        if !accept {
            if let Some(generation) = listener.accepting.take() {
                listener.cancelled.push(generation);
                let cancel = opcode::AsyncCancel::new(tagged(KIND_ACCEPT, fd, generation))
                    .build()
                    .user_data(IGNORED);
                return self.push(&cancel);
            }
            return Ok(());
        }
        if listener.accepting.is_some() {
            return Ok(());
        }
        listener.accepting = Some(next);
        let accept = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(tagged(KIND_ACCEPT, fd, next));
        self.in_kernel += 1;
        self.push(&accept)
    }

    /// A completion of a multishot accept.
    fn on_accepted(&mut self, fd: RawFd, generation: u32, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            self.in_kernel -= 1;
        }
        let listener = self.listeners.iter_mut().find(|l| {
            l.fd == fd && (l.accepting == Some(generation) || l.cancelled.contains(&generation))
        });
        let Some(listener) = listener else {
            // An accept of a listener stopped meanwhile: nobody takes the connection.
            if result >= 0 {
                // SAFETY: the kernel just installed this fd for the loop, and nothing
                // else knows it.
                drop(unsafe { OwnedFd::from_raw_fd(result) });
            }
            return;
        };
        let live = listener.accepting == Some(generation);
        if result >= 0 {
            // SAFETY: as above: a new fd, owned by nobody else.
            let sock = unsafe { OwnedFd::from_raw_fd(result) };
            listener.accepted.push_back(Ok(sock));
        } else if live && result != -libc::ECANCELED {
            listener.accepted.push_back(Err(result));
        }
        if !more {
            if live {
                listener.accepting = None;
                // Accepts again with the next wait if the listener is still watched
                // then (a server backing off from the error stops watching it first).
                self.mark_dirty(fd);
            } else {
                listener.cancelled.retain(|&g| g != generation);
            }
        }
    }

    /// Whether a watched listener holds connections (or an error) not yet taken.
    fn accepted_waiting(&self) -> bool {
        !self.listeners.is_empty()
            && self.listeners.iter().any(|l| {
                let entry = &self.fds[l.fd as usize];
                !l.accepted.is_empty() && entry.registered && entry.interest.read
            })
    }

    /// Reports every watched listener that holds connections not yet taken.
    fn report_accepted(&mut self, events: &mut Events) {
        for listener in &self.listeners {
            let entry = &self.fds[listener.fd as usize];
            if !listener.accepted.is_empty() && entry.registered && entry.interest.read {
                events
                    .list
                    .push(Ready::from_ring(listener.fd, libc::POLLIN as u32));
            }
        }
    }
}

impl Backend {
    /// Accepts connections on listening socket `fd` through the ring (a multishot
    /// accept while it is watched for reading) once it is added. Returns false where
    /// this kernel cannot (no multishot accept, Linux 5.19; told by the provided-buffer
    /// rings of the same release): the server then accepts on readiness.
    pub fn start_listener(&self, fd: RawFd) -> bool {
        if fd < 0 {
            return false;
        }
        let mut state = self.state.borrow_mut();
        if !state.ensure_buffers() {
            return false;
        }
        // A listener of this fd number not stopped (its fd closed behind the loop's
        // back) is replaced: its accept is cancelled and its connections are closed.
        state.forget_listener(fd);
        state.listeners.push(Listener {
            fd,
            accepting: None,
            cancelled: Vec::new(),
            accepted: std::collections::VecDeque::new(),
        });
        true
    }

    /// Forgets listener `fd`, before the server closes it: its accept is cancelled and
    /// the connections it accepted and nobody took are closed.
    pub fn stop_listener(&self, fd: RawFd) {
        self.state.borrow_mut().forget_listener(fd);
    }

    /// Takes the next connection (or error) accepted on listener `fd`. `fd_limit`: the
    /// process's fd limit now. The kernel checks an accept against the limit of the
    /// time the request was made, so after the limit was lowered a connection may come
    /// with an fd at or above it: that one is left waiting and `EMFILE` returned, as
    /// `accept4` would answer now.
    pub fn accept(&self, fd: RawFd, fd_limit: u64) -> Accepted {
        let mut state = self.state.borrow_mut();
        let Some(listener) = state.listener(fd) else {
            return Accepted::Nothing;
        };
        if let Some(Ok(sock)) = listener.accepted.front() {
            if u64::try_from(sock.as_raw_fd()).map_or(true, |n| n >= fd_limit) {
                return Accepted::Failed(io::Error::from_raw_os_error(libc::EMFILE));
            }
        }
        match listener.accepted.pop_front() {
            None => Accepted::Nothing,
            Some(Ok(sock)) => Accepted::Socket(sock),
            Some(Err(e)) => Accepted::Failed(io::Error::from_raw_os_error(-e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    /// A hand-out that ends after the protocol deleted its stream and the fd number went
    /// to a new stream (all inside the protocol's call) leaves the new stream alone: the
    /// old stream's spilled bytes not handed out yet go with the old stream.
    #[test]
    fn a_hand_out_ending_after_its_fd_number_was_reused_leaves_the_new_stream_alone() {
        let Ok(backend) = Backend::new() else {
            eprintln!("io_uring is refused here: this test is skipped");
            return;
        };
        let (old, _old_peer) = UnixStream::pair().unwrap();
        let mut old = OwnedFd::from(old);
        let fd = old.as_raw_fd();
        if !backend.start_stream(fd) {
            eprintln!("no provided-buffer rings in this kernel: this test is skipped");
            return;
        }
        // Three buffers' worth spilled (received while reading was paused): handed out
        // one buffer's worth at a time.
        stream_at(&mut backend.state.borrow_mut().streams, fd)
            .unwrap()
            .spilled = vec![7; 3 * BUFFER_SIZE];
        let (new, _new_peer) = UnixStream::pair().unwrap();
        let mut handed = 0;
        let received = backend.receive(fd, |data| {
            handed = data.len();
            backend.delete(fd).unwrap();
            // The fd number now names another socket, served as a new stream.
            rustix::io::dup2(&new, &mut old).unwrap();
            assert!(backend.start_stream(fd));
        });
        assert!(matches!(received, Received::Data));
        assert_eq!(handed, BUFFER_SIZE);
        let mut state = backend.state.borrow_mut();
        let stream = stream_at(&mut state.streams, fd).expect("the new stream");
        assert!(
            stream.spilled.is_empty(),
            "the old stream's {} spilled bytes not handed out went to the new stream",
            stream.spilled.len() - stream.spilled_from
        );
        drop(state);
        backend.delete(fd).unwrap();
    }
}
