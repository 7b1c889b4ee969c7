"""oxloop.wire: the aiowire model (EventLoop, Wire, Call, >>, *, Repeat, Forever, Poller)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from conftest import run

from oxloop.wire import (
    POLLIN,
    POLLOUT,
    Call,
    EventLoop,
    Forever,
    Poller,
    Repeat,
    Sequence,
    UnhandledException,
    Wire,
)


def test_the_seed_show_event_program(loop):
    """aiowire's first example: two wires share a counter under a 1 s timeout."""
    lines = []
    event = 0

    async def show_event(ev):
        nonlocal event
        lines.append("Running...")
        event += 1
        await asyncio.sleep(event * 0.15)
        lines.append(f"Event {event}")
        if event < 5:
            return show_event

    async def main():
        async with EventLoop(timeout=1) as ev:
            ev.start(show_event)
            ev.start(show_event)
        return ev

    started = time.monotonic()
    ev = run(loop, main())
    assert time.monotonic() - started >= 1.0
    assert ev.timed_out
    # Five runs started; the fifth (event 5, sleeping 0.75 s) was cancelled.
    assert lines.count("Running...") == 5
    assert lines[:3] == ["Running...", "Running...", "Event 2"]
    assert "Event 4" in lines


def test_the_seed_beeps_program(loop):
    """aiowire's second example: four beeps 0.1 s apart, one after another."""
    out = []
    prog = (Call(asyncio.sleep, 0.1) >> Call(out.append, "beep\a")) * 4

    async def main():
        async with EventLoop() as ev:
            ev.start(prog)
        return ev

    started = time.monotonic()
    ev = run(loop, main())
    assert out == ["beep\a"] * 4
    assert time.monotonic() - started >= 0.4  # never early: the sleeps ran in sequence
    assert not ev.timed_out


def _recorder(trace, name, delay=0.0):
    async def step(ev):
        trace.append(f"{name}+")
        await asyncio.sleep(delay)
        trace.append(f"{name}-")

    step.__qualname__ = name
    return step


def test_sequence_runs_strictly_in_order(loop):
    """`a >> b >> c` is `(a >> b) >> c`: aiowire ran b and c at the same time."""
    left, right = [], []

    def wires(trace):
        return (_recorder(trace, n, d) for n, d in (("a", 0.03), ("b", 0.02), ("c", 0.01)))

    a, b, c = wires(left)
    x, y, z = wires(right)

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(Wire(a) >> b >> c)
            ev.start(x >> (Wire(y) >> z))  # the other grouping, concurrently

    run(loop, main())
    assert left == right == ["a+", "a-", "b+", "b-", "c+", "c-"]


def test_sequence_follows_the_chain_a_wire_hands_on(loop):
    """`a >> b`: the wires `a` hands on run before `b`."""
    trace = []

    async def a(ev):
        trace.append("a")
        return Call(trace.append, "a's next")

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(Wire(a) >> Call(trace.append, "b"))

    run(loop, main())
    assert trace == ["a", "a's next", "b"]


def test_a_composed_wire_runs_any_number_of_times(loop):
    count = []
    prog = Call(count.append, 1) * 3
    twice = prog >> prog

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(prog)
            ev.start(prog)
            ev.start(twice)
        async with EventLoop(timeout=5) as ev:
            ev.start(Repeat(prog, 2))

    run(loop, main())
    assert len(count) == 3 + 3 + 6 + 6


def test_wire_passes_arguments_and_hands_on_its_result(loop):
    got = []

    def sync_step(ev, x, *, y):
        got.append((type(ev).__name__, x, y))
        return Call(got.append, "next")

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(Wire(sync_step, 1, y=2))
            ev.start(lambda ev: None)  # a plain function of the loop is a wire too

    run(loop, main())
    assert got == [("EventLoop", 1, 2), "next"]


def test_call_awaits_async_functions_and_ignores_results(loop):
    got = []

    async def fetch(x):
        await asyncio.sleep(0)
        got.append(x)
        return "ignored, not a wire"

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(Call(fetch, 1) >> Call(fetch, 2))

    run(loop, main())
    assert got == [1, 2]


def test_wires_start_wires_and_the_run_waits_for_them(loop):
    got = []

    async def parent(ev):
        ev.start(Call(asyncio.sleep, 0.05) >> Call(got.append, "child"))
        got.append("parent")

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(parent)
        return ev

    ev = run(loop, main())
    assert got == ["parent", "child"]
    assert not ev.timed_out


