"""oxloop.green: the loop API, tasks and the tools between them, through the public API."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
from conftest import open_fds

from oxloop import green


@pytest.fixture
def evloop():
    """A fresh green loop for the thread, destroyed afterwards, with no fd left open."""
    before = open_fds()
    ev = green.EventLoop()
    try:
        yield ev
    finally:
        ev.destroy()
    assert open_fds() <= before


def test_current_loop_and_task(evloop):
    assert green.EventLoop.current() is evloop
    assert green.current.loop is evloop
    seen = []
    task = green.spawn(lambda: seen.append(green.current.task))
    evloop.run()
    assert seen == [task]
    with pytest.raises(RuntimeError):
        green.EventLoop()


def test_callbacks_take_args_and_kwargs_and_cancel(evloop):
    out = []
    evloop.call_soon(lambda *a, **kw: out.append(("soon", a, kw)), 1, k=2)
    evloop.call_later(0.01, out.append, "later")
    evloop.call_at(evloop.time() + 0.005, out.append, "at")
    evloop.call_later(0.01, out.append, "cancelled").cancel()
    evloop.call_soon(out.append, "cancelled too").cancel()
    evloop.call_later(-1, out.append, "negative delay")
    evloop.run()
    assert out == [("soon", (1,), {"k": 2}), "negative delay", "at", "later"]


def test_call_from_thread(evloop):
    out = []
    done = green.Event()

    def from_thread():
        evloop.call_from_thread(lambda x, y=0: (out.append(x + y), done.set()), 1, y=2)

    threading.Thread(target=from_thread).start()
    assert done.wait(5)
    assert out == [3]
    evloop.call_from_thread(out.append, "cancelled").cancel()
    evloop.run()  # nothing is counted as left to do
    assert out == [3]


def test_readers_and_writers(evloop):
    r, w = os.pipe()
    try:
        got = []

        def readable(fd, tag=None):
            got.append((os.read(fd, 10), tag))
            evloop.remove_reader(fd)

        evloop.add_reader(r, readable, r, tag="t")
        with pytest.raises(RuntimeError):
            evloop.add_reader(r, readable, r)
        writer = evloop.add_writer(w, lambda: (os.write(w, b"hi"), writer.cancel()))
        evloop.run()
        assert got == [(b"hi", "t")]
        assert not evloop.remove_reader(r)
        assert not evloop.remove_writer(w)
    finally:
        os.close(r)
        os.close(w)


def test_several_signal_handlers(evloop):
    out = []
    first = evloop.add_signal_handler(signal.SIGUSR1, out.append, "first")
    evloop.add_signal_handler(signal.SIGUSR1, out.append, "second")
    evloop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    green.sleep(0.2)
    while len(out) < 2:
        green.sleep(0.05)
    assert sorted(out) == ["first", "second"]
    first.cancel()
    out.clear()
    os.kill(os.getpid(), signal.SIGUSR1)
    while not out:
        green.sleep(0.05)
    assert out == ["second"]
    assert evloop.remove_signal_handler(signal.SIGUSR1)
    assert not evloop.remove_signal_handler(signal.SIGUSR1)
    evloop.run()  # nothing left: returns at once


def test_run_goes_on_while_callbacks_schedule_more(evloop):
    out = []

    def chain(n):
        out.append(n)
        if n < 3:
            evloop.call_later(0.001, chain, n + 1)
            green.spawn(out.append, f"task {n}")

    evloop.call_soon(chain, 0)
    evloop.run()
    assert out == [0, "task 0", 1, "task 1", 2, "task 2", 3]


def test_run_forever_and_stop(evloop):
    out = []
    evloop.call_later(0.01, lambda: (out.append("x"), evloop.stop()))
    evloop.run_forever()
    assert out == ["x"]


def test_switch_starts_the_loop(evloop):
    main = green.current.task
    evloop.call_soon(main.switch, "back")
    assert evloop.switch() == "back"


def test_tasks_interleave_and_return(evloop):
    order = []

    def worker(name, n):
        for i in range(n):
            order.append((name, i))
            green.sleep(0)
        return name * 2

    a = green.Task(worker, args=("a", 2), name="first").start()
    b = green.spawn(worker, "b", 2)
    assert a.name == "first"
    assert a.join() and b.join()
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert (a.result(), b.result()) == ("aa", "bb")


def test_kill_and_join_timeout(evloop):
    cleaned = []

    def sleeper():
        try:
            green.sleep(60)
        finally:
            cleaned.append(True)

    task = green.spawn(sleeper)
    assert not task.join(timeout=0.02)
    assert task.is_alive()
    task.kill()
    assert task.join(timeout=5)
    assert cleaned == [True] and not task.is_alive() and task.exception is None
    never = green.Task(sleeper)
    never.kill()
    assert never.join(5) and cleaned == [True]


def test_a_task_that_raises_is_reported_and_others_go_on(evloop):
    reported = []
    evloop.loop.set_exception_handler(lambda loop, ctx: reported.append(ctx))

    def bad():
        green.sleep(0)
        raise ValueError("bad task")

    def good():
        for _ in range(3):
            green.sleep(0)
        return "ok"

    tasks = [green.spawn(bad), green.spawn(good)]
    evloop.run()
    assert tasks[1].result() == "ok"
    assert isinstance(tasks[0].exception, ValueError)
    assert len(reported) == 1 and isinstance(reported[0]["exception"], ValueError)
    assert reported[0]["task"] is tasks[0]


def test_hundreds_of_tasks(evloop):
    counter = green.Semaphore(0)
    tasks = [
        green.spawn(lambda i=i: (green.sleep(0.001 * (i % 5)), counter.release()))
        for i in range(500)
    ]
    for task in tasks:
        task.join()
    assert counter._value == 500


def test_channel_rendezvous_and_exceptions(evloop):
    ch = green.Channel()
    got = []

    def receiver():
        got.append(ch.receive())
        try:
            ch.receive()
        except KeyError as exc:
            got.append(exc.args)

    task = green.spawn(receiver)
    ch.send("value")
    ch.send_exception(KeyError("k"))
    task.join()
    assert got == ["value", ("k",)]
    with pytest.raises(TimeoutError):
        ch.receive(timeout=0.01)


def test_event_semaphores_and_locks(evloop):
    event = green.Event()
    waiting = [green.spawn(event.wait) for _ in range(3)]
    green.sleep(0)
    assert not event.wait(0.01)
    event.set()
    assert all(t.join(5) for t in waiting)
    assert event.wait()

    sem = green.BoundedSemaphore(2)
    active, peak = [0], [0]

    def limited():
        with sem:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            green.sleep(0.001)
            active[0] -= 1

    for t in [green.spawn(limited) for _ in range(10)]:
        t.join()
    assert peak[0] == 2
    with pytest.raises(ValueError):
        sem.release()
    assert sem.acquire() and sem.acquire() and not sem.acquire(timeout=0.01)

    lock = green.RLock()
    with lock, lock:
        other = green.spawn(lambda: lock.acquire(timeout=0.01))
        assert other.join(5) and other.result() is False
    assert green.spawn(lambda: lock.acquire(blocking=False)).join()


def test_condition(evloop):
    cond = green.Condition()
    items = []

    def consumer():
        with cond:
            cond.wait_for(lambda: items)
            return items.pop()

    task = green.spawn(consumer)
    green.sleep(0)
    with cond:
        items.append("x")
        cond.notify()
    task.join()
    assert task.result() == "x"
    with cond:
        assert not cond.wait(0.01)


def test_queues(evloop):
    q = green.Queue(maxsize=2)
    out = []

    def producer():
        for i in range(5):
            q.put(i)

    def consumer():
        for _ in range(5):
            out.append(q.get())
            q.task_done()

    tasks = [green.spawn(producer), green.spawn(consumer)]
    q.join()
    for t in tasks:
        t.join()
    assert out == [0, 1, 2, 3, 4]
    with pytest.raises(green.Empty):
        q.get(timeout=0.01)
    q.put(1)
    q.put(2)
    with pytest.raises(green.Full):
        q.put_nowait(3)

    lifo, prio = green.LifoQueue(), green.PriorityQueue()
    for i in (2, 3, 1):
        lifo.put(i)
        prio.put(i)
    assert [lifo.get() for _ in range(3)] == [1, 3, 2]
    assert [prio.get() for _ in range(3)] == [1, 2, 3]


def test_timeout(evloop):
    with pytest.raises(green.Timeout):
        with green.Timeout(0.01):
            green.sleep(10)
    with green.Timeout(0.01, False):
        green.sleep(10)
    with pytest.raises(KeyError):
        with green.Timeout(0.01, KeyError):
            green.Event().wait()
    with green.Timeout(5):
        green.sleep(0)
    # The main greenlet's waits leave the loop free, a timeout too.
    assert not evloop.loop.is_running()


def test_task_pool_executor(evloop):
    running, peak = [0], [0]

    def job(i):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        green.sleep(0.001)
        running[0] -= 1
        if i == 3:
            raise ValueError(i)
        return i * i

    with green.TaskPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(job, i) for i in range(10)]
        assert list(pool.map(lambda x: x + 1, range(5))) == [1, 2, 3, 4, 5]
    assert peak[0] <= 4
    assert [f.result() for f in futures if f.exception() is None] == [
        i * i for i in range(10) if i != 3
    ]
    with pytest.raises(ValueError):
        futures[3].result()


def test_green_and_asyncio_on_one_loop(evloop):
    loop = evloop.loop

    def blocking_style(x):
        green.sleep(0.01)
        got = green.wait(asyncio.sleep(0.01, result=x + 1))  # asyncio from green
        return got * 2

    async def main():
        assert asyncio.get_running_loop() is loop
        results = await asyncio.gather(*(green.run(blocking_style, i) for i in range(20)))
        with pytest.raises(ZeroDivisionError):
            await green.run(lambda: 1 / 0)
        return results

    assert loop.run_until_complete(main()) == [(i + 1) * 2 for i in range(20)]
    # From the main greenlet too: waits run the loop until done, then leave it free.
    assert green.wait(asyncio.sleep(0, result="ok")) == "ok"
    assert not loop.is_running()


def test_cancelling_the_awaiting_coroutine_kills_the_task(evloop):
    ended = green.Event()

    def slow():
        try:
            green.sleep(60)
        finally:
            ended.set()

    async def main():
        task = asyncio.ensure_future(green.run(slow))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)

    evloop.loop.run_until_complete(main())
    assert ended.is_set()


def test_blocking_call_in_the_loop_greenlet_is_refused(evloop):
    async def main():
        with pytest.raises(RuntimeError):
            green.sleep(0)

    evloop.loop.run_until_complete(main())


def test_stop_while_the_main_greenlet_waits_raises_loop_exit(evloop):
    evloop.call_later(0.01, evloop.stop)
    with pytest.raises(green.LoopExit):
        green.Event().wait()
    assert not evloop.loop.is_running()


def test_contextvars_do_not_leak_between_tasks(evloop):
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    seen = []
    for i in range(3):
        green.spawn(lambda i=i: (seen.append(var.get()), var.set(i)))
    evloop.run()
    assert seen == ["unset"] * 3


def test_a_green_loop_per_thread():
    results = []

    def in_thread():
        ev = green.EventLoop.current()  # this thread's own loop
        try:
            a, b = green.socketpair()
            with a, b:
                task = green.spawn(lambda: b.recv(10))
                green.sleep(0.01)
                a.send(b"thread")
                task.join(5)
                results.append((task.result(), ev.loop is not main_loop))
        finally:
            ev.destroy()

    main_ev = green.EventLoop()
    main_loop = main_ev.loop
    try:
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(10)
    finally:
        main_ev.destroy()
    assert results == [(b"thread", True)]
