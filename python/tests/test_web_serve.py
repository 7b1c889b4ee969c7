"""`python -m oxloop.serve` as operators run it: worker processes on one port, a
crashed worker replaced, graceful shutdown on SIGTERM / SIGINT."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import free_port

pytestmark = pytest.mark.timeout(90)

APP = """
import asyncio, os, time

def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/die":
        os._exit(3)
    if path == "/slow":
        time.sleep(1.0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
"""


def get(port: int, path: str = "/", timeout: float = 10.0) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def wait_until_serving(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start listening")


def pids_seen(port: int, want: int, seconds: float = 20.0) -> set[bytes]:
    """The worker pids that answer new connections, until `want` were seen (a worker
    may still be starting: connections go only to those already listening)."""
    seen: set[bytes] = set()
    deadline = time.monotonic() + seconds
    while len(seen) < want and time.monotonic() < deadline:
        try:
            seen.add(get(port))
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)  # a worker being replaced
    return seen


def start(tmp_path, *args: str) -> tuple[subprocess.Popen, int]:
    (tmp_path / "served_app.py").write_text(APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxloop.serve", *args, "--port", str(port)]
        + ["--app-dir", str(tmp_path), "--graceful-timeout", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until_serving(port, proc)
    return proc, port


def stop_gracefully(proc: subprocess.Popen, port: int, sig: int) -> None:
    """Sends `sig` while a slow request is in flight: it must still be answered."""
    answers: list[bytes] = []
    slow = threading.Thread(target=lambda: answers.append(get(port, "/slow")))
    slow.start()
    time.sleep(0.3)  # the request is in the application now
    proc.send_signal(sig)
    slow.join(20)
    assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert len(answers) == 1 and answers[0].isdigit()


def test_two_wsgi_workers_restart_and_sigterm(tmp_path):
    proc, port = start(tmp_path, "served_app:wsgi", "--interface", "wsgi", "--workers", "2")
    try:
        first = pids_seen(port, 2)
        assert len(first) == 2, "both workers answer"
        # A worker that dies is replaced.
        try:
            get(port, "/die", timeout=5)
        except (OSError, http.client.HTTPException):
            pass
        deadline = time.monotonic() + 30
        replaced = set()
        while time.monotonic() < deadline and not (replaced - first):
            replaced |= pids_seen(port, 2, seconds=1.0)
        assert replaced - first, "a new worker took the dead one's place"
        stop_gracefully(proc, port, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_one_asgi_worker_sigint(tmp_path):
    proc, port = start(tmp_path, "served_app:asgi")  # --interface auto finds ASGI
    try:
        assert get(port) == str(proc.pid).encode()
        stop_gracefully(proc, port, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not os.path.exists(f"/proc/{proc.pid}/status") or proc.returncode is not None