def test_timeout_is_a_deadline_for_the_whole_run(loop):
    finished = []

    async def sleeper(ev):
        try:
            await asyncio.sleep(30)
        finally:
            finished.append("cancelled")

    async def main():
        async with EventLoop(timeout=0.1) as ev:
            ev.start(Forever(Call(asyncio.sleep, 0.01)))
            ev.start(sleeper)
        return ev

    started = time.monotonic()
    ev = run(loop, main())
    assert ev.timed_out
    assert finished == ["cancelled"]
    assert time.monotonic() - started >= 0.1


def test_forever_gives_way_to_other_wires(loop):
    """A Forever of a function that never awaits does not starve the others."""
    spins = []

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(Forever(Call(spins.append, 1)))
            await asyncio.sleep(0.02)  # the block's own awaits run alongside the wires
            ev.start(Call(asyncio.sleep, 0.02) >> Call(ev.start, Call(_raise_stop)))

    with pytest.raises(UnhandledException, match="Stop"):
        run(loop, main())
    assert len(spins) > 1


class _Stop(Exception):
    pass


def _raise_stop():
    raise _Stop()


def test_a_bad_return_value_names_the_wire_and_cancels_the_others(loop):
    cancelled = []

    async def sleeper(ev):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def returns_five(ev):
        return 5

    async def main():
        async with EventLoop(timeout=20) as ev:
            ev.start(sleeper)
            ev.start(returns_five)

    with pytest.raises(UnhandledException, match="returns_five") as info:
        run(loop, main())
    assert isinstance(info.value.__cause__, TypeError)
    assert "returned 5" in str(info.value.__cause__)
    assert cancelled == [True]


def test_an_exception_goes_to_the_handler(loop):
    seen = []

    def handler(ev, exc):
        seen.append(exc)

    async def fails(ev):
        raise ValueError("boom")

    def fails_at_once(ev):
        raise KeyError("sync")

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(fails, handler)
            ev.start(fails_at_once, handler)
            ev.start(Wire(lambda ev: "nope") >> Call(seen.append, "never"), handler)
            ev.start(Call(seen.append, "others run on"))

    run(loop, main())
    kinds = sorted(type(e).__name__ for e in seen if isinstance(e, BaseException))
    assert kinds == ["KeyError", "TypeError", "ValueError"]
    assert "others run on" in seen and "never" not in seen


def test_an_async_handler_is_awaited_and_may_raise(loop):
    async def handler(ev, exc):
        await asyncio.sleep(0)
        raise RuntimeError(f"handled {exc}")

    async def main():
        async with EventLoop(timeout=5) as ev:
            ev.start(Call(_raise_stop), handler)

    with pytest.raises(RuntimeError, match="handled"):
        run(loop, main())


def test_an_exception_in_the_block_cancels_the_wires(loop):
    cancelled = []

    async def sleeper(ev):
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.append(True)

    async def main():
        async with EventLoop(timeout=20) as ev:
            ev.start(sleeper)
            await asyncio.sleep(0)
            raise _Stop()

    with pytest.raises(_Stop):
        run(loop, main())
    assert cancelled == [True]


def test_misuse_is_refused_clearly(loop):
    async def main():
        ev = EventLoop()
        with pytest.raises(RuntimeError, match="entered"):
            ev.start(Call(print))
        async with ev:
            with pytest.raises(TypeError, match="wire"):
                ev.start(42)
        with pytest.raises(RuntimeError, match="finished"):
            ev.start(Call(print))
        with pytest.raises(RuntimeError, match="runs once"):
            async with ev:
                pass

    run(loop, main())
    with pytest.raises(TypeError):
        Call(print) * 1.5
    with pytest.raises(ValueError):
        Repeat(Call(print), -1)
    with pytest.raises(TypeError):
        Sequence(Call(print), 3)
    with pytest.raises(ValueError):
        EventLoop(timeout=-1)
    with pytest.raises(ValueError, match="POLLIN"):
        Poller({}, default_flags=4)


def test_wires_mix_with_plain_asyncio_code():
    """The same wires on asyncio's own loop, next to ordinary tasks."""
    got = []

    async def main():
        other = asyncio.create_task(asyncio.sleep(0.01, "plain"))
        async with EventLoop(timeout=5) as ev:
            ev.start(Call(asyncio.sleep, 0.01) >> Call(got.append, "wire"))
        got.append(await other)

    asyncio.run(main())
    assert got == ["wire", "plain"]


# ----------------------------------------------------------------------- Poller


