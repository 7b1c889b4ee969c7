//! The load generator of `oxloop soak`, run as a child process (`oxloop soak-load`,
//! hidden). It is written with tokio, not oxloop, so that a fault it finds is the
//! server's. Every echoed byte is compared with what was sent: message content is a
//! function of the message's seed and the byte's position ([`content_byte`]), so
//! neither side keeps a copy of what it sent.
//!
//! In `soak` mode, `--connections` workers each run sessions (one connection each, a
//! random [`Behaviour`]) until at least `--messages` are verified and
//! `--duration-ms` is over, or `--max-duration-ms` is. A worker's first session is
//! a normal one that goes on until every worker has tried its first connection, so
//! that all are open at once; a worker whose session ends with its connection still
//! alive (and nothing pending on it) keeps it open until its next session's
//! connection is made. In
//! `emfile` mode it keeps a few connections pinging, prints `ready`, waits for a
//! `flood` line on standard input, then opens `--flood` new connections (which wait in
//! the server's backlog while the server has no fd to accept them) and waits for each
//! one's echo. It ends by printing one `result {JSON}` line ([`LoadResult`]).

use super::Target;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// The largest message: sizes are log-uniform from 1 B to this.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// The first bytes of a message that asks the server to panic (protocol and async
/// targets; HTTP uses the path `/panic`).
pub const PANIC_MAGIC: &[u8; 8] = b"OXPANIC!";
/// How long one message (or a connect) may take before the client gives up on it,
/// unless `--message-timeout-ms` says otherwise.
const MESSAGE_TIMEOUT_MS: u64 = 120_000;
/// New connections per second, at most, in soak mode. 10,000 at once would leave
/// the last ones waiting on this one thread longer than the server's idle timeout
/// before they send their first byte; and a loop busy with 10,000 connections
/// accepts fewer per second than that (128 per wake-up of the listener), so the
/// kernel's accept queue overflows and connections are dropped before the server
/// sees them (`ListenOverflows` in /proc/net/netstat, reported by the run).
const CONNECT_RATE: u32 = 1_000;
/// Piece size for writing and reading.
const PIECE: usize = 16 * 1024;

/// What the load generator does.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Random sessions at scale.
    Soak,
    /// A few pinging connections, then a flood of new ones on the parent's cue.
    Emfile,
}

/// Options of `oxloop soak-load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Which server runs at `--addr`.
    #[arg(long, value_enum)]
    pub target: Target,
    /// The server's address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// What to do.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Concurrent connections (workers); in emfile mode, the pinging connections.
    #[arg(long)]
    pub connections: usize,
    /// Messages to verify at least (soak mode): no new session starts once this many
    /// are verified and `--duration-ms` is over.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// The least time the load runs, milliseconds (soak mode).
    #[arg(long, default_value_t = 0)]
    pub duration_ms: u64,
    /// The most time the load runs, milliseconds (soak mode): no new session starts
    /// after it, whatever was verified (0: `--duration-ms`).
    #[arg(long, default_value_t = 0)]
    pub max_duration_ms: u64,
    /// Seed of every random choice and of the message content.
    #[arg(long)]
    pub seed: u64,
    /// The server's idle and stall timeout, in milliseconds: how long a session that
    /// expects to be cut waits (six times this, plus 30 s) before calling it a failure.
    #[arg(long)]
    pub server_timeout_ms: u64,
    /// How long one message (or a connect) may take before the client gives up on it,
    /// in milliseconds.
    #[arg(long, default_value_t = MESSAGE_TIMEOUT_MS)]
    pub message_timeout_ms: u64,
    /// New connections opened on the `flood` cue (emfile mode).
    #[arg(long, default_value_t = 0)]
    pub flood: usize,
}

/// What a client session does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Messages, each written while its echo is read, then a close.
    Normal,
    /// Messages; the write side is shut after the last one, whose echo must still
    /// arrive, followed by the server's end of stream.
    HalfClose,
    /// Messages, then part of one more and a reset (`SO_LINGER` 0) mid-write.
    Reset,
    /// Writes without ever reading, with a small receive buffer: the server must cut
    /// it after its stall timeout.
    StopReading,
    /// Connects and never sends: the server must cut it after its idle timeout.
    Idle,
    /// One small message sent a few bytes at a time with pauses.
    Trickle,
    /// A message that makes the server's protocol (task, handler) panic: the echo
    /// (for HTTP a 500) must still arrive and the server go on.
    Panic,
}

