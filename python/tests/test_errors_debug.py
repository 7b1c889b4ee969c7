"""The exception handler and debug mode."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from unittest import mock

import pytest
from conftest import run


def test_exception_handler_get_set(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError):
        loop.set_exception_handler("not callable")


def test_raising_callback_goes_to_handler_and_loop_goes_on(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))
    seen = []

    def bad():
        raise ValueError("in callback")

    loop.call_soon(bad)
    loop.call_soon(seen.append, "after")
    loop.call_later(0.001, bad)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == ["after"]
    assert len(contexts) == 2
    for lp, ctx in contexts:
        assert lp is loop
        assert isinstance(ctx["exception"], ValueError)
        assert "handle" in ctx
        assert "message" in ctx


def test_raising_fd_callback_goes_to_handler(loop):
    import socket

    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    a, b = socket.socketpair()
    try:

        def bad():
            b.recv(10)
            raise KeyError("in reader")

        loop.add_reader(b, bad)
        a.send(b"x")
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        loop.remove_reader(b)
    finally:
        a.close()
        b.close()
    assert len(contexts) == 1 and isinstance(contexts[0]["exception"], KeyError)


def test_default_exception_handler_logs(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "custom message", "exception": OSError("x")})
        loop.default_exception_handler({"message": "direct call"})
    text = caplog.text
    assert "custom message" in text and "OSError" in text
    assert "direct call" in text


def test_call_exception_handler_uses_custom(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append(ctx["message"]))
    loop.call_exception_handler({"message": "m1"})
    assert got == ["m1"]


def test_failing_exception_handler_is_logged(loop, caplog):
    def broken(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(broken)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(lambda: 1 / 0)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert "handler broke" in caplog.text or "Unhandled error in exception handler" in caplog.text


def test_unretrieved_task_exception_reported(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append(ctx))

    async def fail():
        raise LookupError("never retrieved")

    async def main():
        loop.create_task(fail())
        await asyncio.sleep(0.01)

    run(loop, main())
    import gc

    gc.collect()
    assert any(isinstance(c.get("exception"), LookupError) for c in got)


def test_base_exceptions_propagate(loop):
    def interrupt():
        raise KeyboardInterrupt

    seen = []
    loop.call_soon(interrupt)
    loop.call_soon(seen.append, 1)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    # The loop is usable afterwards and the remaining callback still runs.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1]


def test_system_exit_propagates(loop):
    async def main():
        raise SystemExit(4)

    with pytest.raises(SystemExit):
        loop.run_until_complete(main())


def test_debug_flag(loop):
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False
    # asyncio's own code reads and writes `_debug`; get_debug() must follow it, and
    # deleting it (mock.patch.object does when it ends) turns debug mode off.
    loop._debug = 1
    assert loop.get_debug() is True and loop._debug is True
    del loop._debug
    assert loop.get_debug() is False
    with mock.patch.object(loop, "_debug", True):
        assert loop.get_debug() is True
        assert loop.create_future()._source_traceback is not None  # a debug future
    assert loop.get_debug() is False


def test_slow_callback_logged(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_one():
        time.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_one)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert "slow_one" in caplog.text and "took" in caplog.text


def test_slow_callback_not_logged_without_debug(loop, caplog):
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(time.sleep, 0.03)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert "took" not in caplog.text


def test_non_threadsafe_call_from_other_thread_in_debug(loop):
    loop.set_debug(True)
    errors = []
    started = threading.Event()

    def other_thread():
        started.wait(10)
        for call in (
            lambda: loop.call_soon(print),
            lambda: loop.call_later(1, print),
            lambda: loop.call_at(loop.time() + 1, print),
        ):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other_thread)
    t.start()
    loop.call_soon(started.set)
    safety = loop.call_later(10, loop.stop)
    loop.run_forever()
    safety.cancel()
    t.join(10)
    assert len(errors) == 3
    assert all("thread" in str(e) for e in errors)


def test_debug_mode_never_awaited_coroutine_origin(loop):
    loop.set_debug(True)

    async def main():
        import sys

        return sys.get_coroutine_origin_tracking_depth()

    assert run(loop, main()) > 0


def test_debug_via_run_until_complete_task_source(loop):
    loop.set_debug(True)

    async def main():
        task = loop.create_task(asyncio.sleep(0))
        await task
        return task._source_traceback

    assert run(loop, main())