def test_poller_starts_wires_for_sockets_and_fds(loop):
    a, b = socket.socketpair()
    r, w = os.pipe()
    got = []
    try:
        a.setblocking(False)
        poller = Poller()

        async def on_socket(ev):
            got.append(a.recv(100))
            if len(got) == 2:
                poller.shutdown()

        def on_pipe(ev):
            got.append(os.read(r, 100))
            b.send(b"from the socket")

        poller.register(a, on_socket)
        poller.register(r, on_pipe)

        async def main():
            async with EventLoop(timeout=5) as ev:
                ev.start(poller >> Call(got.append, "after shutdown"))
                os.write(w, b"from the pipe")
            return ev

        ev = run(loop, main())
        assert got == [b"from the pipe", b"from the socket", "after shutdown"]
        assert not ev.timed_out
        assert loop._fd_handles(a.fileno()) == (None, None)
    finally:
        for s in (a, b):
            s.close()
        os.close(r)
        os.close(w)


def test_poller_runs_one_wire_per_fd_at_a_time(loop):
    """A wire that reads its input late is not started again while it runs."""
    a, b = socket.socketpair()
    starts = []
    try:
        a.setblocking(False)

        async def slow_reader(ev):
            starts.append(1)
            await asyncio.sleep(0.05)
            a.recv(100)

        async def main():
            async with EventLoop(timeout=0.3) as ev:
                ev.start(Poller({a: slow_reader}))
                b.send(b"x")

        run(loop, main())
        assert starts == [1]
    finally:
        a.close()
        b.close()


def test_poller_writable_and_unregister(loop):
    a, b = socket.socketpair()
    got = []
    try:
        poller = Poller()

        def writable(ev):
            got.append("writable")
            poller.unregister(a)
            with pytest.raises(KeyError):
                poller.unregister(a)
            poller.shutdown()

        poller.register(a, writable, POLLOUT)

        async def main():
            async with EventLoop(timeout=5) as ev:
                ev.start(poller)

        run(loop, main())
        assert got == ["writable"]
    finally:
        a.close()
        b.close()


def test_poller_refuses_a_second_registration_of_an_fd():
    a, b = socket.socketpair()
    try:
        poller = Poller({a: Call(print)})
        with pytest.raises(ValueError, match="already registered"):
            poller.register(a.fileno(), Call(print), POLLIN)
        with pytest.raises(TypeError, match="fileno"):
            poller.register(object(), Call(print))
    finally:
        a.close()
        b.close()


def test_poller_wire_failure_reaches_the_handler_of_its_chain(loop):
    a, b = socket.socketpair()
    seen = []
    try:
        poller = Poller()

        def bad(ev):
            a.recv(100)
            return "not a wire"

        def handler(ev, exc):
            seen.append(exc)
            poller.shutdown()

        poller.register(a, bad)

        async def main():
            async with EventLoop(timeout=5) as ev:
                ev.start(poller, handler)
                b.send(b"x")

        run(loop, main())
        assert len(seen) == 1 and isinstance(seen[0], TypeError)
    finally:
        a.close()
        b.close()


def test_poller_with_zmq_sockets(loop):
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    got = []
    try:
        a.bind("inproc://poller-test")
        b.connect("inproc://poller-test")
        poller = Poller()

        def on_message(ev):
            # Read one message only: the rest must still be noticed (zmq's FD is
            # edge-triggered, so the Poller looks at EVENTS again after each wire).
            got.append(a.recv(zmq.NOBLOCK))
            if len(got) == 3:
                poller.shutdown()

        poller.register(a, on_message)

        async def main():
            async with EventLoop(timeout=5) as ev:
                ev.start(poller)
                for m in (b"1", b"2", b"3"):
                    b.send(m)
            return ev

        ev = run(loop, main())
        assert got == [b"1", b"2", b"3"]
        assert not ev.timed_out
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()


def test_poller_with_zmq_asyncio_sockets_the_seed_echo(loop):
    """The seed's Poller example: `echo` wire on a zmq.asyncio socket."""
    zmq = pytest.importorskip("zmq")
    zmq_asyncio = pytest.importorskip("zmq.asyncio")
    ctx = zmq_asyncio.Context()
    sock, peer = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        sock.bind("inproc://poller-echo")
        peer.connect("inproc://poller-echo")
        poller = Poller()

        async def echo(ev):
            await sock.send(await sock.recv())

        poller.register(sock, echo)

        async def main():
            async with EventLoop(timeout=5) as ev:
                ev.start(poller)
                replies = []
                for m in (b"one", b"two"):
                    await peer.send(m)
                    replies.append(await peer.recv())
                poller.shutdown()
            return replies

        assert run(loop, main()) == [b"one", b"two"]
    finally:
        sock.close(linger=0)
        peer.close(linger=0)
        ctx.term()
