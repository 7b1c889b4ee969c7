"""The Python target of `oxloop soak`: `python soak_server.py TIMEOUT_MS [PLAN_JSON]`.

An asyncio.Protocol echo server on the oxloop loop, guarded the way `oxloop soak`'s
Rust protocol server is: write-buffer water marks of 64 KiB / 16 KiB, reading paused
while writing is paused, a connection cut (aborted) when it sends nothing for the
timeout after connecting or when, while writing is paused, its peer takes none of the
buffer for the timeout. A connection whose first bytes are b"OXPANIC!" makes
data_received raise after echoing them (the loop's exception handler counts it).

PLAN_JSON (keys `timers`, `signals`, `calls_per_thread`, `spread_ms`,
`emfile_window_ms`) adds what the Rust targets get, on this process's loop: while
the load runs, a timer storm (call_later, each batch cancelled at the next step),
a signal storm (SIGUSR1 bursts to this process, handled through
loop.add_signal_handler), 8 threads making call_soon_threadsafe calls, and
callbacks that raise; then a fresh listener for the fd phase.

The parent talks to it in lines. On standard output: "listening on HOST:PORT" for the
soak. Without a plan it serves until SIGTERM, then prints "counts {JSON}". With one,
on "end" (standard input) it winds the storms down, waits for its connections to
close and prints "soak {JSON}"; then "listening on HOST:PORT" again for the fd
phase. On "exhaust" it lowers its soft fd limit to a little above what is open,
opens /dev/null until EMFILE and prints "exhausted {JSON}"; after the window it
frees them and prints "freed {JSON}" (the loop thread's CPU time meanwhile, bytes
echoed, connections accepted). On "end" it waits for those connections to close and
prints "emfile {JSON}"; once its loop is closed, "resources {JSON}": the fds,
threads, children and resident memory at the start and at the end.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import gc
import json
import os
import random
import resource
import signal
import sys
import threading
import time

import oxloop

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
PANIC_MAGIC = b"OXPANIC!"
CALLING_THREADS = 8
SIGNAL_BURST = 10
TIMER_STEP = 0.002

PENDING, FIRED, CANCELLED = 0, 1, 2


def new_counts() -> dict:
    return {
        "accepted": 0,
        "open": 0,
        "closed_clean": 0,
        "closed_with_error": 0,
        "idle_cuts": 0,
        "stall_cuts": 0,
        "panics_raised": 0,
        "panics_reported": 0,
        "max_write_buffer": 0,
        "bytes_echoed": 0,
    }


counts = new_counts()
# What the exception handler received besides protocol exceptions.
reported = {"callback_exceptions": 0, "accept_out_of_fds": 0, "other": 0}


class SoakEcho(asyncio.Protocol):
    def __init__(self, timeout: float, book: dict) -> None:
        self.timeout = timeout
        self.book = book
        self.first = b""
        self.idle = None
        self.stall = None

    def connection_made(self, transport) -> None:
        self.book["accepted"] += 1
        self.book["open"] += 1
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.idle = asyncio.get_running_loop().call_later(self.timeout, self.idle_cut)

    def idle_cut(self) -> None:
        self.book["idle_cuts"] += 1
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.transport.write(data)
        self.book["bytes_echoed"] += len(data)
        size = self.transport.get_write_buffer_size()
        self.book["max_write_buffer"] = max(self.book["max_write_buffer"], size)
        if len(self.first) < len(PANIC_MAGIC):
            self.first += data[: len(PANIC_MAGIC) - len(self.first)]
            if self.first == PANIC_MAGIC:
                self.book["panics_raised"] += 1
                raise RuntimeError("soak: protocol panic")

    def pause_writing(self) -> None:
        self.transport.pause_reading()
        self.arm_stall_check()

    def arm_stall_check(self) -> None:
        size_then = self.transport.get_write_buffer_size()

        def check() -> None:
            self.stall = None
            if self.transport.is_closing() or self.transport.get_write_buffer_size() <= LOW_WATER:
                return
            if self.transport.get_write_buffer_size() >= size_then:
                self.book["stall_cuts"] += 1
                self.transport.abort()
            else:
                self.arm_stall_check()

        self.stall = asyncio.get_running_loop().call_later(self.timeout, check)

    def resume_writing(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        for handle in (self.idle, self.stall):
            if handle is not None:
                handle.cancel()
        self.book["open"] -= 1
        self.book["closed_clean" if exc is None else "closed_with_error"] += 1


def raise_in_callback() -> None:
    raise RuntimeError("soak: callback exception")


class Storms:
    """The timer, signal and cross-thread storms and the raising callbacks, on `loop`.

    Each keeps exact books: every timer fired or cancelled (none after its cancel),
    the signal handler run after every burst, every call run once in its thread's
    order, every raising callback reported.
    """

    def __init__(self, loop, plan: dict, seed: int) -> None:
        self.loop = loop
        self.rng = random.Random(seed)
        spread_ms = max(1, int(plan["spread_ms"]))
        self.timers_planned = int(plan["timers"])
        steps = max(1, spread_ms // int(TIMER_STEP * 1000))
        self.batch = max(1, -(-self.timers_planned // steps))
        self.pending: list = []
        self.timers_set = self.timers_fired = self.timers_cancelled = self.misfires = 0
        self.raising_scheduled = 0
        self.timers_done = False
        loop.call_soon(self.step)

        self.stop = threading.Event()
        self.signal_runs = 0
        self.signals_sent = 0
        self.bursts_missed = 0
        loop.add_signal_handler(signal.SIGUSR1, self.on_signal)
        bursts = -(-int(plan["signals"]) // SIGNAL_BURST)
        pause = min(spread_ms / 1000 / max(1, bursts), 0.02)
        self.threads = [
            threading.Thread(target=self.send_signals, args=(bursts, pause), name="soak-signals")
        ]

        per_thread = int(plan["calls_per_thread"])
        self.calls_planned = per_thread * CALLING_THREADS
        self.calls_sent = [0] * CALLING_THREADS
        self.calls_run = [0] * CALLING_THREADS
        self.calls_next = [0] * CALLING_THREADS
        self.calls_out_of_order = 0
        batches = max(1, -(-per_thread // 100))
        call_pause = min(spread_ms / 1000 / batches, 0.02)
        for t in range(CALLING_THREADS):
            args = (t, per_thread, call_pause)
            name = f"soak-calls-{t}"
            self.threads.append(threading.Thread(target=self.make_calls, args=args, name=name))
        for thread in self.threads:
            thread.start()

    def step(self) -> None:
        """Cancels the previous batch, sets the next one, now and then a raising callback."""
        for handle, state in self.pending:
            if state[0] == PENDING:
                handle.cancel()
                state[0] = CANCELLED
                self.timers_cancelled += 1
        self.pending.clear()
        left = self.timers_planned - self.timers_set
        if left == 0:
            self.timers_done = True
            return
        n = min(left, self.batch)
        rng = self.rng.random
        for _ in range(n):
            state = [PENDING]
            handle = self.loop.call_later(rng() * 0.008, self.fire, state)
            self.pending.append((handle, state))
        self.timers_set += n
        if self.rng.randrange(4) == 0:
            self.raising_scheduled += 1
            self.loop.call_soon(raise_in_callback)
        self.loop.call_later(TIMER_STEP, self.step)

    def fire(self, state: list) -> None:
        if state[0] != PENDING:
            self.misfires += 1
        state[0] = FIRED
        self.timers_fired += 1

    def on_signal(self) -> None:
        self.signal_runs += 1

    def send_signals(self, bursts: int, pause: float) -> None:
        pid = os.getpid()
        for _ in range(bursts):
            if self.stop.is_set():
                break
            before = self.signal_runs
            for _ in range(SIGNAL_BURST):
                os.kill(pid, signal.SIGUSR1)
                self.signals_sent += 1
            deadline = time.monotonic() + 30
            while self.signal_runs == before:
                if time.monotonic() > deadline:
                    self.bursts_missed += 1
                    break
                time.sleep(0.0002)
            time.sleep(pause)

    def make_calls(self, t: int, per_thread: int, pause: float) -> None:
        call = self.loop.call_soon_threadsafe
        for i in range(per_thread):
            try:
                call(self.run_call, t, i)
            except RuntimeError:  # the loop is closed
                return
            self.calls_sent[t] += 1
            if i % 100 == 99:
                time.sleep(pause)

    def run_call(self, t: int, i: int) -> None:
        if self.calls_next[t] != i:
            self.calls_out_of_order += 1
        self.calls_next[t] = i + 1
        self.calls_run[t] += 1

    def wind_down(self) -> None:
        """Stops the signal storm after its burst; the timers and calls run to their count."""
        self.stop.set()

    def finished(self) -> bool:
        return (
            self.timers_done
            and not any(t.is_alive() for t in self.threads)
            and sum(self.calls_run) == sum(self.calls_sent)
        )

    def finish(self) -> dict:
        for thread in self.threads:
            thread.join()
        self.loop.remove_signal_handler(signal.SIGUSR1)
        # A straggler signal must not end the process (SIGUSR1's default action).
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        return {
            "timers_set": self.timers_set,
            "timers_fired": self.timers_fired,
            "timers_cancelled": self.timers_cancelled,
            "timer_misfires": self.misfires,
            "signals_sent": self.signals_sent,
            "signal_handler_runs": self.signal_runs,
            "signal_bursts_missed": self.bursts_missed,
            "calls_planned": self.calls_planned,
            "calls_sent": sum(self.calls_sent),
            "calls_run": sum(self.calls_run),
            "calls_out_of_order": self.calls_out_of_order,
            "callback_panics_scheduled": self.raising_scheduled,
        }


class Commands:
    """Lines from standard input, read on the loop (fd 0 watched, never closed)."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.buffer = b""
        self.lines: asyncio.Queue = asyncio.Queue()
        os.set_blocking(0, False)
        loop.add_reader(0, self.readable)

    def readable(self) -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        if not data:
            self.loop.remove_reader(0)
            self.lines.put_nowait("")
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.lines.put_nowait(line.decode().strip())

    async def expect(self, word: str) -> None:
        line = await self.lines.get()
        if line != word:
            raise RuntimeError(f"expected {word!r} on standard input, got {line!r}")

    def close(self) -> None:
        self.loop.remove_reader(0)
        os.set_blocking(0, True)


