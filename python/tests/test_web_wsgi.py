"""WSGI applications served by `oxloop.web` (oxloop-http, a thread pool, green tasks
or the loop's own thread), over real sockets; every test application is wrapped in
`wsgiref.validate.validator`. Each test runs in every mode (a thread pool,
`green=True`, `threads=0`) where it applies;
the green tasks here wait only through `oxloop.green` calls (the standard library is
not patched in the test process; `test_web_green.py` serves patched applications)."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
from wsgiref.validate import validator

import pytest
from web_helpers import exchange_json, raw_exchange, serving

import oxloop.web

pytestmark = pytest.mark.timeout(60)

try:
    from oxloop import green
except ImportError:  # greenlet missing: only the thread pool is tested
    green = None

# Where the application runs: start_wsgi's keyword arguments for each mode (a mode's
# own win over a test's `threads`).
MODES = [
    pytest.param({"green": False}, id="threads"),
    pytest.param(
        {"green": True},
        id="green",
        marks=pytest.mark.skipif(green is None, reason="greenlet is not installed"),
    ),
    pytest.param({"threads": 0}, id="inline"),
]

REQUIRED = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "wsgi.version",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.errors",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
)

CLOSED: list[str] = []
RELEASE = threading.Event()


class Closing:
    """A response iterable that records its close()."""

    def __init__(self, pieces: list[bytes], name: str) -> None:
        self.pieces = pieces
        self.name = name

    def __iter__(self):
        return iter(self.pieces)

    def close(self) -> None:
        CLOSED.append(self.name)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ":
        missing = [k for k in REQUIRED if k not in environ]
        facts = {
            "missing": missing,
            "path": path,
            "script": environ["SCRIPT_NAME"],
            "query": environ["QUERY_STRING"],
            "method": environ["REQUEST_METHOD"],
            "type": environ.get("CONTENT_TYPE"),
            "length": environ.get("CONTENT_LENGTH"),
            "thing": environ.get("HTTP_X_THING"),
            "remote": environ.get("REMOTE_ADDR"),
            "protocol": environ["SERVER_PROTOCOL"],
            "terminated": environ.get("wsgi.input_terminated"),
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(facts).encode()]
    if path.startswith("/caf"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [path.encode("latin-1")]
    if path == "/read":
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = stream.read(10)
        lines = list(stream)
        tail = stream.read(1000)  # wsgiref.validate wants read() with a size
        assert stream.read(1) == b""
        body = b"%d|%d|%d|%d" % (len(first), len(rest), len(lines), len(tail))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/size":
        stream = environ["wsgi.input"]
        total = 0
        while True:
            piece = stream.read(65536)
            if not piece:
                break
            total += len(piece)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def pieces():
            for i in range(200):
                yield (b"%06d" % i) + b"x" * 16378

        return pieces()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return Closing([b"and ", b"returned"], "write")
    if path == "/write-list":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then ", b"a list"]
    if path == "/fail-mid-stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def pieces():
            yield b"partial"
            raise RuntimeError("failed half-way")

        return pieces()
    if path == "/error-before":
        raise RuntimeError("failed before the response")
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            import sys

            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"sorry"]
    if path == "/file":
        f = open(__file__, "rb")  # noqa: SIM115 - the server closes it
        f.seek(10)
        start_response("203 Non-Authoritative Information", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](f)
    if path == "/block":
        RELEASE.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"released"]
    if path == "/green-block":
        for _ in range(1000):  # a green task polls: the loop must go on meanwhile
            if RELEASE.is_set():
                break
            green.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"released"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


validated = validator(app)


def get(address, path, method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection(*address, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r, data


@pytest.mark.parametrize("mode", MODES)
def test_environ_and_bodies(mode):
    with serving(oxloop.web.start_wsgi, app=validated, **{"threads": 4, **mode}) as address:
        r, data = get(
            address,
            "/environ?a=1&b=%20",
            "POST",
            b"xyz",
            {"Content-Type": "text/plain", "X-Thing": "yes"},
        )
        facts = json.loads(data)
        assert facts == {
            "missing": [],
            "path": "/environ",
            "script": "",
            "query": "a=1&b=%20",
            "method": "POST",
            "type": "text/plain",
            "length": "3",
            "thing": "yes",
            "remote": "127.0.0.1",
            "protocol": "HTTP/1.1",
            "terminated": True,
        }
        # PATH_INFO is the decoded bytes as latin-1 (PEP 3333).
        r, data = get(address, "/caf%C3%A9")
        assert data == "/caf\u00e9".encode()
        body = b"first line\n" + b"0123456789" + b"a\nb\nc\n" + b"tail"
        r, data = get(address, "/read", "POST", body)
        # The last "line" is the tail without a newline, read by iteration.
        assert data == b"11|10|4|0"
        big = b"z" * (3 * 1024 * 1024 + 5)

        def chunks():
            for i in range(0, len(big), 200_000):
                yield big[i : i + 200_000]

        conn = http.client.HTTPConnection(*address, timeout=10)
        conn.request("POST", "/size", body=chunks(), encode_chunked=True)
        assert conn.getresponse().read() == str(len(big)).encode()
        conn.request("GET", "/stream")
        r = conn.getresponse()
        data = r.read()
        assert len(data) == 200 * 16384 and data[-16384:][:6] == b"000199"
        conn.close()


def echo_environ(environ, start_response):
    """Answers with the environ's strings as JSON, then spoils its copy of the environ
    (no request may see what an earlier one did to its own)."""
    facts = {k: v for k, v in environ.items() if isinstance(v, str)}
    environ["REQUEST_METHOD"] = environ["HTTP_X_THING"] = "spoiled"
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(facts).encode()]


@pytest.mark.parametrize("mode", MODES)
def test_environ_values_change_with_each_request(mode):
    with serving(oxloop.web.start_wsgi, app=validator(echo_environ), **mode) as address:
        first = socket.create_connection(address, timeout=10)
        second = socket.create_connection(address, timeout=10)
        with first, second:
            a = exchange_json(
                first,
                b"TRACE /caf%C3%A9?q=%20 HTTP/1.1\r\nHost: h\r\nX-Thing: 1\r\n"
                b"x-thing: 2\r\nX_Thing: smuggled\r\nAccept: a\xe9\r\n\r\n",
            )
            assert a["REQUEST_METHOD"] == "TRACE"
            assert a["PATH_INFO"] == "/caf\u00c3\u00a9"  # decoded bytes, one char each
            assert a["RAW_URI"] == "/caf%C3%A9?q=%20"
            assert a["QUERY_STRING"] == "q=%20"
            assert a["HTTP_X_THING"] == "1,2"  # repeated header, both spellings
            assert a["HTTP_ACCEPT"] == "a\u00e9"
            assert a["REMOTE_ADDR"] == "127.0.0.1"
            assert a["REMOTE_PORT"] == str(first.getsockname()[1])
            b = exchange_json(first, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert b["REQUEST_METHOD"] == "GET"
            assert (b["PATH_INFO"], b["RAW_URI"], b["QUERY_STRING"]) == ("/", "/", "")
            assert b["SERVER_PROTOCOL"] == "HTTP/1.0"
            assert "HTTP_X_THING" not in b and "HTTP_HOST" not in b
            assert (b["CONTENT_TYPE"], b["CONTENT_LENGTH"]) == ("", "")
            assert b["REMOTE_PORT"] == a["REMOTE_PORT"]
            c = exchange_json(
                second,
                b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: t/x\r\nContent-Length: 0\r\n\r\n",
            )
            assert (c["REQUEST_METHOD"], c["SERVER_PROTOCOL"]) == ("POST", "HTTP/1.1")
            assert (c["CONTENT_TYPE"], c["CONTENT_LENGTH"]) == ("t/x", "0")
            assert c["REMOTE_PORT"] == str(second.getsockname()[1]) != a["REMOTE_PORT"]
            # More header names than the server keeps keys for (a request has at most
            # 64 headers: two sets of 60, in turn): the kept ones are replaced, and
            # every request still gets all of its own.
            for kind in "ABAB":
                head = "".join(f"X-{kind}-{i}: {i}\r\n" for i in range(60)).encode()
                d = exchange_json(first, b"GET / HTTP/1.1\r\nHost: h\r\n" + head + b"\r\n")
                got = {k: v for k, v in d.items() if k.startswith("HTTP_X_")}
                assert got == {f"HTTP_X_{kind}_{i}": str(i) for i in range(60)}


def test_new_header_names_are_not_kept_forever():
    """A client sending ever new header names must not grow the server: keys beyond
    those the server keeps are freed with their request (an interned string would not
    be on Python 3.12, where interned strings are never freed)."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    with serving(oxloop.web.start_wsgi, app=app, threads=0) as address:
        sock = socket.create_connection(address, timeout=10)
        with sock:

            def requests(first: int, count: int) -> None:
                for r in range(first, first + count):
                    head = "".join(f"X-{r}-{i}: v\r\n" for i in range(40)).encode()
                    exchange_json(sock, b"GET / HTTP/1.1\r\nHost: h\r\n" + head + b"\r\n")

            requests(0, 200)  # the kept names fill up
            before = sys.getallocatedblocks()
            requests(200, 1000)  # 40,000 names never seen before
            grown = sys.getallocatedblocks() - before
    assert grown < 4000, f"{grown} blocks more after 40,000 new header names"


