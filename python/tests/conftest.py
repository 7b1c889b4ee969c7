"""Shared fixtures: a fresh `oxloop.Loop` per test, closed afterwards, and a bound on
how long a coroutine may take (a hang fails the test instead of stalling the suite)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

import oxloop

TIMEOUT = 10.0


@pytest.fixture
def loop():
    """A new oxloop loop, set as the thread's current loop for the test's duration."""
    lp = oxloop.new_event_loop()
    asyncio.set_event_loop(lp)
    try:
        yield lp
    finally:
        asyncio.set_event_loop(None)
        if not lp.is_closed():
            if not lp.is_running():
                lp.run_until_complete(lp.shutdown_asyncgens())
            lp.close()


def run(loop, coro, timeout: float = TIMEOUT):
    """Runs `coro` on `loop`, failing with TimeoutError after `timeout` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def open_fds() -> set[int]:
    """The fds this process has open now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def x_display():
    """An X display for the Tk tests: a private Xvfb server, stopped afterwards. Skips
    (with the reason) when tkinter or Xvfb is missing."""
    import shutil
    import subprocess

    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("tkinter is not available in this Python")
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-nolisten", "tcp", "-screen", "0", "640x480x24"],
        pass_fds=[write_end],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as numbers:
            number = numbers.readline().strip()
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)
