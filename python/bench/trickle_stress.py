"""A stress run for lost read or write readiness in oxloop's Python stream transport.

    python python/bench/trickle_stress.py --duration 900 --connections 1000 \\
        --burners 2 --pin --freeze

(`OXLOOP_BACKEND=io_uring` in the environment puts the server's loop on io_uring.)

An echo server on oxloop's loop (a child process) is fed by client processes (the
standard library's asyncio loop) that keep `--connections` connections busy, each
running sessions of a few messages on a fresh connection:

- trickle (nine in ten; `--bulk-share` sets the rest): a message of 1 B-2 KiB sent
  1-16 bytes at a time, 0-20 ms apart, its echo read and verified while it is
  written;
- bulk: 16 KiB-512 KiB written in 16 KiB pieces while the echo is read slowly (some
  connections with a 4 KiB receive buffer, and some served with a 4 KiB send
  buffer), so the server's write buffer fills and flow control runs;
- now and then a session ends with a reset (`SO_LINGER` 0) or is dropped part-way,
  so fds are closed and their numbers reused while others are busy.

The server echoes every byte as it arrives and meanwhile storms its transports and its
loop: small write-buffer water marks on some connections (`pause_writing`, which
pauses reading as the soak server does), `pause_reading()` after some reads with the
`resume_reading()` made in one of eight ways (at once, `call_soon`, `call_later`,
`call_soon_threadsafe` from a thread, a future's done callback, a task, an
`add_reader` callback woken through a pipe, `add_writer`), plain and buffered
protocols, writes as bytes, memoryview, two halves or `writelines`; a timer storm
(every timer fired or cancelled), threads making `call_soon_threadsafe` calls (each
ran), a `SIGUSR1` storm through `add_signal_handler` (each burst handled) and
`gc.collect()` every second.

With `--burners N`, N busy processes compete for the CPU (all pinned with the server
to CPU 0 with `--pin`); with `--freeze`, the server process is stopped
(`SIGSTOP`) for 1-100 ms every 50-500 ms, so that readiness piles up between waits.

A message whose echo makes no progress for `--stall-timeout` seconds (default 15)
while bytes are outstanding is a stall: the client says so with its port, the driver
prints `ss` for that connection (whose queue holds the bytes: the server's receive
queue, its send queue, or the client's receive queue; a TCP retransmission timer
with its backoff), the machine's TCP counters since the start (drops, timeouts,
memory pressure) and the server's view of it (bytes received and echoed, reading
paused and why, write buffer size, how long its loop last went without turning).
A stall that recovers is counted as late (slowness); one with no progress for
`--stuck-after` seconds (default 120, the soak's message timeout) is stuck. A storm
resume or a timer that has not run `--stall-timeout` seconds (plus twice the loop's
recent lag) after it was due is lost, and so is a signal burst whose handler has not
run after `--stuck-after` seconds. Every byte is verified. The exit status is
non-zero if a message got stuck or mismatched, or a resume, timer, signal burst or
cross-thread call was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

PIECE = 16 * 1024
BLOCK = random.Random(20261130).randbytes(1 << 16)
BLOCK2 = BLOCK * 2


def content(seed: int, pos: int, n: int) -> bytes:
    """Bytes `pos`..`pos + n` of the message with this seed (n at most 64 KiB)."""
    start = (seed + pos) & 0xFFFF
    return BLOCK2[start : start + n]


def emit(word: str, payload: dict) -> None:
    print(f"{word} {json.dumps(payload)}", flush=True)


# ------------------------------------------------------------------------- server --


RESUME_WAYS = ("now", "soon", "later", "thread", "future", "task", "reader", "writer")


class Storm:
    """The server's storms and its books."""

    def __init__(self, loop, rng: random.Random, stall_timeout: float, stuck_after: float) -> None:
        self.loop = loop
        self.rng = rng
        self.stall_timeout = stall_timeout
        self.stuck_after = stuck_after
        self.protocols: dict[int, StressEcho] = {}
        self.books = {
            "accepted": 0,
            "closed": 0,
            "closed_with_error": 0,
            "bytes_received": 0,
            "bytes_echoed": 0,
            "read_pauses": dict.fromkeys(RESUME_WAYS, 0),
            "pause_writing": 0,
            "resume_writing": 0,
            "lost_resumes": 0,
            "timers_set": 0,
            "timers_fired": 0,
            "timers_cancelled": 0,
            "timers_late": 0,
            "timers_lost": 0,
            "timer_misfires": 0,
            "thread_calls_sent": 0,
            "thread_calls_run": 0,
            "signals_sent": 0,
            "signal_bursts_missed": 0,
            "signal_wait_max_s": 0.0,
            "signal_runs": 0,
            "gc_runs": 0,
            "exceptions": 0,
            "loop_lag_max_s": 0.0,
        }
        self.stop = threading.Event()
        self.timers: dict[int, tuple[object, float]] = {}
        self.timer_seq = 0
        # Resumes other threads and fd callbacks make: (protocol, key) queued here.
        self.thread_resumes: list = []
        self.thread_resume_ready = threading.Condition()
        self.pipe_r, self.pipe_w = os.pipe()
        os.set_blocking(self.pipe_r, False)
        self.pipe_resumes: list = []
        self.writer_resumes: list = []
        self.writer_sock_a, self.writer_sock_b = socket.socketpair()
        self.writer_sock_a.setblocking(False)
        loop.add_reader(self.pipe_r, self.on_pipe)
        loop.add_signal_handler(signal.SIGUSR1, self.on_signal)
        self.threads = [
            threading.Thread(target=self.resume_thread, daemon=True),
            threading.Thread(target=self.signal_thread, daemon=True),
        ]
        # Per thread: `+=` on one shared counter from several threads can lose counts.
        self.calls_sent = [0] * 4
        self.threads += [
            threading.Thread(target=self.call_thread, args=(i,), daemon=True) for i in range(4)
        ]
        for thread in self.threads:
            thread.start()
        loop.call_soon(self.timer_step)
        self.lags: list[float] = []
        self.said: dict[str, int] = {}
        self.housekeeping_due = loop.time() + 1.0
        loop.call_later(1.0, self.housekeeping)

    # Timers: each fires or is cancelled; a late one (more than the stall timeout
    # past its deadline) or one never run is counted.
    def timer_step(self) -> None:
        if self.stop.is_set():
            return
        rng = self.rng
        now = self.loop.time()
        for _ in range(40):
            self.timer_seq += 1
            key = self.timer_seq
            delay = rng.random() * 0.008
            handle = self.loop.call_later(delay, self.timer_fired, key)
            self.timers[key] = (handle, now + delay)
            self.books["timers_set"] += 1
        for key in rng.sample(list(self.timers), min(len(self.timers), 15)):
            handle, _ = self.timers.pop(key)
            handle.cancel()
            self.books["timers_cancelled"] += 1
        self.loop.call_later(0.001, self.timer_step)

    def timer_fired(self, key: int) -> None:
        entry = self.timers.pop(key, None)
        if entry is None:
            self.books["timer_misfires"] += 1  # ran after its cancel
            return
        self.books["timers_fired"] += 1
        if self.loop.time() - entry[1] > self.lost_after():
            self.books["timers_late"] += 1

    def housekeeping(self) -> None:
        # How late this call ran: how long the loop went without turning (a loaded
        # machine, a stopped process, a long iteration).
        now = self.loop.time()
        lag = now - self.housekeeping_due
        self.lags = self.lags[-int(2 * self.stall_timeout) :] + [lag]
        self.books["loop_lag_max_s"] = max(self.books["loop_lag_max_s"], lag)
        gc.collect()
        self.books["gc_runs"] += 1
        for key, (_, deadline) in list(self.timers.items()):
            if now - deadline > self.lost_after():
                self.timers.pop(key)
                self.books["timers_lost"] += 1
                self.say("lost_timer", {"late_s": now - deadline, "lag_s": self.recent_lag()})
        for protocol in list(self.protocols.values()):
            protocol.check_resume(now)
        if not self.stop.is_set():
            self.housekeeping_due = self.loop.time() + 1.0
            self.loop.call_later(1.0, self.housekeeping)

    def lost_after(self) -> float:
        """How long a callback may take before it counts as lost: the stall timeout
        plus twice the loop's recent lag (a starved loop runs everything late)."""
        return self.stall_timeout + 2 * self.recent_lag()

    def recent_lag(self) -> float:
        """The longest the loop went without turning, over the last 2 x stall timeout."""
        return max(self.lags, default=0.0)

    def say(self, word: str, payload: dict) -> None:
        """`emit`, for the first few of each word (the rest only counted)."""
        said = self.said.get(word, 0)
        self.said[word] = said + 1
        if said < 20:
            emit(word, payload)

    # Cross-thread calls.
    def call_thread(self, i: int) -> None:
        rng = random.Random(i)
        while not self.stop.is_set():
            for _ in range(rng.randint(1, 50)):
                try:
                    self.loop.call_soon_threadsafe(self.thread_call)
                except RuntimeError:
                    return
                self.calls_sent[i] += 1
            time.sleep(rng.random() * 0.005)

    def thread_call(self) -> None:
        self.books["thread_calls_run"] += 1

    # Signals.
    def signal_thread(self) -> None:
        pid = os.getpid()
        while not self.stop.wait(0.05):
            before = self.books["signal_runs"]
            for _ in range(5):
                os.kill(pid, signal.SIGUSR1)
                self.books["signals_sent"] += 1
            sent = time.monotonic()
            while self.books["signal_runs"] == before and not self.stop.is_set():
                waited = time.monotonic() - sent
                if waited > self.stuck_after:
                    self.books["signal_bursts_missed"] += 1
                    self.say("missed_signals", {"lag_s": self.recent_lag()})
                    break
                time.sleep(0.001)
            waited = time.monotonic() - sent
            self.books["signal_wait_max_s"] = max(self.books["signal_wait_max_s"], waited)

    def on_signal(self) -> None:
        self.books["signal_runs"] += 1

    # Resumes made elsewhere.
    def resume_thread(self) -> None:
        rng = random.Random(7)
        while True:
            with self.thread_resume_ready:
                while not self.thread_resumes:
                    self.thread_resume_ready.wait()
                batch, self.thread_resumes = self.thread_resumes, []
            if rng.random() < 0.5:
                time.sleep(0.0005)
            for protocol, key in batch:
                try:
                    self.loop.call_soon_threadsafe(protocol.resume, key)
                except RuntimeError:
                    return
                protocol.resume_sent(key, time.monotonic())

    def on_pipe(self) -> None:
        try:
            os.read(self.pipe_r, 4096)
        except BlockingIOError:
            return
        batch, self.pipe_resumes = self.pipe_resumes, []
        for protocol, key in batch:
            protocol.resume(key)

    def on_writable(self) -> None:
        self.loop.remove_writer(self.writer_sock_a.fileno())
        batch, self.writer_resumes = self.writer_resumes, []
        for protocol, key in batch:
            protocol.resume(key)

    def schedule_resume(self, protocol: StressEcho, key: int, way: str) -> None:
        loop = self.loop
        if way == "now":
            protocol.resume(key)
        elif way == "soon":
            loop.call_soon(protocol.resume, key)
        elif way == "later":
            loop.call_later(self.rng.random() * 0.003, protocol.resume, key)
        elif way == "thread":
            with self.thread_resume_ready:
                self.thread_resumes.append((protocol, key))
                self.thread_resume_ready.notify()
        elif way == "future":
            future = loop.create_future()
            future.add_done_callback(lambda _: protocol.resume(key))
            loop.call_soon(future.set_result, None)
        elif way == "task":

            async def resume_later() -> None:
                await asyncio.sleep(0)
                await asyncio.sleep(self.rng.random() * 0.002)
                protocol.resume(key)

            loop.create_task(resume_later())
        elif way == "reader":
            self.pipe_resumes.append((protocol, key))
            os.write(self.pipe_w, b"x")
        else:
            if not self.writer_resumes:
                loop.add_writer(self.writer_sock_a.fileno(), self.on_writable)
            self.writer_resumes.append((protocol, key))

    def dump(self, port: int) -> dict:
        protocol = self.protocols.get(port)
        if protocol is None:
            return {"port": port, "known": False}
        return protocol.state()