/// Relative weights of the behaviours.
const WEIGHTS: [(Behaviour, u32); 7] = [
    (Behaviour::Normal, 55),
    (Behaviour::HalfClose, 10),
    (Behaviour::Reset, 10),
    (Behaviour::StopReading, 3),
    (Behaviour::Idle, 5),
    (Behaviour::Trickle, 7),
    (Behaviour::Panic, 5),
];

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every message echoed and verified, then closed by the client.
    Completed,
    /// Every message echoed after the half-close, then the server's end of stream.
    HalfClosedThenEof,
    /// The client reset the connection mid-write, as planned.
    ResetByClient,
    /// The server cut a client that stopped reading (its writes failed).
    CutWhileNotReading,
    /// The server cut a client that never sent (end of stream or reset).
    CutWhileIdle,
    /// The server panicked on the message and still echoed it (HTTP: answered 500).
    SurvivedPanic,
    /// Python: the protocol raised on the message and asyncio closed the connection,
    /// as it does for an exception in `data_received`; what was echoed before was
    /// verified.
    ClosedAfterPanic,
    /// Connecting failed.
    ConnectFailed,
    /// Echoed bytes differed from the bytes sent.
    VerificationError,
    /// The server ended the stream early.
    UnexpectedEof,
    /// An I/O error on a session that expected none.
    IoError,
    /// HTTP: an unexpected status.
    WrongStatus,
    /// The server did not answer (or cut) in time.
    TimedOut,
}

impl Outcome {
    /// The outcome a session of `behaviour` must end with on `target`.
    pub fn expected_for(behaviour: Behaviour, target: Target) -> Outcome {
        match behaviour {
            Behaviour::Panic if target == Target::Python => Outcome::ClosedAfterPanic,
            Behaviour::Normal | Behaviour::Trickle => Outcome::Completed,
            Behaviour::Reset => Outcome::ResetByClient,
            Behaviour::HalfClose => Outcome::HalfClosedThenEof,
            Behaviour::StopReading => Outcome::CutWhileNotReading,
            Behaviour::Idle => Outcome::CutWhileIdle,
            Behaviour::Panic => Outcome::SurvivedPanic,
        }
    }
}

/// What the load generator reports.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Sessions by behaviour, then by outcome.
    pub sessions: BTreeMap<Behaviour, BTreeMap<Outcome, u64>>,
    /// Sessions whose outcome was not the one their behaviour expects.
    pub unexpected_outcomes: u64,
    /// Echoed bytes that differed from those sent.
    pub verification_errors: u64,
    /// Connections established.
    pub connections_made: u64,
    /// The most connections open at once.
    pub peak_connections: u64,
    /// Seconds from the start until the most connections were first open at once.
    pub peak_reached_s: f64,
    /// What ended the load (soak mode): `messages` (its messages were verified and
    /// its least time was over) or `time cap` (its most time was over first).
    pub stopped_by: String,
    /// Messages echoed and verified.
    pub messages: u64,
    /// Bytes echoed and verified.
    pub bytes_verified: u64,
    /// HTTP: requests sent again on a new connection because the server closed a
    /// kept-alive one before answering.
    pub keep_alive_retries: u64,
    /// Emfile mode: messages echoed on the pinging connections.
    pub pings: u64,
    /// Emfile mode: flood connections whose message was echoed.
    pub flood_echoed: u64,
    /// The first few failures, described.
    pub first_failures: Vec<String>,
    /// The file-descriptor limit the load generator got.
    pub fd_limit: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
}

