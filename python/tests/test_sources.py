"""oxloop.sources and the loop's own cycle control: `Source` added to a loop, sched,
asyncio and oxloop loops hooked in as sources, `run_once`/`fileno`/`next_timeout`,
and shutdown through the outer loop."""

from __future__ import annotations

import asyncio
import os
import sched
import select
import socket
import threading
import time

import pytest
from conftest import run

import oxloop
from oxloop.sources import (
    READ,
    WRITE,
    AsyncioSource,
    OxloopSource,
    SchedSource,
    Source,
    add_source,
    remove_source,
)


class Recorder(Source):
    """Reads one byte per dispatch from a socket; records dispatches and close()."""

    def __init__(self, sock: socket.socket, when: float | None = None) -> None:
        self.sock = sock
        self.when = when
        self.log: list = []
        self.closed_with_fd_watched = None

    def fds(self):
        return [(self.sock, READ)]

    def deadline(self):
        return self.when

    def dispatch(self, fd, events):
        if fd is None:
            self.when = None
            self.log.append("deadline")
        else:
            self.log.append((fd, events, self.sock.recv(1)))

    def close(self):
        loop = self.log_loop
        self.closed_with_fd_watched = loop._selector.get_map().get(self.sock.fileno()) is not None
        self.log.append("closed")


def add_recorder(loop, sock, when=None) -> Recorder:
    src = Recorder(sock, when)
    src.log_loop = loop
    return add_source(loop, src)


# ---------------------------------------------------------------- the Source interface ----


def test_source_lifecycle_added_fired_removed(loop):
    a, b = socket.socketpair()
    with a, b:
        src = add_recorder(loop, a, when=loop.time() + 0.01)
        assert src.loop is loop
        b.send(b"xy")

        async def until(n):
            while len(src.log) < n:
                await asyncio.sleep(0.001)

        run(loop, until(3))
        # Level-triggered: one byte per dispatch, both read; the deadline fired once.
        assert [e for e in src.log if e != "deadline"] == [
            (a.fileno(), READ, b"x"),
            (a.fileno(), READ, b"y"),
        ]
        assert src.log.count("deadline") == 1
        assert src.remove() is True
        assert src.log[-1] == "closed"
        assert src.closed_with_fd_watched is False
        assert src.loop is None
        assert src.remove() is False
        assert remove_source(loop, src) is False


def test_source_dispatch_error_goes_to_the_handler_and_the_source_stays(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Failing(Source):
        def __init__(self):
            self.calls = 0

        def deadline(self):
            return loop.time() if self.calls < 2 else None

        def dispatch(self, fd, events):
            self.calls += 1
            raise ValueError("boom")

    src = add_source(loop, Failing())

    async def until():
        while src.calls < 2:
            await asyncio.sleep(0)

    run(loop, until())
    assert [type(c["exception"]) for c in errors] == [ValueError, ValueError]
    assert errors[0]["source"] is src
    assert src.loop is loop


def test_write_interest_and_changing_fds(loop):
    a, b = socket.socketpair()
    with a, b:

        class Writer(Source):
            def __init__(self):
                self.log = []
                self.interest = WRITE

            def fds(self):
                return [(a.fileno(), self.interest)] if self.interest else []

            def dispatch(self, fd, events):
                self.log.append(events)
                if events == WRITE:
                    a.send(b"!")
                    self.interest = READ  # wait for the answer instead
                else:
                    a.recv(10)
                    self.interest = 0  # watch nothing any more

        src = add_source(loop, Writer())
        b.setblocking(False)

        async def answer():
            while True:
                try:
                    b.recv(1)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            b.send(b"?")
            while len(src.log) < 2:
                await asyncio.sleep(0.001)

        run(loop, answer())
        assert src.log == [WRITE, READ]
        assert loop._selector.get_map().get(a.fileno()) is None
        assert src.remove()


def test_bad_sources_get_clear_errors(loop):
    class Fds(Source):
        def __init__(self, fds, deadline=None):
            self._fds = fds
            self._deadline = deadline

        def fds(self):
            return self._fds

        def deadline(self):
            return self._deadline

        def dispatch(self, fd, events):
            pass

    with pytest.raises(TypeError, match="oxloop.sources.Source"):
        add_source(loop, object())
    with pytest.raises(ValueError, match="invalid fd -1"):
        add_source(loop, Fds([(-1, READ)]))
    with pytest.raises(ValueError, match="invalid events"):
        add_source(loop, Fds([(0, 7)]))
    with pytest.raises(ValueError, match=r"\(fd, events\) pairs"):
        add_source(loop, Fds([3]))
    with pytest.raises(ValueError, match="NaN"):
        add_source(loop, Fds([], deadline=float("nan")))
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError, match=f"fd {r} cannot be watched"):
        add_source(loop, Fds([(r, READ)]))
    assert loop._selector.get_map().get(r) is None
    a, b = socket.socketpair()
    with a, b:
        first = add_source(loop, Fds([(a, READ)]))
        with pytest.raises(RuntimeError, match="already added to this loop"):
            add_source(loop, first)
        other = oxloop.new_event_loop()
        try:
            with pytest.raises(RuntimeError, match="already added to another loop"):
                add_source(other, first)
        finally:
            other.close()
        with pytest.raises(ValueError, match="already watched by source"):
            add_source(loop, Fds([(a.fileno(), WRITE)]))
        loop.add_reader(b, lambda: None)
        with pytest.raises(ValueError, match="already watched by the loop"):
            add_source(loop, Fds([(b, READ)]))
        loop.remove_reader(b)
    closed = oxloop.new_event_loop()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        add_source(closed, Fds([]))