class StressEcho:
    """The echo protocol's shared part (plain and buffered receivers below)."""

    def __init__(self, storm: Storm) -> None:
        self.storm = storm
        self.rng = random.Random(storm.rng.random())
        self.received = 0
        self.echoed = 0
        # Why reading is paused: "writing" and/or storm keys (int) with when and how.
        self.pauses: dict = {}
        self.next_key = 0
        self.port = None
        self.last_data = 0.0
        self.water = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        storm = self.storm
        storm.books["accepted"] += 1
        self.port = transport.get_extra_info("peername")[1]
        storm.protocols[self.port] = self
        if self.rng.random() < 0.3:
            # Small water marks and a small kernel send buffer: flow control runs
            # even for small echoes.
            high = self.rng.choice((64, 512, 4096))
            self.water = high
            transport.set_write_buffer_limits(high=high, low=high // 4)
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    def echo(self, data) -> None:
        storm = self.storm
        n = len(data)
        self.received += n
        self.last_data = storm.loop.time()
        storm.books["bytes_received"] += n
        roll = self.rng.random()
        if roll < 0.7 or n < 2:
            self.transport.write(data)
        elif roll < 0.8:
            half = n // 2
            self.transport.write(data[:half])
            self.transport.write(data[half:])
        elif roll < 0.9:
            self.transport.writelines([data[: n // 3], memoryview(bytes(data))[n // 3 :]])
        else:
            self.transport.write(memoryview(bytes(data)))
        self.echoed += n
        storm.books["bytes_echoed"] += n
        if self.rng.random() < 0.15 and not self.transport.is_closing():
            self.storm_pause()

    def storm_pause(self) -> None:
        way = self.rng.choice(RESUME_WAYS)
        self.storm.books["read_pauses"][way] += 1
        self.next_key += 1
        key = self.next_key
        self.pauses[key] = [self.storm.loop.time(), way, None]
        self.transport.pause_reading()
        if self.rng.random() < 0.1:
            self.transport.pause_reading()  # twice: still one resume
        self.storm.schedule_resume(self, key, way)

    def resume_sent(self, key, when: float) -> None:
        """A thread made the `call_soon_threadsafe` call that resumes `key`."""
        pause = self.pauses.get(key)
        if pause is not None:
            pause[2] = when

    def resume(self, key) -> None:
        if self.pauses.pop(key, None) is None:
            return
        if not self.pauses and not self.transport.is_closing():
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.storm.books["pause_writing"] += 1
        self.pauses["writing"] = [self.storm.loop.time(), "writing", None]
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.storm.books["resume_writing"] += 1
        self.resume("writing")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        storm = self.storm
        storm.books["closed" if exc is None else "closed_with_error"] += 1
        if storm.protocols.get(self.port) is self:
            del storm.protocols[self.port]
        self.pauses.clear()

    def check_resume(self, now: float) -> None:
        for key, (since, way, sent_at) in list(self.pauses.items()):
            if key != "writing" and now - since > self.storm.lost_after():
                self.storm.books["lost_resumes"] += 1
                sent = None if sent_at is None else time.monotonic() - sent_at
                self.storm.say(
                    "lost_resume",
                    {"way": way, "for_s": now - since, "thread_call_s_ago": sent, **self.state()},
                )
                self.pauses.pop(key)
                if not self.pauses:
                    self.transport.resume_reading()

    def state(self) -> dict:
        transport = self.transport
        return {
            "port": self.port,
            "known": True,
            "received": self.received,
            "echoed": self.echoed,
            "since_data_s": self.storm.loop.time() - self.last_data,
            "pauses": sorted({way for _, way, _ in self.pauses.values()}),
            "loop_lag_s": self.storm.recent_lag(),
            "is_reading": transport.is_reading(),
            "is_closing": transport.is_closing(),
            "write_buffer": transport.get_write_buffer_size(),
            "water": self.water,
            "transport": repr(transport),
        }


class PlainEcho(StressEcho, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.echo(data)


class BufferedEcho(StressEcho, asyncio.BufferedProtocol):
    def __init__(self, storm: Storm) -> None:
        super().__init__(storm)
        self.buffer = bytearray(self.rng.choice((7, 100, 4096, 65536)))

    def get_buffer(self, sizehint: int):
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.echo(bytes(self.buffer[:nbytes]))


async def serve(seed: int, stall_timeout: float, stuck_after: float) -> None:
    import oxloop  # noqa: F401 (the loop is oxloop's: see main)

    loop = asyncio.get_running_loop()
    storm = Storm(loop, random.Random(seed), stall_timeout, stuck_after)

    def on_exception(loop, context) -> None:
        storm.books["exceptions"] += 1
        storm.say(
            "exception",
            {"message": str(context.get("message")), "exc": repr(context.get("exception"))},
        )

    loop.set_exception_handler(on_exception)

    def factory():
        return BufferedEcho(storm) if storm.rng.random() < 0.2 else PlainEcho(storm)

    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=4096)
    emit("listening", {"port": server.sockets[0].getsockname()[1], "pid": os.getpid()})
    lines: asyncio.Queue = asyncio.Queue()
    buffered = b""

    def on_stdin() -> None:
        nonlocal buffered
        data = os.read(0, 4096)
        if not data:
            loop.remove_reader(0)
            lines.put_nowait("end")
            return
        buffered += data
        *complete, buffered = buffered.split(b"\n")
        for line in complete:
            lines.put_nowait(line.decode().strip())

    os.set_blocking(0, False)
    loop.add_reader(0, on_stdin)
    while True:
        line = await lines.get()
        if line.startswith("dump "):
            emit("dump", storm.dump(int(line.split()[1])))
        elif line == "end":
            break
    storm.stop.set()
    server.close()
    for thread in storm.threads[1:]:
        await loop.run_in_executor(None, thread.join)
    await asyncio.sleep(0.5)  # the last timers (at most 8 ms) and cross-thread calls
    books = storm.books
    books["thread_calls_sent"] = sum(storm.calls_sent)
    books["timers_lost"] += len(storm.timers)
    books["open_at_end"] = len(storm.protocols)
    emit("books", books)
    loop.remove_reader(0)
    loop.remove_reader(storm.pipe_r)
    loop.remove_signal_handler(signal.SIGUSR1)


# ------------------------------------------------------------------------- client --


class Stalled(Exception):
    pass


async def client(args) -> None:
    rng = random.Random(args.seed)
    books = {
        "sessions": 0,
        "messages": 0,
        "trickle_messages": 0,
        "bulk_messages": 0,
        "bytes_verified": 0,
        "resets": 0,
        "dropped": 0,
        "stalls": 0,
        "late": 0,
        "stuck": 0,
        "mismatches": 0,
        "errors": 0,
        "max_stall_s": 0.0,
        "client_lag_max_s": 0.0,
    }
    deadline = time.monotonic() + args.duration

    async def exchange(reader, writer, port: int, srng: random.Random) -> None:
        trickle = srng.random() >= args.bulk_share
        length = srng.randint(1, 2048) if trickle else srng.randint(16 * 1024, 512 * 1024)
        seed = srng.randrange(1 << 16)
        slow_reader = not trickle and srng.random() < 0.7
        drop_at = length // 2 if srng.random() < 0.03 else None
        state = {"sent": 0, "echoed": 0, "progress": time.monotonic()}

        async def write() -> None:
            pos = 0
            end = drop_at if drop_at is not None else length
            while pos < end:
                if trickle:
                    n = min(srng.randint(1, 16), end - pos)
                else:
                    n = min(PIECE, end - pos)
                writer.write(content(seed, pos, n))
                pos += n
                state["sent"] = pos
                await writer.drain()
                if trickle:
                    pause = srng.choice((0, 0, 0.001, 0.005, 0.01, 0.02))
                    if pause:
                        await asyncio.sleep(pause)

        async def read() -> None:
            pos = 0
            end = drop_at if drop_at is not None else length
            while pos < end:
                data = await reader.read(min(65536, end - pos))
                if not data:
                    raise ConnectionError("end of stream before the echo")
                n = len(data)
                at = 0
                while at < n:
                    k = min(65536, n - at)
                    if data[at : at + k] != content(seed, pos + at, k):
                        books["mismatches"] += 1
                        emit("mismatch", {"port": port, "at": pos + at})
                        raise ConnectionError("mismatch")
                    at += k
                pos += n
                state["echoed"] = pos
                state["progress"] = time.monotonic()
                if slow_reader and srng.random() < 0.3:
                    await asyncio.sleep(srng.choice((0.001, 0.01, 0.02, 0.2)))

        stuck = False
        # When the progress seen last was made, while a stall is reported.
        stalled_since = None

        def recovered() -> None:
            nonlocal stalled_since
            books["late"] += 1
            after = state["progress"] - stalled_since
            if books["late"] <= 20:
                emit("recovered", {"port": port, "after_s": after})
            books["max_stall_s"] = max(books["max_stall_s"], after)
            stalled_since = None

        async def watch(io: asyncio.Future) -> None:
            nonlocal stuck, stalled_since
            while not io.done():
                await asyncio.sleep(0.5)
                now = time.monotonic()
                outstanding = state["sent"] > state["echoed"]
                idle = now - state["progress"]
                if stalled_since is None:
                    if outstanding and idle > args.stall_timeout:
                        stalled_since = state["progress"]
                        books["stalls"] += 1
                        if books["stalls"] <= 20:
                            emit(
                                "stall",
                                {
                                    "port": port,
                                    "kind": "trickle" if trickle else "bulk",
                                    "length": length,
                                    "sent": state["sent"],
                                    "echoed": state["echoed"],
                                    "idle_s": idle,
                                    "client_lag_s": max(lags, default=0.0),
                                },
                            )
                elif state["progress"] != stalled_since:
                    recovered()
                elif idle > args.stuck_after:
                    books["stuck"] += 1
                    if books["stuck"] <= 20:
                        emit(
                            "stuck",
                            {"port": port, "sent": state["sent"], "echoed": state["echoed"]},
                        )
                    stuck = True
                    io.cancel()
                    return

        io = asyncio.ensure_future(asyncio.gather(write(), read()))
        watcher = asyncio.ensure_future(watch(io))
        try:
            await io
        except asyncio.CancelledError:
            if not stuck:
                raise
            raise Stalled() from None
        finally:
            watcher.cancel()
        if stalled_since is not None and state["progress"] != stalled_since:
            recovered()
        if drop_at is not None:
            books["dropped"] += 1
            raise Stalled()  # ends the session: the connection is abandoned part-way
        books["messages"] += 1
        books["trickle_messages" if trickle else "bulk_messages"] += 1
        books["bytes_verified"] += length

    # How late a 0.1 s sleep of this process's loop wakes (the client's own slowness),
    # over the last 2 x stall timeout.
    lags: list[float] = []

    async def heartbeat() -> None:
        while time.monotonic() < deadline:
            due = time.monotonic() + 0.1
            await asyncio.sleep(0.1)
            lag = time.monotonic() - due
            lags[:] = lags[-int(20 * args.stall_timeout) :] + [lag]
            books["client_lag_max_s"] = max(books["client_lag_max_s"], lag)

    async def worker(w: int) -> None:
        wrng = random.Random(rng.random())
        while time.monotonic() < deadline:
            books["sessions"] += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if wrng.random() < 0.1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", args.port))
                reader, writer = await asyncio.open_connection(sock=sock)
            except OSError:
                books["errors"] += 1
                sock.close()
                await asyncio.sleep(0.1)
                continue
            port = sock.getsockname()[1]
            try:
                for _ in range(wrng.randint(1, 4)):
                    await exchange(reader, writer, port, wrng)
                if wrng.random() < 0.1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    books["resets"] += 1
            except Stalled:
                pass
            except (OSError, ConnectionError) as exc:
                if "mismatch" not in str(exc):
                    books["errors"] += 1
                    emit("error", {"port": port, "error": repr(exc)})
            writer.close()

    await asyncio.gather(heartbeat(), *(worker(w) for w in range(args.connections)))
    emit("result", books)


# ------------------------------------------------------------------------- driver --


def ss_of(port: int) -> str:
    try:
        done = subprocess.run(
            ["ss", "-tnoi", "state", "all", f"( sport = :{port} or dport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ss failed: {exc}"
    return (done.stdout + done.stderr).strip() or f"ss said nothing (status {done.returncode})"


# The machine's TCP counters that tell a stall of TCP itself (segments dropped, then
# sent again after a backed-off retransmission timeout) from one of the loop.
TCP_COUNTERS = (
    "TCPTimeouts",
    "TCPLossProbes",
    "TCPRcvQDrop",
    "TCPMemoryPressures",
    "TCPMemoryPressuresChrono",
    "PruneCalled",
    "RcvPruned",
    "TCPOFODrop",
    "TCPZeroWindowDrop",
    "TCPBacklogDrop",
    "ListenOverflows",
)


def tcp_counters() -> dict:
    """`TcpExt` counters of /proc/net/netstat (machine-wide) and the pages TCP holds."""
    found = {}
    try:
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
        if len(lines) == 2:
            found = {
                k: int(v)
                for k, v in zip(lines[0][1:], lines[1][1:], strict=True)
                if k in TCP_COUNTERS
            }
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    words = line.split()
                    found["mem_pages"] = int(words[words.index("mem") + 1])
    except (OSError, ValueError):
        pass
    return found


def drive(args) -> int:
    me = os.path.abspath(__file__)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [
            sys.executable,
            me,
            "serve",
            "--seed",
            str(args.seed),
            "--stall-timeout",
            str(args.stall_timeout),
            "--stuck-after",
            str(args.stuck_after),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = server.stdout.readline()
    word, payload = first.split(" ", 1)
    if word != "listening":
        print(first, file=sys.stderr)
        return 2
    port = json.loads(payload)["port"]
    burners = []
    if args.pin:
        os.sched_setaffinity(server.pid, {0})
    for _ in range(args.burners):
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        if args.pin:
            os.sched_setaffinity(burner.pid, {0})
        burners.append(burner)
    per_client = max(1, args.connections // args.clients)
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                me,
                "load",
                "--port",
                str(port),
                "--connections",
                str(per_client),
                "--duration",
                str(args.duration),
                "--stall-timeout",
                str(args.stall_timeout),
                "--seed",
                str(args.seed * 1000 + i),
                "--bulk-share",
                str(args.bulk_share),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(args.clients)
    ]
    lock = threading.Lock()
    report = {"stalls": [], "server": [], "results": []}
    tcp_start = tcp_counters()
    tcp_peak = {"mem_pages": tcp_start.get("mem_pages", 0)}
    sampling = threading.Event()

    def sample_tcp() -> None:
        while not sampling.wait(0.5):
            pages = tcp_counters().get("mem_pages", 0)
            tcp_peak["mem_pages"] = max(tcp_peak["mem_pages"], pages)

    threading.Thread(target=sample_tcp, daemon=True).start()
    freezing = threading.Event()

    def freezer() -> None:
        rng = random.Random(args.seed)
        while not freezing.wait(rng.uniform(0.05, 0.5)):
            try:
                os.kill(server.pid, signal.SIGSTOP)
                time.sleep(rng.uniform(0.001, 0.1))
            finally:
                os.kill(server.pid, signal.SIGCONT)

    def read_server() -> None:
        for line in server.stdout:
            word, _, payload = line.partition(" ")
            with lock:
                print(f"server: {line.strip()}", flush=True)
                report["server"].append((word, json.loads(payload) if payload.strip() else {}))

    # The first stalls are looked into (`ss`, the server's view) by a thread of their
    # own, so that no process's output waits on it.
    to_inspect: list[int] = []
    inspect_ready = threading.Condition()

    def inspector() -> None:
        while True:
            with inspect_ready:
                while not to_inspect:
                    inspect_ready.wait()
                port = to_inspect.pop(0)
            if port < 0:
                return
            with lock:
                server.stdin.write(f"dump {port}\n")
                server.stdin.flush()
            view = ss_of(port)
            now = tcp_counters()
            since = {k: v - tcp_start.get(k, 0) for k, v in now.items() if k != "mem_pages"}
            with lock:
                print(f"ss of port {port}:\n{view}", flush=True)
                print(f"tcp since start: {json.dumps(since)}, pages now {now.get('mem_pages')}")

    def read_client(proc) -> None:
        for line in proc.stdout:
            word, _, payload = line.partition(" ")
            data = json.loads(payload) if payload.strip() else {}
            with lock:
                if word == "result":
                    report["results"].append(data)
                    continue
                print(f"client: {line.strip()}", flush=True)
                if word == "stall":
                    report["stalls"].append(data)
                    if len(report["stalls"]) <= 20:
                        with inspect_ready:
                            to_inspect.append(data["port"])
                            inspect_ready.notify()

    threads = [threading.Thread(target=read_server, daemon=True)]
    threading.Thread(target=inspector, daemon=True).start()
    threads += [threading.Thread(target=read_client, args=(c,), daemon=True) for c in clients]
    if args.freeze:
        threads.append(threading.Thread(target=freezer, daemon=True))
    for t in threads:
        t.start()
    started = time.monotonic()
    for c in clients:
        c.wait()
    freezing.set()
    time.sleep(0.2)
    os.kill(server.pid, signal.SIGCONT)
    for burner in burners:
        burner.kill()
        burner.wait()
    server.stdin.write("end\n")
    server.stdin.flush()
    server.wait(timeout=120)
    for t in threads[: 1 + len(clients)]:
        t.join(timeout=10)
    sampling.set()
    tcp_end = tcp_counters()
    tcp = {k: v - tcp_start.get(k, 0) for k, v in tcp_end.items() if k != "mem_pages"}
    tcp["peak_mem_pages"] = tcp_peak["mem_pages"]
    books = next((p for w, p in report["server"] if w == "books"), None)
    totals: dict = {}
    for result in report["results"]:
        for key, value in result.items():
            totals[key] = (
                max(totals.get(key, 0), value)
                if key == "max_stall_s"
                else totals.get(key, 0) + value
            )
    summary = {
        "elapsed_s": round(time.monotonic() - started, 1),
        "client": totals,
        "server": books,
        "machine_tcp": tcp,
    }
    print("summary " + json.dumps(summary), flush=True)
    # A stall that recovered ("late") is slowness, shown beside the loop's lag and the
    # machine's TCP counters; a message whose echo never came back ("stuck") fails.
    bad = (
        books is None
        or len(report["results"]) != len(clients)
        or totals.get("stuck", 0)
        or totals.get("mismatches", 0)
        or books["lost_resumes"]
        or books["timers_lost"]
        or books["timer_misfires"]
        or books["timers_late"]
        or books["signal_bursts_missed"]
        or books["thread_calls_run"] != books["thread_calls_sent"]
        or books["exceptions"]
    )
    print("FAILED" if bad else "passed", flush=True)
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="drive", choices=("drive", "serve", "load"))
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument(
        "--connections", type=int, default=600, help="concurrent connections (default 600)"
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument(
        "--bulk-share", type=float, default=0.1, help="bulk messages' share (default 0.1)"
    )
    parser.add_argument("--burners", type=int, default=0, help="busy processes beside the server")
    parser.add_argument("--pin", action="store_true", help="server and burners on CPU 0")
    parser.add_argument("--freeze", action="store_true", help="stop the server now and then")
    parser.add_argument("--stall-timeout", type=float, default=15.0, help="seconds (default 15)")
    parser.add_argument(
        "--stuck-after",
        type=float,
        default=120.0,
        help="seconds without progress that fail the run (default 120, the soak's)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "serve":
        import oxloop

        oxloop.run(serve(args.seed, args.stall_timeout, args.stuck_after))
        return 0
    if args.mode == "load":
        asyncio.run(client(args))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