@pytest.mark.parametrize("mode", MODES)
def test_write_close_errors_and_files(mode):
    CLOSED.clear()
    with serving(oxloop.web.start_wsgi, app=validated, **mode) as address:
        r, data = get(address, "/write")
        assert (r.status, data) == (200, b"written and returned")
        assert CLOSED == ["write"]
        r, data = get(address, "/write-list")
        assert data == b"written, then a list"
        conn = http.client.HTTPConnection(*address, timeout=10)
        conn.request("GET", "/fail-mid-stream")
        r = conn.getresponse()
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            r.read()
        conn.close()
        r, data = get(address, "/error-before")
        assert r.status == 500
        r, data = get(address, "/exc-info")
        assert (r.status, data) == (503, b"sorry")
        r, data = get(address, "/file")
        assert r.status == 203
        with open(__file__, "rb") as f:
            assert data == f.read()[10:]
        r, data = get(address, "/nowhere")
        assert r.status == 404


@pytest.mark.parametrize("mode", MODES[:2])  # inline: a blocking application blocks
def test_slow_application_does_not_stall_others(mode):
    RELEASE.clear()
    path = "/green-block" if mode["green"] else "/block"
    with serving(oxloop.web.start_wsgi, app=validated, threads=2, **mode) as address:
        results: list[bytes] = []
        blocked = threading.Thread(target=lambda: results.append(get(address, path)[1]))
        blocked.start()
        try:
            for _ in range(5):
                assert get(address, "/caf")[1] == b"/caf"
        finally:
            RELEASE.set()
            blocked.join(10)
        assert results == [b"released"]