def say(word: str, payload: dict) -> None:
    print(f"{word} {json.dumps(payload)}", flush=True)


async def serve(loop, timeout: float, book: dict):
    server = await loop.create_server(lambda: SoakEcho(timeout, book), "127.0.0.1", 0, backlog=4096)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    return server


async def close_when_drained(server, book: dict) -> bool:
    """Waits (up to 30 s) for every connection to end, then closes the listener."""
    deadline = time.monotonic() + 30
    while book["open"] > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    server.close()
    await server.wait_closed()
    return book["open"] == 0


async def fd_phase(loop, timeout: float, window: float, commands: Commands) -> None:
    """Runs out of fds while the load generator's pinging connections are served."""
    book = new_counts()
    server = await serve(loop, timeout, book)
    await commands.expect("exhaust")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = len(os.listdir("/proc/self/fd")) + 64
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    fillers = []
    error = None
    while True:
        try:
            fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            if e.errno != errno.EMFILE:
                error = str(e)
            break
    cpu0, wall0 = time.thread_time(), time.monotonic()
    served0, accepted0 = book["bytes_echoed"], book["accepted"]
    say("exhausted", {"filler_fds": len(fillers), "exhausted_limit": limit, "error": error})
    await asyncio.sleep(window)
    freed = {
        "loop_cpu_s": time.thread_time() - cpu0,
        "wall_s": time.monotonic() - wall0,
        "served_while_exhausted": book["bytes_echoed"] - served0,
        "accepted_while_exhausted": book["accepted"] - accepted0,
    }
    for fd in fillers:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    say("freed", freed)
    await commands.expect("end")
    drained = await close_when_drained(server, book)
    say("emfile", {**book, "drained": drained})


