"""What the standard library's own asyncio tests found missing, checked directly."""

import asyncio
import sys
import warnings

import pytest

import oxloop


def test_run_once_runs_the_ready_callbacks_and_returns():
    loop = oxloop.Loop()
    try:
        calls = []
        loop.call_soon(calls.append, 1)
        loop.call_soon(lambda: loop.call_soon(calls.append, 3))
        loop.call_soon(calls.append, 2)
        loop._run_once()
        assert calls == [1, 2]
        assert not loop.is_running()
        loop._run_once()
        assert calls == [1, 2, 3]
    finally:
        loop.close()


def test_run_once_inside_the_running_loop_is_refused():
    async def main():
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()._run_once()

    oxloop.run(asyncio.wait_for(main(), 10))


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="child watchers are gone in 3.14")
def test_the_policy_accepts_a_child_watcher():
    policy = oxloop.EventLoopPolicy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.SafeChildWatcher()
        policy.set_child_watcher(watcher)
        assert policy.get_child_watcher() is watcher
        policy.set_child_watcher(None)
        watcher.close()
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, oxloop.Loop)
    finally:
        loop.close()