# ---------------------------------------------------------------- run_once & co ----------


def test_run_once_drives_one_cycle_at_a_time():
    loop = oxloop.new_event_loop()
    trace: list[str] = []
    a, b = socket.socketpair()
    try:
        assert loop.next_timeout() is None  # nothing timed, nothing ready
        loop.call_soon(trace.append, "soon 1")
        loop.call_soon(lambda: loop.call_soon(trace.append, "soon from soon"))
        loop.add_reader(a, lambda: trace.append(f"read {a.recv(10)!r}"))
        b.send(b"hi")
        when = loop.time() + 0.02
        loop.call_at(when, trace.append, "timer")
        assert loop.next_timeout() == 0.0  # callbacks are ready

        cycles = []

        def cycle(timeout):
            before = len(trace)
            loop.run_once(timeout)
            cycles.append(trace[before:])

        cycle(0)
        cycle(0)
        assert cycles == [["soon 1", "read b'hi'"], ["soon from soon"]]
        left = loop.next_timeout()
        assert left is not None and 0 < left <= 0.02
        cycle(0)  # nothing due yet, no waiting
        assert cycles[-1] == []
        while not cycles[-1]:
            cycle(None)  # blocks until the timer, never past it
        assert cycles[-1] == ["timer"]
        assert time.monotonic() >= when
        assert loop.next_timeout() is None
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()
        loop.close()


def test_run_once_sets_the_running_loop_and_puts_the_callers_back():
    loop = oxloop.new_event_loop()
    seen = []

    async def task():
        seen.append(asyncio.get_running_loop() is loop)
        await asyncio.sleep(0)
        seen.append("after sleep")

    try:
        t = loop.create_task(task())
        while not t.done():
            loop.run_once()
        assert seen == [True, "after sleep"]
        assert asyncio._get_running_loop() is None
        assert not loop.is_running()

        # Inside another loop's callback: that loop is the running one again afterwards.
        async def host():
            inner_task = loop.create_task(task())
            while not inner_task.done():
                loop.run_once(0)
                assert asyncio.get_running_loop() is host_loop
                await asyncio.sleep(0)

        host_loop = oxloop.new_event_loop()
        try:
            run(host_loop, host())
        finally:
            host_loop.close()
    finally:
        loop.close()


def test_stop_is_used_up_by_run_once():
    loop = oxloop.new_event_loop()
    try:
        loop.stop()
        assert loop.next_timeout() == 0.0
        loop.run_once()
        assert loop.next_timeout() is None  # a host would not spin
        loop.call_soon(loop.stop)
        loop.run_once()
        assert loop.next_timeout() is None
        # run_forever still honours a later stop().
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()


