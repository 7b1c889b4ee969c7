"""ASGI applications served by `oxloop.web` (oxloop-http), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import socket
import struct
import threading

import pytest
from web_helpers import exchange_json, raw_exchange, serving

import oxloop.web

starlette = pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def make_starlette(events: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield {"greeting": "hello"}
        events.append("shutdown")

    async def home(request):
        return PlainTextResponse(f"{request.state.greeting} {request.url.path}")

    async def echo(request):
        body = await request.body()
        return JSONResponse(
            {
                "size": len(body),
                "head": body[:16].decode("latin-1"),
                "q": request.query_params.get("q"),
                "client": request.client.host,
                "path": request.url.path,
                "root_path": request.scope["root_path"],
                "method": request.method,
                "x": request.headers.get("x-thing"),
            }
        )

    async def stream(request):
        n = int(request.query_params.get("n", "5"))
        size = int(request.query_params.get("size", "7"))

        async def pieces():
            for i in range(n):
                yield (b"%06d" % i) + b"x" * (size - 6)

        return StreamingResponse(pieces(), media_type="application/octet-stream")

    async def boom(request):
        raise ValueError("boom from the application")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/echo", echo, methods=["GET", "POST", "PUT"]),
            Route("/stream", stream),
            Route("/boom", boom),
            Route("/caf\u00e9", home),
        ],
        lifespan=lifespan,
    )


def test_starlette_requests_lifespan_and_errors():
    events: list[str] = []
    app = make_starlette(events)
    with serving(oxloop.web.start_asgi, app=app) as address:
        assert events == ["startup"]
        conn = http.client.HTTPConnection(*address, timeout=5)
        # Several requests on one keep-alive connection.
        for _ in range(3):
            conn.request("GET", "/")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"hello /")
            assert r.getheader("content-type").startswith("text/plain")
        conn.request("POST", "/echo?q=%C3%A9", body=b"hello world", headers={"X-Thing": "1"})
        r = conn.getresponse()
        data = json.loads(r.read())
        assert data == {
            "size": 11,
            "head": "hello world",
            "q": "\u00e9",
            "client": "127.0.0.1",
            "path": "/echo",
            "root_path": "",
            "method": "POST",
            "x": "1",
        }
        conn.request("GET", "/caf%C3%A9")
        r = conn.getresponse()
        assert r.read() == "hello /caf\u00e9".encode()
        # An exception in the application: a 500, and the server goes on.
        conn.request("GET", "/boom")
        r = conn.getresponse()
        assert r.status == 500
        r.read()
        conn.close()
        conn = http.client.HTTPConnection(*address, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello /"
        conn.close()
    assert events == ["startup", "shutdown"]


def test_streamed_bodies_both_ways():
    app = make_starlette([])
    with serving(oxloop.web.start_asgi, app=app) as address:
        conn = http.client.HTTPConnection(*address, timeout=10)
        # A large chunked upload (above every high-water mark).
        big = bytes(range(256)) * 8192  # 2 MiB

        def pieces():
            for i in range(0, len(big), 100_000):
                yield big[i : i + 100_000]

        conn.request("PUT", "/echo", body=pieces(), encode_chunked=True)
        data = json.loads(conn.getresponse().read())
        assert data["size"] == len(big)
        # A large streamed response, read slowly enough to fill the buffers.
        conn.request("GET", "/stream?n=200&size=16384")
        r = conn.getresponse()
        assert r.getheader("transfer-encoding") == "chunked"
        body = r.read()
        assert len(body) == 200 * 16384
        assert body[:6] == b"000000" and body[-16384:][:6] == b"000199"
        conn.close()


def test_root_path_and_lifespan_state():
    app = make_starlette([])
    with serving(oxloop.web.start_asgi, app=app, root_path="/api") as address:
        conn = http.client.HTTPConnection(*address, timeout=5)
        # As behind a proxy that strips the prefix: the scope's path gets it back.
        conn.request("GET", "/echo")
        data = json.loads(conn.getresponse().read())
        assert data["root_path"] == "/api"
        assert data["path"] == "/api/echo"
        conn.close()


async def raw_app(scope, receive, send):
    """A plain ASGI application for the protocol's corners."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/nothing":
        return  # no response at all: 500
    if path == "/wait-disconnect":
        message = await receive()
        assert message["type"] == "http.request"
        message = await receive()
        DISCONNECTS.append(message["type"])
        DISCONNECTED.set()
        return
    if path == "/fail-mid-stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("failed half-way")
    if path == "/slow-pieces":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"text/plain"), (b"x-method", scope["method"].encode())]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": b"got %d" % len(body)})


DISCONNECTS: list[str] = []
DISCONNECTED = threading.Event()


