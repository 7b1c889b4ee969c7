"""A loop whose `time()` is not the monotonic clock: a subclass that overrides it, or
a test that patches `loop.time` (a mock clock). Timers are reckoned from that clock, as
on asyncio's loop."""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import pytest
from conftest import run

import oxloop


class _ShiftedLoop(oxloop.Loop):
    """A clock that counts from an arbitrary origin, far from `time.monotonic()`."""

    def time(self):
        return time.monotonic() + 1_000_000.0


class _ShiftedAsyncio(asyncio.SelectorEventLoop):
    def time(self):
        return time.monotonic() + 1_000_000.0


@pytest.mark.parametrize("factory", [_ShiftedAsyncio, _ShiftedLoop])
def test_subclass_clock_runs_call_at_and_call_later(factory):
    lp = factory()
    try:
        order = []

        async def main():
            now = lp.time()
            done = lp.create_future()
            at = lp.call_at(now + 0.02, order.append, "at")
            later = lp.call_later(0.01, order.append, "later")
            lp.call_at(now + 0.05, done.set_result, None)
            assert later.when() >= now + 0.01 and at.when() == now + 0.02
            await done
            # Never early, on the loop's own clock.
            assert lp.time() >= now + 0.05
            await asyncio.sleep(0.01)

        run(lp, main())
        assert order == ["later", "at"]
    finally:
        lp.close()


@pytest.mark.parametrize("factory", [asyncio.SelectorEventLoop, oxloop.new_event_loop])
def test_patched_clock_that_jumps_makes_timers_due(factory):
    """aiohttp's keep-alive test: `loop.time` is a mock; moving it to a timer's
    deadline makes the timer run within the next iterations."""
    lp = factory()
    try:

        async def main():
            now = lp.time()
            fired = []
            with mock.patch.object(lp, "time", return_value=now):
                handle = lp.call_later(3600, fired.append, "timer")
                assert handle.when() == now + 3600
                await asyncio.sleep(0)
                assert fired == []
                lp.time.return_value = now + 3600
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            return fired

        # Not under `asyncio.wait_for`: its deadline is on the same clock, which jumps.
        # (pytest-timeout bounds the test.)
        assert lp.run_until_complete(main()) == ["timer"]
        # With the patch gone, the loop's clock is the monotonic one again.
        assert "time" not in lp.__dict__
        assert abs(lp.time() - time.monotonic()) < 60
    finally:
        lp.close()


def test_own_clock_timer_cancelled_does_not_run():
    lp = oxloop.new_event_loop()
    try:

        async def main():
            now = lp.time()
            fired = []
            with mock.patch.object(lp, "time", return_value=now):
                handle = lp.call_later(10, fired.append, "timer")
                handle.cancel()
                lp.time.return_value = now + 20
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            return fired

        assert lp.run_until_complete(main()) == []
    finally:
        lp.close()