/// The content byte at `pos` of the message with `seed`: random-looking, computed
/// anywhere without a copy of the message. A panic message starts with
/// [`PANIC_MAGIC`].
pub fn content_byte(seed: u64, pos: usize, magic: bool) -> u8 {
    if magic && pos < PANIC_MAGIC.len() {
        return PANIC_MAGIC[pos];
    }
    let word = splitmix64(seed ^ ((pos as u64 >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    (word >> ((pos & 7) * 8)) as u8
}

/// Fills `out` with the content at positions `start..`: one splitmix64 per 8 bytes.
fn fill(seed: u64, start: usize, magic: bool, out: &mut [u8]) {
    let mut i = 0;
    while i < out.len() {
        let pos = start + i;
        let word = splitmix64(seed ^ ((pos as u64 >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .to_le_bytes();
        let offset = pos & 7;
        let n = (8 - offset).min(out.len() - i);
        out[i..i + n].copy_from_slice(&word[offset..offset + n]);
        i += n;
    }
    let magic_end = (start + out.len()).min(PANIC_MAGIC.len());
    if magic && start < magic_end {
        out[..magic_end - start].copy_from_slice(&PANIC_MAGIC[start..magic_end]);
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A message: its content seed, its length, and whether it asks for a panic.
#[derive(Clone, Copy, Debug)]
struct Message {
    seed: u64,
    len: usize,
    magic: bool,
}

/// How far one message got: bytes written to the socket and bytes of its echo read
/// and verified.
#[derive(Debug, Default, Clone)]
struct Progress {
    len: usize,
    sent: Cell<usize>,
    echoed: Cell<usize>,
}

/// Why a message failed.
#[derive(Debug)]
enum Failure {
    Mismatch(usize),
    Eof,
    Io(io::Error),
    Status(u16),
    /// The message's (or the wait's) time ran out; what had been sent and echoed of
    /// the message by then, when it was one.
    TimedOut(Option<Progress>),
    /// HTTP: the server closed a kept-alive connection before any byte of the
    /// response (its idle timeout); a client may send the request again on a new one.
    ClosedBeforeResponse,
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Mismatch(_) => Outcome::VerificationError,
            Failure::Eof => Outcome::UnexpectedEof,
            Failure::Io(_) => Outcome::IoError,
            Failure::Status(_) => Outcome::WrongStatus,
            Failure::TimedOut(_) => Outcome::TimedOut,
            Failure::ClosedBeforeResponse => Outcome::UnexpectedEof,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Mismatch(at) => write!(f, "echoed byte {at} differs from the byte sent"),
            Failure::Eof => write!(f, "the server ended the stream early"),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Status(s) => write!(f, "HTTP status {s}"),
            Failure::TimedOut(None) => write!(f, "timed out"),
            Failure::TimedOut(Some(p)) => write!(
                f,
                "timed out with {} of the message's {} B sent and {} echoed",
                p.sent.get(),
                p.len,
                p.echoed.get()
            ),
            Failure::ClosedBeforeResponse => {
                write!(
                    f,
                    "the server closed the connection before answering, twice"
                )
            }
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// How a message is written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Writing {
    /// All at once, in pieces.
    Whole,
    /// 1–16 bytes at a time with 5–40 ms pauses.
    Trickle,
    /// Only the first `n` bytes; the echo is not read.
    Partial(usize),
}

/// One connection, split so that writing and reading run at once.
struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

/// State shared by the sessions of one run (all on one thread).
struct Shared {
    args: LoadArgs,
    start: Instant,
    deadline: Instant,
    cap: Instant,
    open: Cell<u64>,
    /// Workers that have tried their first connection.
    first_connects: Cell<usize>,
    result: RefCell<LoadResult>,
    http_path_seq: Cell<u64>,
    next_connect: Cell<Instant>,
}

impl Shared {
    /// The state of a run starting now.
    fn new(args: LoadArgs, fd_limit: u64) -> Rc<Shared> {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(args.duration_ms);
        Rc::new(Shared {
            deadline,
            cap: deadline.max(start + Duration::from_millis(args.max_duration_ms)),
            first_connects: Cell::new(0),
            args,
            start,
            open: Cell::new(0),
            result: RefCell::new(LoadResult {
                fd_limit,
                ..LoadResult::default()
            }),
            http_path_seq: Cell::new(0),
            next_connect: Cell::new(start),
        })
    }

    /// Whether some worker has yet to try its first connection (and the most time
    /// is not over).
    fn ramping(&self) -> bool {
        self.first_connects.get() < self.args.connections && Instant::now() < self.cap
    }

    /// Whether no new session may start: the messages are verified and the least
    /// time is over, or the most time is over.
    fn over(&self) -> bool {
        let now = Instant::now();
        now >= self.cap
            || (now >= self.deadline && self.result.borrow().messages >= self.args.messages)
    }

    fn record(&self, behaviour: Behaviour, outcome: Outcome, failure: Option<&Failure>) {
        self.record_session(behaviour, outcome, failure, None);
    }

    /// Records a session's outcome; its connection (when there was one) goes into the
    /// failure description.
    fn record_session(
        &self,
        behaviour: Behaviour,
        outcome: Outcome,
        failure: Option<&Failure>,
        connection: Option<&SessionConnection>,
    ) {
        let mut r = self.result.borrow_mut();
        *r.sessions
            .entry(behaviour)
            .or_default()
            .entry(outcome)
            .or_default() += 1;
        if outcome != Outcome::expected_for(behaviour, self.args.target) {
            r.unexpected_outcomes += 1;
            if r.first_failures.len() < 10 {
                r.first_failures.push(format!(
                    "{behaviour:?} session ended {outcome:?} at {:.1} s{}{}",
                    self.start.elapsed().as_secs_f64(),
                    connection
                        .map(|c| c.describe(self.start))
                        .unwrap_or_default(),
                    failure.map(|f| format!(": {f}")).unwrap_or_default()
                ));
            }
        }
        if outcome == Outcome::VerificationError {
            r.verification_errors += 1;
        }
    }

    fn verified(&self, bytes: usize) {
        let mut r = self.result.borrow_mut();
        r.messages += 1;
        r.bytes_verified += bytes as u64;
    }

    /// How long one message (or a connect) may take.
    fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.args.message_timeout_ms)
    }

    /// How long a session that expects the server to cut it waits.
    fn cut_wait(&self) -> Duration {
        Duration::from_millis(self.args.server_timeout_ms * 6) + Duration::from_secs(30)
    }
}

/// A session's connection, as its failure describes it.
struct SessionConnection {
    /// When the connection was made (after the wait for its paced slot).
    made: Instant,
    /// The client's port, to find the connection in `ss` or a capture.
    local_port: Option<u16>,
    /// Whether it was the worker's first session.
    first: bool,
}

impl SessionConnection {
    fn describe(&self, start: Instant) -> String {
        format!(
            " ({}connected at {:.1} s{})",
            if self.first {
                "the worker's first session, "
            } else {
                ""
            },
            self.made.duration_since(start).as_secs_f64(),
            self.local_port
                .map(|p| format!(" from port {p}"))
                .unwrap_or_default()
        )
    }
}

/// Counts an open connection while it lives.
struct OpenGuard(Rc<Shared>);

impl OpenGuard {
    fn new(shared: &Rc<Shared>) -> OpenGuard {
        let open = shared.open.get() + 1;
        shared.open.set(open);
        let mut r = shared.result.borrow_mut();
        r.connections_made += 1;
        if open > r.peak_connections {
            r.peak_connections = open;
            r.peak_reached_s = shared.start.elapsed().as_secs_f64();
        }
        OpenGuard(shared.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// Runs the load generator: `oxloop soak-load`.
pub fn run(args: LoadArgs) -> io::Result<()> {
    let fd_limit = super::raise_fd_limit()?.0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shared = Shared::new(args, fd_limit);
    let start = shared.start;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        match shared.args.mode {
            Mode::Soak => soak(&shared).await,
            Mode::Emfile => emfile(&shared).await,
        }
    })?;
    let mut result = shared.result.borrow().clone();
    result.elapsed_s = start.elapsed().as_secs_f64();
    if shared.args.mode == Mode::Soak {
        result.stopped_by = if result.messages >= shared.args.messages {
            "messages"
        } else {
            "time cap"
        }
        .to_string();
    }
    println!(
        "result {}",
        serde_json::to_string(&result).map_err(io::Error::other)?
    );
    Ok(())
}

async fn soak(shared: &Rc<Shared>) -> io::Result<()> {
    let workers = shared.args.connections.max(1);
    // About four sessions per worker over the whole budget, and at least four
    // messages per session on average: short runs then reach their messages soon,
    // not after many one-message sessions.
    let per_session = (shared.args.messages / (workers as u64 * 4)).clamp(4, 50);
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let shared = shared.clone();
        handles.push(tokio::task::spawn_local(async move {
            let mut rng = fastrand::Rng::with_seed(shared.args.seed ^ splitmix64(w as u64 + 1));
            let mut session = 0u64;
            let mut held = None;
            while !shared.over() {
                let first = session == 0;
                let behaviour = if first {
                    Behaviour::Normal
                } else {
                    pick(&mut rng)
                };
                let seed = splitmix64(shared.args.seed ^ ((w as u64) << 32) ^ session);
                session += 1;
                held =
                    run_session(&shared, first, behaviour, seed, per_session, &mut rng, held).await;
            }
            drop(held);
        }));
    }
    for h in handles {
        h.await.map_err(io::Error::other)?;
    }
    Ok(())
}

fn pick(rng: &mut fastrand::Rng) -> Behaviour {
    let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut n = rng.u32(0..total);
    for (b, w) in WEIGHTS {
        if n < w {
            return b;
        }
        n -= w;
    }
    Behaviour::Normal
}

/// A log-uniform size from 1 B to [`MAX_MESSAGE`].
fn message_size(rng: &mut fastrand::Rng) -> usize {
    let ln_max = (MAX_MESSAGE as f64).ln();
    ((rng.f64() * ln_max).exp() as usize).clamp(1, MAX_MESSAGE)
}

async fn connect(shared: &Shared, small_receive_buffer: bool) -> io::Result<Conn> {
    if shared.args.mode == Mode::Soak {
        // New connections are paced (CONNECT_RATE), not opened all at once; see there.
        let now = Instant::now();
        let slot = shared.next_connect.get().max(now);
        shared
            .next_connect
            .set(slot + Duration::from_secs(1) / CONNECT_RATE);
        tokio::time::sleep_until(slot.into()).await;
    }
    let addr = shared.args.addr;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if small_receive_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    let stream: TcpStream = tokio::time::timeout(shared.message_timeout(), socket.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    Ok(Conn {
        rd: BufReader::with_capacity(PIECE, rd),
        wr,
    })
}

/// A connection a worker keeps open after its session, until the next session's
/// connection is made.
type Held = Option<(Conn, OpenGuard)>;

/// One session on a new connection. `held` (the previous session's connection, still
/// alive) is closed once the new one is made; the new one is returned when the
/// session leaves it alive with nothing pending (its messages echoed and verified).
/// A worker's `first` session (a normal one) goes on until every worker has tried
/// its first connection: those that succeeded are then all open at once.
async fn run_session(
    shared: &Rc<Shared>,
    first: bool,
    behaviour: Behaviour,
    seed: u64,
    per_session: u64,
    rng: &mut fastrand::Rng,
    held: Held,
) -> Held {
    let connected = connect(shared, behaviour == Behaviour::StopReading).await;
    if first {
        shared.first_connects.set(shared.first_connects.get() + 1);
    }
    drop(held);
    let mut conn = match connected {
        Ok(c) => c,
        Err(e) => {
            shared.record(behaviour, Outcome::ConnectFailed, Some(&Failure::Io(e)));
            return None;
        }
    };
    let connection = SessionConnection {
        made: Instant::now(),
        local_port: conn.wr.local_addr().ok().map(|a| a.port()),
        first,
    };
    let open = OpenGuard::new(shared);
    let outcome = match behaviour {
        Behaviour::Idle => wait_for_cut(shared, &mut conn, Outcome::CutWhileIdle).await,
        Behaviour::StopReading => stop_reading(shared, &mut conn, seed).await,
        _ => talk(shared, first, &mut conn, behaviour, seed, per_session, rng).await,
    };
    match outcome {
        Ok(o) => {
            shared.record(behaviour, o, None);
            let alive = matches!(o, Outcome::Completed | Outcome::SurvivedPanic);
            alive.then_some((conn, open))
        }
        Err(f) => {
            shared.record_session(behaviour, f.outcome(), Some(&f), Some(&connection));
            None
        }
    }
}

/// The sessions that exchange messages: normal, half-close, reset, trickle, panic.
/// A worker's `first` session (normal) goes on while the first connections ramp up.
async fn talk(
    shared: &Rc<Shared>,
    first: bool,
    conn: &mut Conn,
    behaviour: Behaviour,
    seed: u64,
    per_session: u64,
    rng: &mut fastrand::Rng,
) -> Result<Outcome, Failure> {
    if behaviour == Behaviour::Panic && shared.args.target == Target::Python {
        let msg = Message {
            seed: splitmix64(seed),
            len: rng.usize(PANIC_MAGIC.len()..=64 * 1024),
            magic: true,
        };
        return closed_after_panic(shared, conn, msg).await;
    }
    let mut count = match behaviour {
        Behaviour::Trickle | Behaviour::Panic => 1,
        _ => rng.u64(1..=per_session * 2 - 1),
    };
    let mut i = 0;
    loop {
        // A worker's first session goes on until every worker has its first
        // connection, so that all are open at once; then for a random number of
        // messages more, so that the first sessions do not all end (and reconnect)
        // together.
        if first && shared.ramping() {
            count = i + 1 + rng.u64(1..=per_session * 2 - 1);
        }
        let last = i + 1 >= count;
        let msg = Message {
            seed: splitmix64(seed ^ i),
            len: match behaviour {
                Behaviour::Trickle => rng.usize(1..=2048),
                Behaviour::Panic => rng.usize(PANIC_MAGIC.len()..=64 * 1024),
                _ => message_size(rng),
            },
            magic: behaviour == Behaviour::Panic,
        };
        let writing = match behaviour {
            Behaviour::Trickle => Writing::Trickle,
            Behaviour::Reset if last => {
                let len = msg.len.max(2);
                let msg = Message { len, ..msg };
                let part = rng.usize(1..len);
                match exchange(shared, conn, msg, Writing::Partial(part), false).await {
                    // HTTP: the server closed the kept-alive connection first; the
                    // reset it was to get has no connection left to hit.
                    Ok(()) | Err(Failure::ClosedBeforeResponse) => {}
                    Err(e) => return Err(e),
                }
                // SO_LINGER 0: the close sends a reset, not a FIN.
                socket2::SockRef::from(conn.wr.as_ref()).set_linger(Some(Duration::ZERO))?;
                return Ok(Outcome::ResetByClient);
            }
            _ => Writing::Whole,
        };
        let half_close = behaviour == Behaviour::HalfClose && last;
        match exchange(shared, conn, msg, writing, half_close).await {
            // An HTTP client sends the request again on a new connection when the
            // server closed a kept-alive one before answering (RFC 9112, 9.3.1).
            Err(Failure::ClosedBeforeResponse) if i > 0 => {
                *conn = connect(shared, false).await?;
                {
                    let mut r = shared.result.borrow_mut();
                    r.connections_made += 1;
                    r.keep_alive_retries += 1;
                }
                exchange(shared, conn, msg, writing, half_close).await?;
            }
            other => other?,
        }
        shared.verified(msg.len);
        if last {
            break;
        }
        i += 1;
    }
    match behaviour {
        Behaviour::HalfClose => {
            expect_eof(shared, conn).await?;
            Ok(Outcome::HalfClosedThenEof)
        }
        Behaviour::Panic => Ok(Outcome::SurvivedPanic),
        _ => Ok(Outcome::Completed),
    }
}

/// Writes a panic message and verifies what comes back until the server closes.
async fn closed_after_panic(
    shared: &Shared,
    conn: &mut Conn,
    msg: Message,
) -> Result<Outcome, Failure> {
    let wr = &mut conn.wr;
    let write = async move {
        // The server may close before taking it all.
        let _ = write_message(wr, &[], msg, Writing::Whole, &Cell::new(0)).await;
    };
    let rd = &mut conn.rd;
    let read = async move {
        let mut buf = vec![0u8; PIECE];
        let mut pos = 0;
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            for (i, b) in buf[..n].iter().enumerate() {
                if pos + i >= msg.len || *b != content_byte(msg.seed, pos + i, msg.magic) {
                    return Err(Failure::Mismatch(pos + i));
                }
            }
            pos += n;
        }
    };
    let both = async { tokio::join!(write, read).1 };
    match tokio::time::timeout(shared.message_timeout(), both).await {
        Err(_) => Err(Failure::TimedOut(None)),
        Ok(r) => r.map(|()| Outcome::ClosedAfterPanic),
    }
}

/// After a half-close: nothing more may arrive, then the end of stream.
async fn expect_eof(shared: &Shared, conn: &mut Conn) -> Result<(), Failure> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(shared.message_timeout(), conn.rd.read(&mut byte)).await {
        Err(_) => Err(Failure::TimedOut(None)),
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(_)) => Err(Failure::Mismatch(0)),
        Ok(Err(e)) => Err(Failure::Io(e)),
    }
}

/// One message: written (whole, trickled or in part) while its echo is read and
/// verified (unless written in part).
async fn exchange(
    shared: &Shared,
    conn: &mut Conn,
    msg: Message,
    writing: Writing,
    half_close: bool,
) -> Result<(), Failure> {
    let target = shared.args.target;
    let http_path = if msg.magic { "/panic" } else { "/echo" };
    let head = match target {
        Target::Http => {
            shared.http_path_seq.set(shared.http_path_seq.get() + 1);
            format!(
                "POST {http_path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {}\r\n\r\n",
                msg.len
            )
            .into_bytes()
        }
        _ => Vec::new(),
    };
    let progress = Progress {
        len: msg.len,
        ..Progress::default()
    };
    let (sent, echoed) = (&progress.sent, &progress.echoed);
    let wr = &mut conn.wr;
    let write = async move {
        write_message(wr, &head, msg, writing, sent).await?;
        if half_close {
            wr.shutdown().await?;
        }
        Ok::<(), Failure>(())
    };
    let rd = &mut conn.rd;
    let answered = Cell::new(false);
    let answered_ref = &answered;
    let read = async move {
        match (writing, target) {
            // oxloop-http answers only once the whole body is in.
            (Writing::Partial(_), Target::Http) => Ok(()),
            // The echo of a part is read too: a client writing a large part without
            // reading can fill the buffers both ways and wait on its write while the
            // server waits on its echo, until the server cuts it as stalled.
            (Writing::Partial(n), _) => read_verify(rd, Message { len: n, ..msg }, echoed).await,
            (_, Target::Http) => read_http_response(rd, msg, answered_ref, echoed).await,
            _ => read_verify(rd, msg, echoed).await,
        }
    };
    let both = async { tokio::try_join!(write, read) };
    match tokio::time::timeout(shared.message_timeout(), both).await {
        Err(_) => Err(Failure::TimedOut(Some(progress))),
        Ok(Err(Failure::Eof | Failure::Io(_))) if target == Target::Http && !answered.get() => {
            Err(Failure::ClosedBeforeResponse)
        }
        Ok(r) => r.map(|_| ()),
    }
}

async fn write_message(
    wr: &mut OwnedWriteHalf,
    head: &[u8],
    msg: Message,
    writing: Writing,
    sent: &Cell<usize>,
) -> Result<(), Failure> {
    let end = match writing {
        Writing::Partial(n) => n,
        _ => msg.len,
    };
    let mut buf = vec![0u8; PIECE.min(head.len() + end)];
    if writing == Writing::Trickle {
        // An HTTP head goes at once: the trickle tests the body's timeout, which is
        // the longest pause between reads (the head's runs from its first byte).
        wr.write_all(head).await?;
        let mut rng = fastrand::Rng::with_seed(msg.seed);
        let mut pos = 0;
        while pos < end {
            let n = rng.usize(1..=16).min(end - pos);
            fill(msg.seed, pos, msg.magic, &mut buf[..n]);
            wr.write_all(&buf[..n]).await?;
            pos += n;
            sent.set(pos);
            tokio::time::sleep(Duration::from_millis(rng.u64(5..=40))).await;
        }
        return Ok(());
    }
    wr.write_all(head).await?;
    let mut pos = 0;
    while pos < end {
        let n = PIECE.min(end - pos);
        fill(msg.seed, pos, msg.magic, &mut buf[..n]);
        wr.write_all(&buf[..n]).await?;
        pos += n;
        sent.set(pos);
    }
    Ok(())
}

/// Reads `msg.len` bytes and compares each with what was sent; `echoed` follows how
/// many were read and verified.
async fn read_verify(
    rd: &mut BufReader<OwnedReadHalf>,
    msg: Message,
    echoed: &Cell<usize>,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; PIECE.min(msg.len)];
    let mut expected = vec![0u8; buf.len()];
    let mut pos = 0;
    while pos < msg.len {
        let want = buf.len().min(msg.len - pos);
        let n = rd.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(Failure::Eof);
        }
        fill(msg.seed, pos, msg.magic, &mut expected[..n]);
        if buf[..n] != expected[..n] {
            let at = (0..n).find(|&i| buf[i] != expected[i]).unwrap_or(0);
            return Err(Failure::Mismatch(pos + at));
        }
        pos += n;
        echoed.set(pos);
    }
    Ok(())
}

/// Reads one HTTP response: for `/echo` a 200 whose body is the message, for
/// `/panic` a 500.
async fn read_http_response(
    rd: &mut BufReader<OwnedReadHalf>,
    msg: Message,
    answered: &Cell<bool>,
    echoed: &Cell<usize>,
) -> Result<(), Failure> {
    let mut line = String::new();
    if rd.read_line(&mut line).await? == 0 {
        return Err(Failure::Eof);
    }
    answered.set(true);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(Failure::Status(0))?;
    let mut length = None;
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return Err(Failure::Eof);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let expected = if msg.magic { 500 } else { 200 };
    if status != expected {
        return Err(Failure::Status(status));
    }
    let length = length.ok_or(Failure::Status(status))?;
    if msg.magic {
        let mut rest = vec![0u8; length];
        rd.read_exact(&mut rest).await.map_err(|_| Failure::Eof)?;
        return Ok(());
    }
    if length != msg.len {
        return Err(Failure::Mismatch(length.min(msg.len)));
    }
    read_verify(rd, msg, echoed).await
}

/// Waits for the server to end the connection (end of stream or an error).
async fn wait_for_cut(shared: &Shared, conn: &mut Conn, cut: Outcome) -> Result<Outcome, Failure> {
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match conn.rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(shared.cut_wait(), wait)
        .await
        .map_err(|_| Failure::TimedOut(None))?;
    Ok(cut)
}

/// Writes without reading until the server cuts the connection.
async fn stop_reading(shared: &Shared, conn: &mut Conn, seed: u64) -> Result<Outcome, Failure> {
    let target = shared.args.target;
    let writing = async {
        let mut pos = 0usize;
        let mut piece = vec![0u8; PIECE];
        loop {
            let data: Vec<u8> = match target {
                Target::Http => {
                    let mut req = format!(
                        "POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: {PIECE}\r\n\r\n"
                    )
                    .into_bytes();
                    fill(seed, pos, false, &mut piece);
                    req.extend_from_slice(&piece);
                    req
                }
                _ => {
                    fill(seed, pos, false, &mut piece);
                    piece.clone()
                }
            };
            pos += PIECE;
            if conn.wr.write_all(&data).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(shared.cut_wait(), writing)
        .await
        .map_err(|_| Failure::TimedOut(None))?;
    Ok(Outcome::CutWhileNotReading)
}

async fn emfile(shared: &Rc<Shared>) -> io::Result<()> {
    let stop = Rc::new(Cell::new(false));
    let mut pingers = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..shared.args.connections {
        conns.push(connect(shared, false).await?);
    }
    for (i, mut conn) in conns.into_iter().enumerate() {
        let shared = shared.clone();
        let stop = stop.clone();
        pingers.push(tokio::task::spawn_local(async move {
            let _open = OpenGuard::new(&shared);
            let mut rng = fastrand::Rng::with_seed(shared.args.seed ^ i as u64);
            let mut n = 0u64;
            while !stop.get() {
                let msg = Message {
                    seed: splitmix64(shared.args.seed ^ ((i as u64) << 32) ^ n),
                    len: rng.usize(1..=4096),
                    magic: false,
                };
                n += 1;
                if let Err(f) = exchange(&shared, &mut conn, msg, Writing::Whole, false).await {
                    shared.record(Behaviour::Normal, f.outcome(), Some(&f));
                    return;
                }
                shared.result.borrow_mut().pings += 1;
                tokio::time::sleep(Duration::from_millis(rng.u64(1..=20))).await;
            }
            shared.record(Behaviour::Normal, Outcome::Completed, None);
        }));
    }
    // Ready once every pinging connection has had an echo, so the server has
    // accepted them all before it runs out of fds.
    let all = shared.args.connections as u64;
    while shared.result.borrow().pings < all && !pingers.iter().all(|p| p.is_finished()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("ready");
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    stdin.read_line(&mut line).await?;
    if line.trim() != "flood" {
        return Err(io::Error::other(format!("expected `flood`, got {line:?}")));
    }
    let mut flood = Vec::new();
    for i in 0..shared.args.flood {
        let shared = shared.clone();
        flood.push(tokio::task::spawn_local(async move {
            let mut conn = match connect(&shared, false).await {
                Ok(c) => c,
                Err(e) => {
                    shared.record(
                        Behaviour::Normal,
                        Outcome::ConnectFailed,
                        Some(&Failure::Io(e)),
                    );
                    return;
                }
            };
            let _open = OpenGuard::new(&shared);
            let msg = Message {
                seed: splitmix64(shared.args.seed ^ 0xf100d ^ i as u64),
                len: 1 + i % 4096,
                magic: false,
            };
            match exchange(&shared, &mut conn, msg, Writing::Whole, false).await {
                Ok(()) => {
                    shared.result.borrow_mut().flood_echoed += 1;
                    shared.verified(msg.len);
                    shared.record(Behaviour::Normal, Outcome::Completed, None);
                }
                Err(f) => shared.record(Behaviour::Normal, f.outcome(), Some(&f)),
            }
        }));
    }
    for f in flood {
        f.await.map_err(io::Error::other)?;
    }
    stop.set(true);
    for p in pingers {
        p.await.map_err(io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_a_function_of_seed_and_position() {
        let mut a = vec![0u8; 100];
        fill(7, 0, false, &mut a);
        let mut b = vec![0u8; 60];
        fill(7, 40, false, &mut b);
        assert_eq!(&a[40..], &b[..]);
        for (i, byte) in a.iter().enumerate() {
            assert_eq!(*byte, content_byte(7, i, false));
        }
        let mut c = vec![0u8; 100];
        fill(8, 0, false, &mut c);
        assert_ne!(a, c);
        let mut m = vec![0u8; 12];
        fill(7, 0, true, &mut m);
        assert_eq!(&m[..8], PANIC_MAGIC);
        assert_eq!(&m[8..], &a[8..12]);
        let mut tail = vec![0u8; 6];
        fill(7, 5, true, &mut tail);
        assert_eq!(&tail[..3], &PANIC_MAGIC[5..]);
        assert_eq!(&tail[3..], &a[8..11]);
    }

    /// A trickled message whose echo stops part-way times out saying how much was sent
    /// and how much came back, so a failure tells a server that stopped echoing from a
    /// client that stopped sending.
    #[test]
    fn a_timed_out_message_says_how_far_it_got() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Echoes the first 10 bytes, then reads nothing more until the client is gone.
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut sock, _) = listener.accept().unwrap();
            let mut first = [0u8; 10];
            sock.read_exact(&mut first).unwrap();
            sock.write_all(&first).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
        });
        let args = LoadArgs {
            target: Target::Python,
            addr,
            mode: Mode::Soak,
            connections: 1,
            messages: 0,
            duration_ms: 0,
            max_duration_ms: 0,
            seed: 7,
            server_timeout_ms: 1_000,
            message_timeout_ms: 1_000,
            flood: 0,
        };
        let shared = Shared::new(args, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let failure = rt.block_on(async {
            let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
            let mut conn = Conn {
                rd: BufReader::with_capacity(PIECE, rd),
                wr,
            };
            let msg = Message {
                seed: 3,
                len: 40,
                magic: false,
            };
            exchange(&shared, &mut conn, msg, Writing::Trickle, false)
                .await
                .unwrap_err()
        });
        assert_eq!(failure.outcome(), Outcome::TimedOut);
        assert_eq!(
            failure.to_string(),
            "timed out with 40 of the message's 40 B sent and 10 echoed"
        );
        server.join().unwrap();
    }

    #[test]
    fn sizes_span_one_byte_to_the_maximum() {
        let mut rng = fastrand::Rng::with_seed(1);
        let sizes: Vec<usize> = (0..100_000).map(|_| message_size(&mut rng)).collect();
        assert_eq!(*sizes.iter().min().unwrap(), 1);
        assert!(*sizes.iter().max().unwrap() > MAX_MESSAGE / 2);
        assert!(sizes.iter().all(|&s| (1..=MAX_MESSAGE).contains(&s)));
    }
}