async def main(timeout: float, plan: dict | None) -> None:
    loop = asyncio.get_running_loop()

    def on_exception(loop, context) -> None:
        exc = context.get("exception")
        text = str(exc) if exc is not None else ""
        if text == "soak: protocol panic":
            counts["panics_reported"] += 1
        elif text == "soak: callback exception":
            reported["callback_exceptions"] += 1
        elif isinstance(exc, OSError) and exc.errno == errno.EMFILE:
            # asyncio's accept meets EMFILE, reports it and retries a second later.
            reported["accept_out_of_fds"] += 1
        else:
            reported["other"] += 1
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_exception)
    if plan is None:
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
        server = await serve(loop, timeout, counts)
        await stop
        loop.remove_signal_handler(signal.SIGTERM)
        server.close()
        await server.wait_closed()
        print("counts " + json.dumps(counts), flush=True)
        return
    commands = Commands(loop)
    server = await serve(loop, timeout, counts)
    storms = Storms(loop, plan, int(plan.get("seed", 1)))
    await commands.expect("end")
    storms.wind_down()
    while not storms.finished():
        await asyncio.sleep(0.01)
    storm_counts = storms.finish()
    drained = await close_when_drained(server, counts)
    say("soak", {**counts, "drained": drained, "storms": storm_counts, "reported": dict(reported)})
    await fd_phase(loop, timeout, plan["emfile_window_ms"] / 1000, commands)
    commands.close()
    say("reported", reported)


def resources() -> dict:
    """What this process holds: fds, threads, child processes, resident memory."""
    me = str(os.getpid())
    children = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[1] == me:
                children += 1
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        "children": children,
        "rss_bytes": status_field("VmRSS:"),
    }


def status_field(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    return 0


def trim_heap(libc) -> None:
    """Hands freed heap back to the system, so that RSS shows what is still in use."""
    gc.collect()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


if __name__ == "__main__":
    plan = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim_heap(libc)
    baseline = resources()
    oxloop.run(main(int(sys.argv[1]) / 1000, plan))
    if plan is not None:
        trim_heap(libc)
        time.sleep(0.2)
        end, peak = resources(), status_field("VmHWM:")
        say("resources", {"baseline": baseline, "end": end, "peak_rss_bytes": peak})
