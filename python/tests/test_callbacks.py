"""Callbacks, timers, handles, futures and tasks with asyncio's semantics."""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading
import time

import pytest
from conftest import run

VAR = contextvars.ContextVar("VAR", default="unset")


def test_call_soon_fifo(loop):
    seen = []
    for i in range(100):
        loop.call_soon(seen.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == list(range(100))


@pytest.mark.parametrize("factory", ["asyncio", "oxloop"])
def test_calls_from_threads_keep_fifo_order_with_call_soon(factory):
    # asyncio keeps one FIFO queue for call_soon and call_soon_threadsafe: a call from
    # another thread made after a call_soon runs after it, and before a later one.
    import oxloop

    loop = oxloop.new_event_loop() if factory == "oxloop" else asyncio.new_event_loop()
    out = []

    def from_thread(name):
        t = threading.Thread(target=loop.call_soon_threadsafe, args=(out.append, name))
        t.start()
        t.join()

    try:
        loop.call_soon(out.append, "a")
        from_thread("b")
        loop.call_soon(out.append, "c")
        from_thread("d")
        from_thread("e")
        loop.call_soon(out.append, "f")
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert out == ["a", "b", "c", "d", "e", "f"]
    finally:
        loop.close()


def test_callback_added_during_iteration_runs_next(loop):
    seen = []

    def first():
        seen.append("first")
        loop.call_soon(seen.append, "added")

    loop.call_soon(first)
    loop.call_soon(seen.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # "added" was scheduled during the iteration: it runs in the next one.
    assert seen == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["first", "second", "added"]


def test_call_soon_rejects_coroutines_in_debug_mode(loop):
    loop.set_debug(True)  # asyncio checks callbacks in debug mode only

    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.call_soon(coro_fn)
    coro = coro_fn()
    with pytest.raises(TypeError):
        loop.call_soon(coro)
    coro.close()


def test_call_later_never_early(loop):
    results = []

    def fire(delay, start):
        results.append((delay, time.monotonic() - start, loop.time()))

    start = time.monotonic()
    begin_loop = loop.time()
    for delay in (0.05, 0.01, 0.03, 0.0, 0.02):
        loop.call_later(delay, fire, delay, start)
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    assert [d for d, _, _ in results] == [0.0, 0.01, 0.02, 0.03, 0.05]
    for delay, elapsed, at in results:
        assert elapsed >= delay
        assert at - begin_loop >= delay


def test_call_at_never_early(loop):
    seen = []
    when = loop.time() + 0.03
    loop.call_at(when, lambda: seen.append(loop.time()))
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert seen and seen[0] >= when


def test_loop_time_is_monotonic(loop):
    a = loop.time()
    b = time.monotonic()
    assert abs(a - b) < 1.0
    assert loop.time() >= a


def test_timers_same_deadline_keep_order(loop):
    seen = []
    when = loop.time() + 0.01
    for i in range(20):
        loop.call_at(when, seen.append, i)
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert seen == list(range(20))


def test_timer_handle_cancel_and_when(loop):
    seen = []
    when = loop.time() + 0.02
    handle = loop.call_at(when, seen.append, "x")
    assert handle.when() == when
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    handle.cancel()
    later = loop.call_later(0.01, seen.append, "y")
    assert later.when() >= loop.time()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert seen == ["y"]


def test_handle_cancel(loop):
    seen = []
    handle = loop.call_soon(seen.append, 1)
    handle.cancel()
    assert handle.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == []


def test_cancel_timer_from_callback(loop):
    seen = []
    t2 = loop.call_later(0.02, seen.append, "t2")
    loop.call_later(0.01, t2.cancel)
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert seen == []


def test_call_later_negative_and_zero(loop):
    seen = []
    loop.call_later(-5, seen.append, "neg")
    loop.call_later(0, seen.append, "zero")
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert seen == ["neg", "zero"]


def test_context_argument(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in-ctx")
    seen = []
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_later(0, lambda: seen.append(VAR.get()), context=ctx)
    loop.call_at(loop.time(), lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon(lambda: seen.append(VAR.get()))
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    # asyncio's order: the queued callbacks, then the timers that are due.
    assert seen == ["in-ctx", "unset", "in-ctx", "in-ctx"]


def test_context_changes_stay_in_context(loop):
    ctx = contextvars.copy_context()
    loop.call_soon(VAR.set, "changed", context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ctx[VAR] == "changed"
    assert VAR.get() == "unset"


def test_call_soon_threadsafe_from_several_threads(loop):
    seen = []
    per_thread = 200
    nthreads = 4
    done = threading.Barrier(nthreads + 1)

    def producer(tid):
        for i in range(per_thread):
            loop.call_soon_threadsafe(seen.append, (tid, i))
        done.wait()

    def check():
        if len(seen) == per_thread * nthreads:
            loop.stop()
        else:
            loop.call_later(0.005, check)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    loop.call_soon(check)
    loop.call_later(10, loop.stop)
    loop.run_forever()
    done.wait(timeout=10)
    for t in threads:
        t.join()
    assert len(seen) == per_thread * nthreads
    for tid in range(nthreads):
        # Each thread's callbacks run in the order it added them.
        assert [i for t, i in seen if t == tid] == list(range(per_thread))


def test_call_soon_threadsafe_wakes_idle_loop(loop):
    woke = []

    def later():
        time.sleep(0.05)
        loop.call_soon_threadsafe(woke.append, True)
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=later).start()
    safety = loop.call_later(10, loop.stop)
    loop.run_forever()
    safety.cancel()
    assert woke == [True]


def test_handle_repr(loop):
    def my_callback():
        pass

    handle = loop.call_soon(my_callback)
    assert "my_callback" in repr(handle)
    handle.cancel()
    assert "cancelled" in repr(handle)
    timer = loop.call_later(10, my_callback)
    assert "when=" in repr(timer) and "my_callback" in repr(timer)
    timer.cancel()


def test_handle_repr_debug_created_at(loop):
    loop.set_debug(True)

    def my_callback():
        pass

    handle = loop.call_soon(my_callback)
    assert "created at" in repr(handle)
    assert __file__.rsplit("/", 1)[-1] in repr(handle)
    handle.cancel()


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    loop.call_later(0.01, fut.set_result, 3)
    assert run(loop, fut) == 3


def test_create_task_name_and_current_task(loop):
    async def body():
        return asyncio.current_task()

    async def main():
        task = loop.create_task(body(), name="worker")
        assert task.get_name() == "worker"
        return task, await task

    task, inner = run(loop, main())
    assert inner is task


@pytest.mark.skipif(sys.version_info < (3, 11), reason="create_task(context=) is new in 3.11")
def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task-ctx")

    async def body():
        return VAR.get()

    async def main():
        return await loop.create_task(body(), context=ctx)

    assert run(loop, main()) == "task-ctx"


def test_task_factory(loop):
    made = []

    def factory(lp, coro, **kwargs):
        task = asyncio.Task(coro, loop=lp, **kwargs)
        made.append(task)
        return task

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        t = loop.create_task(asyncio.sleep(0, result=1), name="named")
        assert t.get_name() == "named"
        return await t

    assert run(loop, main()) == 1
    assert len(made) >= 2
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    with pytest.raises(TypeError):
        loop.set_task_factory(42)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is new in 3.11")
def test_task_group(loop):
    async def child(i):
        await asyncio.sleep(0.001 * i)
        return i

    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(child(i)) for i in range(10)]
        return [t.result() for t in tasks]

    assert run(loop, main()) == list(range(10))

    async def failing():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.sleep(3600))
            tg.create_task(child(1))
            tg.create_task(_raise())

    with pytest.raises(ExceptionGroup):  # noqa: F821 (3.11+)
        run(loop, failing())


async def _raise():
    await asyncio.sleep(0)
    raise ValueError("in group")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    order = []

    async def body():
        order.append("body")
        return 1

    async def main():
        task = loop.create_task(body())
        order.append("after create")
        # Eager: the coroutine ran to completion inside create_task.
        assert task.done()
        return await task

    assert run(loop, main()) == 1
    assert order == ["body", "after create"]


def test_gather_and_wait_for(loop):
    async def main():
        results = await asyncio.gather(*(asyncio.sleep(0.001, result=i) for i in range(50)))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        return results

    assert run(loop, main()) == list(range(50))


def test_task_cancel(loop):
    async def main():
        task = loop.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(loop, main())


def test_call_later_huge_and_infinite_delays(loop):
    seen = []
    far = loop.call_later(1e12, seen.append, "far")
    inf = loop.call_later(float("inf"), seen.append, "inf")
    at_inf = loop.call_at(float("inf"), seen.append, "at-inf")
    assert inf.when() == float("inf")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == []
    for h in (far, inf, at_inf):
        h.cancel()


def test_call_at_in_the_past_runs_next_iteration(loop):
    seen = []

    def first():
        seen.append("first")
        loop.call_at(loop.time() - 100, seen.append, "past")

    loop.call_soon(first)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert seen == ["first", "past"]


def test_timer_cancelled_from_other_thread(loop):
    seen = []
    handle = loop.call_later(0.2, seen.append, "fired")
    t = threading.Thread(target=handle.cancel)
    t.start()
    t.join()
    loop.call_later(0.3, loop.stop)
    loop.run_forever()
    assert seen == [] and handle.cancelled()


def test_many_cancelled_timers(loop):
    seen = []
    handles = [loop.call_later(0.001 * (i % 10), seen.append, i) for i in range(5000)]
    for h in handles[::2]:
        h.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert sorted(seen) == list(range(1, 5000, 2))


def test_call_soon_threadsafe_after_close(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.call_soon_threadsafe(print)
    with pytest.raises(RuntimeError):
        loop.call_later(1, print)


def test_run_until_complete_future_of_other_loop(loop):
    import oxloop

    other = oxloop.new_event_loop()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_sleep_zero_fairness(loop):
    order = []

    async def worker(name):
        for i in range(3):
            order.append((name, i))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"))

    run(loop, main())
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


@pytest.mark.parametrize(
    "case",
    [
        "soon",
        "timer",
        "timer_cancel",
        "replace_reader",
        "remove_reader",
        "remove_reader_in_cb",
        "replace_reader_in_cb",
        "cancel_in_cb",
        "threadsafe",
    ],
)
def test_finalizer_scheduling_a_callback_when_the_loop_drops_a_handle(loop, case):
    """The loop drops handles (and so their arguments) at many points; a finalizer
    that then calls back into the loop must find it usable."""
    import gc
    import socket

    log = []

    class Finalized:
        def __del__(self):
            loop.call_soon(log.append, "finalized")

    def noop(*args):
        pass

    a, b = socket.socketpair()
    try:
        if case == "soon":
            loop.call_soon(noop, Finalized())
        elif case == "timer":
            loop.call_later(0.001, noop, Finalized())
        elif case == "timer_cancel":
            loop.call_later(100, noop, Finalized()).cancel()
        elif case == "replace_reader":
            loop.add_reader(b, noop, Finalized())
            loop.add_reader(b, noop)
        elif case == "remove_reader":
            loop.add_reader(b, noop, Finalized())
            loop.remove_reader(b)
        elif case == "remove_reader_in_cb":
            loop.add_reader(b, lambda f: loop.remove_reader(b), Finalized())
            a.send(b"x")
        elif case == "replace_reader_in_cb":
            loop.add_reader(b, lambda f: loop.add_reader(b, noop), Finalized())
            a.send(b"x")
        elif case == "cancel_in_cb":
            handles = [loop.call_later(100, noop, Finalized())]
            loop.call_soon(lambda: handles.pop().cancel())
        elif case == "threadsafe":
            loop.call_soon_threadsafe(noop, Finalized())
        loop.call_later(0.02, loop.stop)
        loop.run_forever()
        gc.collect()
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.remove_reader(b)
    finally:
        a.close()
        b.close()
    assert log == ["finalized"]


def test_loop_time_is_time_monotonic():
    # In a fresh process (the first loop there shows the offset every time):
    # time.monotonic() read after loop.time() is never behind it, on asyncio's loop.
    script = (
        "import time, oxloop\n"
        "lp = oxloop.new_event_loop()\n"
        "gaps = []\n"
        "for _ in range(1000):\n"
        "    t = lp.time()\n"
        "    gaps.append(time.monotonic() - t)\n"
        "print(min(gaps))\n"
    )
    assert _child_float(script) >= 0


def _child_float(script: str) -> float:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    return float(out.stdout)


def test_loop_time_is_time_monotonic_in_asyncio():
    lp = asyncio.SelectorEventLoop()
    try:
        gaps = []
        for _ in range(1000):
            t = lp.time()
            gaps.append(time.monotonic() - t)
        assert min(gaps) >= 0
    finally:
        lp.close()


def test_timers_never_early_against_time_monotonic(loop):
    early = []

    def check(when):
        now = time.monotonic()
        if now < when:
            early.append(when - now)

    count = [0]

    def schedule():
        count[0] += 1
        if count[0] > 100:
            loop.stop()
            return
        when = time.monotonic() + 0.001
        loop.call_at(when, check, when)
        # call_later's deadline is at least time.monotonic() + delay, read before it.
        floor = time.monotonic() + 0.001
        loop.call_later(0.001, check, floor)
        loop.call_later(0.002, schedule)

    loop.call_soon(schedule)
    loop.run_forever()
    assert early == []


def _busy_loop_early_timers(lp, spins=20_000):
    """call_at(time.monotonic() + 0.2 ms) scheduled from a loop that never waits:
    how much earlier than their deadline (on time.monotonic()) the timers ran."""
    early = []
    count = [0]

    def check(when):
        now = time.monotonic()
        if now < when:
            early.append(when - now)

    def spin():
        count[0] += 1
        if count[0] % 50 == 0:
            when = time.monotonic() + 0.0002
            lp.call_at(when, check, when)
        if count[0] < spins:
            lp.call_soon(spin)
        else:
            lp.call_later(0.01, lp.stop)

    lp.call_soon(spin)
    lp.run_forever()
    return early


def test_call_at_monotonic_deadline_on_busy_loop():
    script = (
        "import sys, oxloop\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_callbacks import _busy_loop_early_timers\n"
        "print(max(_busy_loop_early_timers(oxloop.new_event_loop()), default=0))\n"
    )
    assert _child_float(script) <= time.get_clock_info("monotonic").resolution


def test_call_at_monotonic_deadline_on_busy_asyncio_loop():
    lp = asyncio.SelectorEventLoop()
    try:
        early = _busy_loop_early_timers(lp)
        assert max(early, default=0) <= time.get_clock_info("monotonic").resolution
    finally:
        lp.close()