@pytest.mark.parametrize("mode", MODES)
def test_root_path_pipelining_and_limits(mode):
    with serving(
        oxloop.web.start_wsgi,
        app=validated,
        root_path="/app",
        max_body_bytes=1000,
        **mode,
    ) as address:
        r, data = get(address, "/app/environ")
        facts = json.loads(data)
        assert (facts["script"], facts["path"]) == ("/app", "/environ")
        out = raw_exchange(
            address,
            b"GET /app/caf1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /app/caf2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert out.index(b"/caf1") < out.index(b"/caf2")
        out = raw_exchange(
            address,
            b"POST /app/size HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000,
            half_close=False,
        )
        assert out.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("mode", MODES)
def test_flask(mode):
    flask = pytest.importorskip("flask")
    fapp = flask.Flask("oxloop_test")

    @fapp.route("/")
    def home():
        return "hello " + flask.request.path

    @fapp.post("/json")
    def echo():
        return {"got": flask.request.get_json(), "remote": flask.request.remote_addr}

    @fapp.route("/stream")
    def stream():
        return flask.Response((f"{i}\n" for i in range(3)), mimetype="text/plain")

    # Not under wsgiref.validate: werkzeug reads wsgi.input without a size, which
    # PEP 3333 allows and the validator does not.
    with serving(oxloop.web.start_wsgi, app=fapp, **mode) as address:
        assert get(address, "/")[1] == b"hello /"
        r, data = get(
            address, "/json", "POST", b'{"a": [1, 2]}', {"Content-Type": "application/json"}
        )
        assert json.loads(data) == {"got": {"a": [1, 2]}, "remote": "127.0.0.1"}
        assert get(address, "/stream")[1] == b"0\n1\n2\n"


@pytest.mark.parametrize(("threads", "on_loop"), [(0, True), (2, False)])
def test_threads_0_calls_the_application_on_the_loops_thread(threads, on_loop):
    seen: list[tuple[bool, bool]] = []
    loop_thread: list[threading.Thread] = []

    def app(environ, start_response):
        seen.append((threading.current_thread() is loop_thread[0], environ["wsgi.multithread"]))
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got %d" % len(body)]

    def start(**kwargs):
        loop_thread.append(threading.current_thread())
        return oxloop.web.start_wsgi(**kwargs)

    with serving(start, app=app, threads=threads) as address:
        assert get(address, "/", "POST", b"x" * 300_000)[1] == b"got 300000"
    assert seen == [(on_loop, threads > 1)]