async def echo_scope(scope, receive, send):
    """Answers with the scope's plain values as JSON, then spoils its scope (no request
    may see what an earlier one did to its own)."""
    if scope["type"] == "lifespan":
        return
    facts = {k: v for k, v in scope.items() if isinstance(v, (str, int, tuple))}
    facts["raw_path"] = scope["raw_path"].decode("latin-1")
    facts["query_string"] = scope["query_string"].decode("latin-1")
    facts["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
    scope["method"] = "spoiled"
    scope["headers"].append((b"spoiled", b"yes"))
    body = json.dumps(facts).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_scope_values_change_with_each_request():
    with serving(oxloop.web.start_asgi, app=echo_scope) as address:
        first = socket.create_connection(address, timeout=10)
        second = socket.create_connection(address, timeout=10)
        with first, second:
            a = exchange_json(
                first,
                b"TRACE /caf%C3%A9?q=%20 HTTP/1.1\r\nHost: h\r\nX-Thing: 1\r\nx-thing: 2\r\n\r\n",
            )
            assert (a["type"], a["method"], a["http_version"]) == ("http", "TRACE", "1.1")
            assert (a["path"], a["raw_path"]) == ("/caf\u00e9", "/caf%C3%A9")
            assert a["query_string"] == "q=%20"
            assert a["headers"] == [["host", "h"], ["x-thing", "1"], ["x-thing", "2"]]
            assert a["client"] == ["127.0.0.1", first.getsockname()[1]]
            b = exchange_json(first, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert (b["method"], b["http_version"], b["path"]) == ("GET", "1.0", "/")
            assert (b["query_string"], b["headers"]) == ("", [["connection", "keep-alive"]])
            assert b["client"] == a["client"]
            c = exchange_json(second, b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
            assert (c["method"], c["http_version"]) == ("POST", "1.1")
            assert c["client"] == ["127.0.0.1", second.getsockname()[1]] != a["client"]


def test_raw_asgi_corners():
    with serving(oxloop.web.start_asgi, app=raw_app) as address:
        conn = http.client.HTTPConnection(*address, timeout=5)
        conn.request("GET", "/nothing")
        r = conn.getresponse()
        assert r.status == 500
        r.read()
        conn.close()
        # A failure half-way through a streamed body cuts the connection: the client
        # sees an incomplete response, never a complete one (on io_uring, where sends
        # wait for the loop's next submission, the cut may come before any of it).
        conn = http.client.HTTPConnection(*address, timeout=5)
        conn.request("GET", "/fail-mid-stream")
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            conn.getresponse().read()
        conn.close()
        conn = http.client.HTTPConnection(*address, timeout=5)
        conn.request("GET", "/slow-pieces")
        assert conn.getresponse().read() == b"ababab"
        conn.request("HEAD", "/x")
        r = conn.getresponse()
        assert (r.status, r.getheader("x-method"), r.read()) == (201, "HEAD", b"")
        conn.close()
        # Pipelined requests are answered in order.
        out = raw_exchange(
            address,
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert out.count(b"HTTP/1.1 201") == 2
        assert out.index(b"got 3") < out.index(b"got 0")
        # receive() gives http.disconnect once the connection is gone (here reset; a
        # half-close is not a disconnect: the client may still read the answer).
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert DISCONNECTED.wait(5)
        assert DISCONNECTS == ["http.disconnect"]


def test_pipelined_answers_at_once_and_after_waiting_keep_their_order():
    # Requests answered in their first step (in the read callback) around one whose
    # application waits (`/slow-pieces`), with bodies the application reads.
    def post(size: int, last: bool = False) -> bytes:
        close = b"Connection: close\r\n" if last else b""
        head = b"POST /p HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n" % (close, size)
        return head + b"x" * size

    with serving(oxloop.web.start_asgi, app=raw_app) as address:
        out = raw_exchange(
            address,
            post(1)
            + post(2)
            + b"GET /slow-pieces HTTP/1.1\r\nHost: x\r\n\r\n"
            + post(3)
            + post(4, last=True),
        )
        marks = [b"got 1", b"got 2", b"2\r\nab\r\n2\r\nab\r\n2\r\nab", b"got 3", b"got 4"]
        places = [out.index(mark) for mark in marks]
        assert places == sorted(places)
        assert out.count(b"HTTP/1.1 ") == 5


def test_hostile_input_is_answered_by_the_server():
    with serving(
        oxloop.web.start_asgi, app=raw_app, max_head_bytes=1024, max_body_bytes=100
    ) as address:
        out = raw_exchange(
            address,
            b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n",
            half_close=False,
        )
        assert out.startswith(b"HTTP/1.1 431")
        out = raw_exchange(
            address,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000,
            half_close=False,
        )
        assert out.startswith(b"HTTP/1.1 413")
        out = raw_exchange(
            address, b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        assert out.startswith(b"HTTP/1.1 400")
        out = raw_exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 201")


def test_start_asgi_needs_an_oxloop_loop():
    async def main():
        await oxloop.web.start_asgi(raw_app, port=0)

    with pytest.raises(TypeError):
        asyncio.run(main())


def test_a_server_that_cannot_listen_undoes_the_lifespan_startup():
    events: list[str] = []

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            kind = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(OSError) as failed:
                await oxloop.web.start_asgi(app, port=taken.getsockname()[1])
            assert failed.value.errno == errno.EADDRINUSE

    oxloop.run(asyncio.wait_for(main(), 30))
    assert events == ["lifespan.startup", "lifespan.shutdown"]
