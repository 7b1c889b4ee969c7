"""Executors: run_in_executor, set_default_executor, shutdown_default_executor."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time

import pytest
from conftest import run


def test_run_in_executor_default(loop):
    async def main():
        results = await asyncio.gather(
            *(loop.run_in_executor(None, lambda i=i: (i, threading.get_ident())) for i in range(8))
        )
        return results

    results = run(loop, main())
    assert [r[0] for r in results] == list(range(8))
    assert threading.get_ident() not in {r[1] for r in results}


def test_run_in_executor_exception(loop):
    def fail():
        raise ZeroDivisionError

    async def main():
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, fail)
        return True

    assert run(loop, main())


def test_run_in_executor_wakes_sleeping_loop(loop):
    async def main():
        return await loop.run_in_executor(None, lambda: (time.sleep(0.05), "slept")[1])

    assert run(loop, main()) == "slept"


def test_set_default_executor(loop):
    names = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            names.append(fn)
            return super().submit(fn, *args, **kwargs)

    executor = Recording(max_workers=1, thread_name_prefix="custom")
    loop.set_default_executor(executor)

    async def main():
        return await loop.run_in_executor(None, lambda: threading.current_thread().name)

    try:
        assert run(loop, main()).startswith("custom")
        assert len(names) == 1
        if sys.version_info >= (3, 11):  # a DeprecationWarning before
            with pytest.raises(TypeError):
                loop.set_default_executor(concurrent.futures.ProcessPoolExecutor)
    finally:
        executor.shutdown(wait=True)


def test_explicit_executor_and_to_thread(loop):
    async def main():
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            a = await loop.run_in_executor(ex, sum, [1, 2, 3])
        b = await asyncio.to_thread(max, [4, 9, 2])
        return a, b

    assert run(loop, main()) == (6, 9)


def test_shutdown_default_executor_then_refuse(loop):
    run(loop, loop.run_in_executor(None, int))
    run(loop, loop.shutdown_default_executor())

    async def main():
        with pytest.raises(RuntimeError):
            await loop.run_in_executor(None, int)
        return True

    assert run(loop, main())


def test_getaddrinfo_runs_names_off_loop(loop):
    async def main():
        # A name lookup must not block other work on the loop.
        ticks = []

        async def ticker():
            for _ in range(3):
                ticks.append(1)
                await asyncio.sleep(0)

        t = loop.create_task(ticker())
        infos = await loop.getaddrinfo("localhost", 80)
        await t
        return infos, len(ticks)

    infos, ticks = run(loop, main())
    assert infos and ticks == 3