def test_run_once_errors():
    loop = oxloop.new_event_loop()
    errors = []

    def reenter():
        try:
            loop.run_once(0)
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.call_soon(reenter)
    loop.run_once()
    assert errors and "already running" in errors[0]

    with pytest.raises(ValueError, match="NaN"):
        loop.run_once(float("nan"))

    # From another thread while the loop runs.
    started = threading.Event()
    loop.call_soon(started.set)
    thread_error = []

    def other_thread():
        started.wait(5)
        try:
            loop.run_once(0)
        except RuntimeError as exc:
            thread_error.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other_thread)
    t.start()
    loop.run_forever()
    t.join(5)
    assert thread_error and "another thread" in thread_error[0]

    loop.close()
    for call in (loop.run_once, loop.fileno, loop.next_timeout):
        with pytest.raises(RuntimeError, match="closed"):
            call()


def test_keyboard_interrupt_leaves_run_once():
    loop = oxloop.new_event_loop()
    try:

        def interrupt():
            raise KeyboardInterrupt

        loop.call_soon(interrupt)
        with pytest.raises(KeyboardInterrupt):
            loop.run_once()
        assert not loop.is_running()
    finally:
        loop.close()


def test_fileno_is_readable_when_a_watched_fd_or_another_thread_wakes_it():
    loop = oxloop.new_event_loop()
    a, b = socket.socketpair()
    try:
        fired = []
        loop.add_reader(a, lambda: fired.append(a.recv(10)))
        assert loop.next_timeout() is None
        assert select.select([loop.fileno()], [], [], 0)[0] == []
        b.send(b"x")
        assert select.select([loop.fileno()], [], [], 5)[0] == [loop.fileno()]
        loop.run_once(0)
        assert fired == [b"x"]
        assert loop.next_timeout() is None  # also arms the cross-thread wake-up
        threading.Thread(target=loop.call_soon_threadsafe, args=(fired.append, "thread")).start()
        assert select.select([loop.fileno()], [], [], 5)[0] == [loop.fileno()]
        loop.run_once(0)
        assert fired == [b"x", "thread"]
        loop.remove_reader(a)
    finally:
        a.close()
        b.close()
        loop.close()


# ---------------------------------------------------------------- foreign loops ----------


def test_sched_events_run_on_the_loop(loop):
    log = []
    scheduler = sched.scheduler(time.monotonic)
    start = loop.time()
    add_source(loop, SchedSource(scheduler))
    scheduler.enter(0.02, 1, log.append, ("b",))
    scheduler.enter(0.01, 1, log.append, ("a",))

    def from_the_loop():
        scheduler.enter(0.005, 1, log.append, ("from a loop callback",))

    loop.call_soon(from_the_loop)
    threading.Thread(target=scheduler.enter, args=(0.03, 1, log.append, ("from a thread",))).start()

    async def until():
        while len(log) < 4:
            await asyncio.sleep(0.005)

    run(loop, until())
    assert set(log) == {"a", "b", "from a loop callback", "from a thread"}
    assert loop.time() >= start + 0.03


def test_sched_with_a_wall_clock_timefunc(loop):
    log = []
    scheduler = sched.scheduler(time.time)
    src = add_source(loop, SchedSource(scheduler))
    scheduler.enterabs(time.time() + 0.01, 0, log.append, ("wall",))
    assert src.deadline() is not None and src.deadline() <= loop.time() + 0.011

    async def until():
        while not log:
            await asyncio.sleep(0.002)

    run(loop, until())
    assert log == ["wall"]
    src.remove()
    assert "enterabs" not in scheduler.__dict__


