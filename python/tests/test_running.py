"""Running and closing a loop: asyncio's rules for run_forever, run_until_complete,
stop, close, async generators, executors, threads, and the entry points."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading

import pytest
from conftest import run

import oxloop


def test_run_until_complete_returns_result(loop):
    async def main():
        await asyncio.sleep(0)
        return 7

    assert loop.run_until_complete(main()) == 7
    assert not loop.is_running()


def test_run_until_complete_raises_exception(loop):
    async def main():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(main())


def test_run_until_complete_accepts_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_forever_until_stop(loop):
    seen = []

    def cb():
        seen.append(loop.is_running())
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_stop_before_run_runs_one_iteration(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    loop.stop()
    loop.call_soon(seen.append, 2)
    loop.run_forever()
    # Both callbacks were scheduled before the iteration started.
    assert seen == [1, 2]
    later = []

    def again():
        later.append("a")
        loop.call_soon(later.append, "b")

    loop.call_soon(again)
    loop.stop()
    loop.run_forever()
    assert later == ["a"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert later == ["a", "b"]


def test_run_forever_can_run_again(loop):
    for i in range(3):
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert loop.run_until_complete(asyncio.sleep(0, result=i)) == i


def test_close_and_is_closed(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()  # twice is fine
    with pytest.raises(RuntimeError):
        loop.call_soon(print)
    with pytest.raises(RuntimeError):
        loop.run_forever()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        loop.run_until_complete(coro)
    coro.close()


def test_close_running_loop_raises(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(exc)
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert len(errors) == 1
    assert not loop.is_closed()


def test_run_while_running_raises(loop):
    async def main():
        with pytest.raises(RuntimeError):
            loop.run_forever()
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            loop.run_until_complete(coro)
        coro.close()
        return True

    assert run(loop, main())


def test_get_running_loop(loop):
    async def main():
        return asyncio.get_running_loop()

    assert run(loop, main()) is loop
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_second_loop_in_same_thread_raises(loop):
    other = oxloop.new_event_loop()
    try:

        async def main():
            coro = asyncio.sleep(0)
            with pytest.raises(RuntimeError):
                other.run_until_complete(coro)
            coro.close()
            with pytest.raises(RuntimeError):
                other.run_forever()
            return True

        assert run(loop, main())
        assert other.run_until_complete(asyncio.sleep(0, result=5)) == 5
    finally:
        other.close()


def test_loop_made_on_one_thread_runs_on_another():
    loop = oxloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def work(x):
            await asyncio.sleep(0.01)
            assert asyncio.get_running_loop() is loop
            return x * 2, threading.get_ident()

        futs = [asyncio.run_coroutine_threadsafe(work(i), loop) for i in range(20)]
        results = [f.result(timeout=10) for f in futs]
        assert [r[0] for r in results] == [i * 2 for i in range(20)]
        assert {r[1] for r in results} == {thread.ident}
        assert loop.is_running()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert not thread.is_alive()
        loop.close()


def test_run_coroutine_threadsafe_exception_and_cancel():
    loop = oxloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def fail():
            raise KeyError("k")

        with pytest.raises(KeyError):
            asyncio.run_coroutine_threadsafe(fail(), loop).result(timeout=10)
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(3600), loop)
        fut.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            fut.result(timeout=10)

        async def others_finished():
            me = asyncio.current_task()
            while any(t is not me for t in asyncio.all_tasks()):
                await asyncio.sleep(0)

        # The cancelled task ends on the loop's thread; let it before stopping (as on
        # asyncio's loop, a task still pending at close would be reported).
        asyncio.run_coroutine_threadsafe(others_finished(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_shutdown_asyncgens(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    async def main():
        gen = agen()
        assert await gen.__anext__() == 1
        # The loop's firstiter hook remembers the generator.
        assert gen in loop._asyncgens
        return gen

    gen = run(loop, main())
    assert finalized == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == [True]
    del gen


def test_asyncgen_hooks_restored(loop):
    before = sys.get_asyncgen_hooks()

    async def main():
        return sys.get_asyncgen_hooks()

    during = run(loop, main())
    assert during.firstiter is not None and during.finalizer is not None
    assert sys.get_asyncgen_hooks() == before


def test_asyncgen_finalizer_schedules_aclose(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            closed.append(True)

    async def main():
        gen = agen()
        await gen.__anext__()
        del gen  # garbage: the finalizer hook schedules aclose() on the loop
        for _ in range(5):
            await asyncio.sleep(0)

    run(loop, main())
    assert closed == [True]


def test_shutdown_default_executor(loop):
    async def main():
        return await loop.run_in_executor(None, threading.get_ident)

    ident = run(loop, main())
    assert ident != threading.get_ident()
    run(loop, loop.shutdown_default_executor())
    assert loop._executor_shutdown_called


def test_oxloop_run():
    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, oxloop.Loop)
        return "ok"

    assert oxloop.run(main()) == "ok"


def test_oxloop_run_debug():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert oxloop.run(main(), debug=True) is True


def test_oxloop_run_cancels_leftover_tasks():
    cancelled = []

    async def sleeper():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)

    oxloop.run(main())
    assert cancelled == [True]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_runner_with_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=oxloop.new_event_loop) as runner:
        assert runner.run(main()) is oxloop.Loop
        assert isinstance(runner.get_loop(), oxloop.Loop)
        assert runner.run(asyncio.sleep(0, result=3)) == 3


def test_install_policy():
    old = asyncio.get_event_loop_policy()
    try:
        oxloop.install()
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, oxloop.Loop)
        finally:
            loop.close()

        async def main():
            return type(asyncio.get_running_loop())

        assert asyncio.run(main()) is oxloop.Loop
    finally:
        asyncio.set_event_loop_policy(old)


def test_repr(loop):
    text = repr(loop)
    assert "running=False" in text and "closed=False" in text


def test_two_loops_in_two_threads_at_once():
    results = {}

    def worker(name):
        async def main():
            server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
            async with server:
                r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
                data = await r.read()
                w.close()
                await asyncio.sleep(0.02)
            return data

        results[name] = oxloop.run(main())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {i: b"" for i in range(4)}


def test_loop_run_on_different_threads_in_turn():
    loop = oxloop.new_event_loop()
    try:
        idents = []
        for _ in range(3):
            t = threading.Thread(
                target=lambda: idents.append(
                    loop.run_until_complete(asyncio.sleep(0.001, result=threading.get_ident()))
                )
            )
            t.start()
            t.join(10)
        idents.append(loop.run_until_complete(asyncio.sleep(0, result=threading.get_ident())))
        # (Idents of finished threads may be reused: check that each run ran.)
        assert len(idents) == 4 and idents[-1] == threading.get_ident()
    finally:
        loop.close()


def test_keyboard_interrupt_in_reader_leaves_loop_usable(loop):
    import socket

    a, b = socket.socketpair()
    try:

        def on_read():
            b.recv(10)
            raise KeyboardInterrupt

        loop.add_reader(b, on_read)
        a.send(b"x")
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert not loop.is_running()
        loop.remove_reader(b)
        assert loop.run_until_complete(asyncio.sleep(0.001, result="ok")) == "ok"
    finally:
        a.close()
        b.close()


def test_stop_inside_run_until_complete(loop):
    async def main():
        loop.stop()
        await asyncio.sleep(0.01)
        return 1

    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(main())
    # The task is still pending and finishes on the next run.
    pending = asyncio.all_tasks(loop)
    assert len(pending) == 1
    loop.run_until_complete(pending.pop())


def test_unclosed_loop_warns():
    import gc
    import warnings

    loop = oxloop.new_event_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_close_while_other_threads_call_soon_threadsafe():
    for _ in range(5):
        loop = oxloop.new_event_loop()
        stop = threading.Event()
        outcomes = []

        def spam(lp=loop, stop=stop, outcomes=outcomes):
            try:
                while not stop.is_set():
                    lp.call_soon_threadsafe(lambda: None)
            except RuntimeError:
                outcomes.append("closed")

        threads = [threading.Thread(target=spam) for _ in range(3)]
        for t in threads:
            t.start()
        loop.call_later(0.005, loop.stop)
        loop.run_forever()
        loop.close()
        for t in threads:
            t.join(10)
        stop.set()
        assert outcomes == ["closed"] * 3


def test_close_from_other_thread_while_running():
    loop = oxloop.new_event_loop()
    errors = []
    started = threading.Event()

    def closer():
        started.wait(10)
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=closer)
    t.start()
    loop.call_soon(started.set)
    safety = loop.call_later(10, loop.stop)
    loop.run_forever()
    safety.cancel()
    t.join(10)
    assert len(errors) == 1 and not loop.is_closed()
    loop.close()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
def test_asyncio_timeout_reschedule(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as cm:
                cm.reschedule(loop.time() + 0.02)
                await asyncio.sleep(10)
        return cm.expired()

    assert run(loop, main())


# Python 3.12+ warns of any fork while other threads exist (earlier tests leave
# some, such as the executor's idle workers):
# forking from a running loop is what this test checks.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_inside_running_loop_child_runs_new_loop(loop):
    import os

    async def main():
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                asyncio.events._set_running_loop(None)  # what 3.12+ does at fork
                child_loop = oxloop.new_event_loop()
                if child_loop.run_until_complete(asyncio.sleep(0.001, result=7)) == 7:
                    code = 0
                child_loop.close()
            finally:
                os._exit(code)
        for _ in range(1000):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            await asyncio.sleep(0.01)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "timeout"

    assert run(loop, main()) == 0
