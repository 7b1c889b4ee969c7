"""The WSGI and ASGI boundary under generated input: raw requests, well-formed and
mangled, sent over real sockets to `oxloop.web` servers whose applications report
what they were given.

Properties: every request gets an HTTP/1.1 response and never a 500 (the WSGI
application is wrapped in `wsgiref.validate`, so an `environ` that breaks PEP 3333
fails the request); a request that oxloop-http accepts reaches the application with
the method, path, query, headers and body that were sent, decoded as PEP 3333 and
ASGI 3 say; a rejected one gets a 4xx or 5xx status that names the fault (400, 413,
414, 431, 501, 505), not a hang or a reset. `OXLOOP_WEB_FUZZ_EXAMPLES` sets the number
of requests per property (default 60; `fuzz/run.sh` documents longer runs)."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
from urllib.parse import unquote_to_bytes
from wsgiref.validate import validator

import pytest
from web_helpers import serving

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import oxloop.web  # noqa: E402

pytestmark = [
    pytest.mark.timeout(600),
    # Generated methods are valid tokens that wsgiref.validate does not know.
    pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD"),
]

EXAMPLES = int(os.environ.get("OXLOOP_WEB_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Statuses that say what was wrong with a request oxloop-http would not pass on.
REJECTED = {400, 405, 411, 413, 414, 417, 431, 501, 505}


def wsgi_app(environ, start_response):
    pieces = []
    while piece := environ["wsgi.input"].read(8192):  # the validator wants a size
        pieces.append(piece)
    body = b"".join(pieces)
    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key] = environ[key]
    report = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "headers": headers,
        "body": body.decode("latin-1"),
    }
    out = json.dumps(report).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    report = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    out = json.dumps(report).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def wsgi_server():
    with serving(oxloop.web.start_wsgi, app=validator(wsgi_app), threads=2) as address:
        yield address


@pytest.fixture(scope="module")
def asgi_server():
    with serving(oxloop.web.start_asgi, app=asgi_app, lifespan="off") as address:
        yield address


TOKEN = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
)
PATH_BYTE = st.sampled_from(
    [bytes([b]) for b in range(0x21, 0x7F) if b not in b"?#%"]
    + [b"%20", b"%2F", b"%25", b"%C3%A9", b"%FF", b"%00", b"/"]
)
PATH = st.lists(PATH_BYTE, max_size=24).map(lambda parts: b"/" + b"".join(parts))
QUERY = st.lists(
    st.sampled_from([b"a", b"=", b"&", b"%41", b"%", b"+", b"\xc3\xa9", b"?"]), max_size=12
).map(b"".join)
# Field values as RFC 9110 allows them: visible ASCII, spaces and tabs, and obs-text.
VALUE = st.binary(max_size=40).map(
    lambda v: bytes(b for b in v if b == 9 or 0x20 <= b != 0x7F).strip(b" \t")
)
HEADERS = st.lists(st.tuples(TOKEN, VALUE), max_size=8).map(
    lambda pairs: [
        (n, v)
        for n, v in pairs
        if n.lower() not in {"content-length", "transfer-encoding", "host", "connection", "expect"}
    ]
)
BODY = st.binary(max_size=2048)


@st.composite
def requests(draw):
    """A request and what oxloop-http should pass on of it (`None` when the mangling
    makes it invalid and a rejection is acceptable)."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]) | TOKEN)
    path = draw(PATH)
    query = draw(QUERY)
    headers = draw(HEADERS)
    body = draw(BODY)
    chunked = draw(st.booleans())
    target = path + (b"?" + query if query else b"")
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: fuzz"]
    head += [n.encode() + b": " + v for n, v in headers]
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 300), max_size=8))
        pieces, at = [], 0
        for size in sizes:
            piece = body[at : at + size]
            if not piece:
                break
            pieces.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
            at += len(piece)
        body = body[:at]
        payload = b"".join(pieces) + b"0\r\n\r\n"
    else:
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    raw = b"\r\n".join(head) + b"\r\n\r\n" + payload
    expected = {
        "method": method,
        "target": target,
        "path": path,
        "query": query,
        "headers": headers,
        "body": body,
    }
    mangle = draw(st.sampled_from(["none"] * 3 + ["byte", "cut", "insert"]))
    if mangle != "none" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        if mangle == "byte":
            raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
        elif mangle == "cut":
            raw = raw[:at]
        else:
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
        expected = None
        event(f"mangled by {mangle}")
    return raw, expected


def exchange(address, raw: bytes) -> tuple[int, bytes]:
    """Sends `raw`, half-closes, and returns the first response's status and body
    (status 0 when the server closed without a response, which only a request cut
    short may get)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    if not data:
        return 0, b""
    assert data.startswith(b"HTTP/1.1 "), data[:80]
    response = http.client.HTTPResponse(Recorded(data))  # type: ignore[arg-type]
    response.begin()
    return response.status, response.read()


class Recorded:
    """What `http.client.HTTPResponse` reads a response from: bytes already received."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


# What the generator found once: a raw non-ASCII query is Latin-1 in QUERY_STRING.
FOUND = (
    b"GET /caf%C3%A9?\xc3\xa9=1 HTTP/1.1\r\nHost: fuzz\r\nX: \xff\r\nContent-Length: 0\r\n\r\n",
    {
        "method": "GET",
        "path": b"/caf%C3%A9",
        "query": b"\xc3\xa9=1",
        "headers": [("X", b"\xff")],
        "body": b"",
    },
)


@FUZZ
@given(requests())
@example(FOUND)
def test_wsgi_boundary(wsgi_server, request_and_expected):
    raw, expected = request_and_expected
    status, body = exchange(wsgi_server, raw)
    event(f"{'valid' if expected else 'mangled'}: {status}")
    assert status != 500, body
    if status == 0:
        assert expected is None, "a whole request got no response"
        return
    if status != 200:
        assert status in REJECTED, status
        assert expected is None, (status, raw[:300])
        return
    report = json.loads(body)
    if expected is None:
        return
    assert report["method"] == expected["method"]
    assert report["path"] == unquote_to_bytes(expected["path"]).decode("latin-1")
    assert report["query"] == expected["query"].decode("latin-1")
    assert report["body"] == expected["body"].decode("latin-1")
    for name, value in expected["headers"]:
        if "_" in name:
            continue  # may be dropped: it would collide with a dash in CGI's names
        key = name.upper().replace("-", "_")
        key = key if key == "CONTENT_TYPE" else "HTTP_" + key
        assert value.decode("latin-1") in report["headers"].get(key, ""), (
            name,
            value,
            report["headers"],
        )


@FUZZ
@given(requests())
@example(FOUND)
def test_asgi_boundary(asgi_server, request_and_expected):
    raw, expected = request_and_expected
    status, body = exchange(asgi_server, raw)
    event(f"{'valid' if expected else 'mangled'}: {status}")
    assert status != 500, body
    if status == 0:
        assert expected is None, "a whole request got no response"
        return
    if status != 200:
        assert status in REJECTED, status
        assert expected is None, (status, raw[:300])
        return
    report = json.loads(body)
    if expected is None:
        return
    assert report["method"] == expected["method"]
    assert report["raw_path"] == expected["path"].decode("latin-1")
    assert report["path"] == unquote_to_bytes(expected["path"]).decode("utf-8", "replace")
    assert report["query"] == expected["query"].decode("latin-1")
    assert report["body"] == expected["body"].decode("latin-1")
    got = [tuple(pair) for pair in report["headers"]]
    for name, value in expected["headers"]:
        assert [name.lower(), value.decode("latin-1")] in report["headers"], (name, value, got)