def test_asyncio_loop_inside_oxloop(loop):
    foreign = asyncio.SelectorEventLoop()
    src = add_source(loop, AsyncioSource(foreign))
    a, b = socket.socketpair()

    async def echo_in_foreign():
        assert asyncio.get_running_loop() is foreign
        reader, writer = await asyncio.open_connection(sock=a)
        await asyncio.sleep(0.01)  # a foreign timer
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        return "foreign done"

    async def peer():
        assert asyncio.get_running_loop() is loop
        reader, writer = await asyncio.open_connection(sock=b)
        writer.write(b"hello\n")
        answer = await reader.readline()
        writer.close()
        return answer

    foreign_result = asyncio.run_coroutine_threadsafe(echo_in_foreign(), foreign)

    async def main():
        answer = await peer()
        return answer, await asyncio.wrap_future(foreign_result)

    assert run(loop, main()) == (b"HELLO\n", "foreign done")
    assert not foreign.is_running()
    loop.close()
    assert foreign.is_closed()
    assert src.loop is None


def test_asyncio_source_refuses_what_it_cannot_hook(loop):
    other = oxloop.new_event_loop()
    with pytest.raises(TypeError, match="OxloopSource"):
        AsyncioSource(other)
    other.close()
    with pytest.raises(TypeError, match="selector event loop"):
        AsyncioSource(object())
    closed = asyncio.SelectorEventLoop()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        AsyncioSource(closed)


def test_closing_the_outer_loop_closes_the_hooked_ones():
    outer = oxloop.new_event_loop()
    foreign = asyncio.SelectorEventLoop()
    inner = oxloop.new_event_loop()
    scheduler = sched.scheduler(time.monotonic)
    a, b = socket.socketpair()
    sources = [
        add_source(outer, SchedSource(scheduler)),
        add_source(outer, AsyncioSource(foreign)),
        add_source(outer, OxloopSource(inner)),
        add_recorder(outer, a),
    ]
    foreign_fds = {key.fd for key in foreign._selector.get_map().values()}
    watched = foreign_fds | {inner.fileno(), a.fileno()}
    assert all(outer._selector.get_map().get(fd) is not None for fd in watched)
    scheduler.enter(60, 0, print)
    ran = []
    inner.call_soon(ran.append, "inner")
    sources[2].update()
    outer.call_soon(outer.stop)
    outer.run_forever()
    outer.run_once(0)
    assert ran == ["inner"]

    outer.close()
    assert foreign.is_closed()
    assert inner.is_closed()
    assert sources[3].log == ["closed"]
    assert sources[3].closed_with_fd_watched is False
    assert all(src.loop is None for src in sources)
    assert "enterabs" not in scheduler.__dict__
    assert len(scheduler.queue) == 1  # sched's queue is left as it was
    a.close()
    b.close()


def test_oxloop_inside_oxloop(loop):
    inner = oxloop.new_event_loop()
    add_source(loop, OxloopSource(inner))

    async def inner_work():
        assert asyncio.get_running_loop() is inner
        await asyncio.sleep(0.01)
        return "inner"

    future = asyncio.run_coroutine_threadsafe(inner_work(), inner)

    async def main():
        assert asyncio.get_running_loop() is loop
        return await asyncio.wrap_future(future)

    assert run(loop, main()) == "inner"
    assert not inner.is_closed()
    loop.close()
    assert inner.is_closed()


def test_an_idle_foreign_loop_is_not_polled(loop):
    foreign = asyncio.SelectorEventLoop()
    src = AsyncioSource(foreign)
    steps = []
    original_step = src.step
    src.step = lambda: (steps.append(1), original_step())
    add_source(loop, src)
    done = []
    foreign.call_soon_threadsafe(foreign.call_later, 0.05, done.append, True)

    async def until():
        while not done:
            await asyncio.sleep(0.01)

    run(loop, until())
    # Woken by the self-pipe, then by its timer: a handful of steps, not one per cycle
    # of a spinning loop.
    assert 1 <= len(steps) < 10
    assert src.deadline() is None


def test_keyboard_interrupt_in_a_foreign_loop_leaves_the_outer_loop(loop):
    foreign = asyncio.SelectorEventLoop()
    add_source(loop, AsyncioSource(foreign))

    def interrupt():
        raise KeyboardInterrupt

    foreign.call_soon_threadsafe(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert asyncio._get_running_loop() is None
    # Both loops go on working afterwards.
    future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "again"), foreign)
    assert run(loop, asyncio.wrap_future(future)) == "again"
