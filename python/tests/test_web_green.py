"""`python -m oxloop.serve app --interface wsgi --green`: an unmodified Flask
application whose `time.sleep` and `urllib.request` calls run green after the
server's `patch_all()`, so many slow requests are served at once on one thread."""

from __future__ import annotations

import http.client
import http.server
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import free_port

pytest.importorskip("greenlet")
pytest.importorskip("flask")

pytestmark = pytest.mark.timeout(90)

# More requests at once than any thread pool of the server has threads: each request
# waits until all of them are in the application, which only green tasks can do.
AT_ONCE = 24

APP = """
import json, os, threading, time, urllib.request

import flask

flask_app = flask.Flask("green_served")
arrived = 0


def app(environ, start_response):
    if environ["PATH_INFO"] == "/raw-boom":  # no framework to turn it into a 500
        raise RuntimeError("the application failed")
    return flask_app(environ, start_response)


@flask_app.route("/sleep")
def sleep():
    global arrived
    arrived += 1
    for _ in range(2000):  # time.sleep is green: the others arrive meanwhile
        if arrived >= AT_ONCE:
            time.sleep(0.2)  # all of them at once: about the time of one
            return "together"
        time.sleep(0.005)
    return "alone", 503


@flask_app.route("/fetch")
def fetch():
    with urllib.request.urlopen(flask.request.args["url"], timeout=30) as r:
        return r.read()


@flask_app.route("/facts")
def facts():
    import socket

    return {
        "patched": socket.socket.__module__,
        "multithread": flask.request.environ["wsgi.multithread"],
        "thread": threading.get_ident() == threading.main_thread().ident,
    }


@flask_app.post("/upload")
def upload():
    total = 0
    stream = flask.request.environ["wsgi.input"]
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        time.sleep(0)  # a slow reader: the body waits in the socket meanwhile
        total += len(piece)
    return str(total)


@flask_app.route("/download")
def download():
    def pieces():
        for i in range(64):
            yield b"%05d" % i + b"d" * 16379

    return flask.Response(pieces(), mimetype="application/octet-stream")
""".replace("AT_ONCE", str(AT_ONCE))


class _Peer(http.server.BaseHTTPRequestHandler):
    """A slow peer: answers only once `AT_ONCE` requests wait in it together."""

    waiting = 0
    together = threading.Condition()

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        cls = type(self)
        with cls.together:
            cls.waiting += 1
            cls.together.notify_all()
            met = cls.together.wait_for(lambda: cls.waiting >= AT_ONCE, timeout=30)
        body = b"met" if met else b"alone"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def get(port: int, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_until_serving(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            get(port, "/facts", timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start listening")


@pytest.fixture
def green_server(tmp_path):
    (tmp_path / "green_served.py").write_text(APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxloop.serve", "green_served:app", "--interface", "wsgi"]
        + ["--green", "--port", str(port), "--app-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_serving(port, proc)
        yield port, proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def at_once(port: int, path: str) -> tuple[list[tuple[int, bytes]], float]:
    started = time.monotonic()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        answers = list(pool.map(lambda _: get(port, path), range(AT_ONCE)))
    return answers, time.monotonic() - started


def test_flask_sleep_and_urllib_run_green(green_server):
    port, _ = green_server
    status, body = get(port, "/facts")
    assert status == 200
    assert b'"patched":"oxloop.green._io"' in body.replace(b" ", b"")
    assert b'"multithread":false' in body.replace(b" ", b"")

    answers, took = at_once(port, "/sleep")
    assert answers == [(200, b"together")] * AT_ONCE
    print(f"{AT_ONCE} sleeping requests at once: {took:.2f} s")

    peer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{peer.server_address[1]}/slow"
        answers, took = at_once(port, f"/fetch?url={url}")
        assert answers == [(200, b"met")] * AT_ONCE
        print(f"{AT_ONCE} requests to a slow peer at once: {took:.2f} s")
    finally:
        peer.shutdown()
        peer.server_close()


def test_streaming_and_errors(green_server):
    port, proc = green_server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        big = b"u" * (2 * 1024 * 1024 + 3)
        conn.request("POST", "/upload", body=big)
        assert conn.getresponse().read() == str(len(big)).encode()
        conn.request("GET", "/download")
        data = conn.getresponse().read()
        assert len(data) == 64 * 16384 and data[-16384:][:5] == b"00063"
    finally:
        conn.close()
    status, _ = get(port, "/raw-boom")
    assert status == 500
    # The server goes on after the failure.
    assert get(port, "/facts")[0] == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "the application failed" in proc.stderr.read().decode()  # logged
