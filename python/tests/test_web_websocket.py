"""WebSocket (RFC 6455) applications served by `oxloop.web`, driven by the `websockets`
client library and by raw frames over real sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import pytest
from web_helpers import raw_exchange, serving

import oxloop.web

pytest.importorskip("starlette")
websockets = pytest.importorskip("websockets")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def make_app(events: list[tuple]) -> Starlette:
    async def echo(ws: WebSocket) -> None:
        offered = ws.scope["subprotocols"]
        await ws.accept(subprotocol="chat.v2" if "chat.v2" in offered else None)
        events.append(("scope", ws.scope["scheme"], ws.scope["path"], offered))
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                events.append(("disconnect", message["code"], message.get("reason")))
                return
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])

    async def close(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("closing")
        await ws.close(code=4003, reason="nope")
        message = await ws.receive()
        events.append(("after close", message["type"]))

    async def reject(ws: WebSocket) -> None:
        await ws.close()

    async def deny(ws: WebSocket) -> None:
        await ws.send_denial_response(PlainTextResponse("no entry", status_code=401))

    async def boom(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        raise ValueError("boom from the WebSocket application")

    async def boom_early(ws: WebSocket) -> None:
        raise ValueError("boom before accepting")

    async def home(request):
        return PlainTextResponse("plain http")

    return Starlette(
        routes=[
            Route("/", home),
            WebSocketRoute("/echo", echo),
            WebSocketRoute("/close", close),
            WebSocketRoute("/reject", reject),
            WebSocketRoute("/deny", deny),
            WebSocketRoute("/boom", boom),
            WebSocketRoute("/boom-early", boom_early),
        ]
    )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_echo_subprotocol_fragments_ping_and_client_close():
    events: list[tuple] = []
    with serving(oxloop.web.start_asgi, app=make_app(events)) as (host, port):
        url = f"ws://{host}:{port}/echo"

        async def client() -> None:
            async with connect(url, subprotocols=["chat.v1", "chat.v2"], max_size=None) as ws:
                assert ws.subprotocol == "chat.v2"
                await ws.send("hello")
                assert await ws.recv() == "hello"
                await ws.send(b"\x00\x01bytes")
                assert await ws.recv() == b"\x00\x01bytes"
                await ws.send("caf\u00e9 \u2603")
                assert await ws.recv() == "caf\u00e9 \u2603"
                # Large, and fragmented by the client: reassembled by the server.
                big = os.urandom(3 * 1024 * 1024)
                await ws.send([big[i : i + 65536] for i in range(0, len(big), 65536)])
                assert await ws.recv() == big
                text = "".join(chr(0x41 + i % 26) for i in range(200_000))
                await ws.send([text[:70_000], text[70_000:]])
                assert await ws.recv() == text
                # Pings are answered by the server itself.
                pong = await ws.ping(b"are you there")
                await asyncio.wait_for(pong, 5)
                await ws.close(code=4001, reason="bye")
                assert ws.close_code == 4001

        run(client())
        # Plain HTTP on the same server goes on.
        reply = raw_exchange((host, port), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reply.endswith(b"plain http")
    assert ("scope", "ws", "/echo", ["chat.v1", "chat.v2"]) in events
    assert ("disconnect", 4001, "bye") in events


def test_server_close_rejection_denial_and_failures():
    events: list[tuple] = []
    with serving(oxloop.web.start_asgi, app=make_app(events)) as (host, port):
        base = f"ws://{host}:{port}"

        async def client() -> None:
            async with connect(f"{base}/close") as ws:
                assert await ws.recv() == "closing"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd.code == 4003
                assert closed.value.rcvd.reason == "nope"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{base}/reject"):
                    pass
            assert refused.value.response.status_code == 403
            with pytest.raises(InvalidStatus) as denied:
                async with connect(f"{base}/deny"):
                    pass
            assert denied.value.response.status_code == 401
            assert denied.value.response.body == b"no entry"
            with pytest.raises(InvalidStatus) as failed:
                async with connect(f"{base}/boom-early"):
                    pass
            assert failed.value.response.status_code == 500
            # An application that raises after accepting: closed with 1011.
            async with connect(f"{base}/boom") as ws:
                await ws.send("go")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd.code == 1011
            # And the server goes on.
            async with connect(f"{base}/echo") as ws:
                await ws.send("still here")
                assert await ws.recv() == "still here"

        run(client())
    assert ("after close", "websocket.disconnect") in events


SIZE = 1024 * 1024


async def flood(scope, receive, send) -> None:
    """Sends more than the socket buffers hold while the client does not read, then
    lets the client send as much before reading it: back-pressure both ways. (A plain
    ASGI application, so that it sees the server's own `send`.)"""
    if scope["type"] != "websocket":
        return
    n = int(scope["query_string"].decode())
    await receive()
    await send({"type": "websocket.accept"})
    waited = 0
    for i in range(n):
        pending = send({"type": "websocket.send", "bytes": bytes([i % 256]) * SIZE})
        waited += isinstance(pending, asyncio.Future)  # a future only when it must wait
        await pending
    await asyncio.sleep(0.3)
    total = 0
    for i in range(n):
        message = await receive()
        assert message["bytes"] == bytes([i % 256]) * SIZE
        total += len(message["bytes"])
    await send({"type": "websocket.send", "text": f"{total} {waited > 0}"})
    assert (await receive())["type"] == "websocket.disconnect"


def test_back_pressure_both_ways():
    n = 24
    with serving(oxloop.web.start_asgi, app=flood, lifespan="off") as (host, port):

        async def client() -> None:
            url = f"ws://{host}:{port}/?{n}"
            # A small receive buffer (no autotuning), so the kernel cannot hold it all.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.connect((host, port))
            sock.setblocking(False)
            async with connect(url, sock=sock, max_size=None, max_queue=2) as ws:
                await asyncio.sleep(0.3)
                for i in range(n):
                    assert await ws.recv() == bytes([i % 256]) * SIZE
                for i in range(n):
                    await ws.send(bytes([i % 256]) * SIZE)
                assert await ws.recv() == f"{n * SIZE} True"

        run(client())


def test_message_size_limit_closes_with_1009():
    events: list[tuple] = []
    app = make_app(events)
    with serving(oxloop.web.start_asgi, app=app, ws_max_message_bytes=1000) as (host, port):

        async def client() -> None:
            async with connect(f"ws://{host}:{port}/echo") as ws:
                await ws.send("x" * 1000)
                assert await ws.recv() == "x" * 1000
                await ws.send(["x" * 600, "x" * 600])
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd.code == 1009

        run(client())
    assert ("disconnect", 1009, "message too big") in events


# ----- raw frames: what a client library would never send --------------------------


def handshake(sock: socket.socket, path: str = "/echo", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        piece = sock.recv(1)
        assert piece, head
        head += piece
    return head


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | n)
    else:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece


def close_code_of(data: bytes) -> int:
    """The code of the close frame at the end of what the server sent."""
    at = data.rfind(b"\x88")
    assert at >= 0, data
    return struct.unpack("!H", data[at + 2 : at + 4])[0]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(0x1, b"unmasked", mask=False)], 1002),
        ([frame(0x1, b"\xff\xfe not utf-8")], 1007),
        ([frame(0x1, b"first", fin=False), frame(0x1, b"new message")], 1002),
        ([frame(0x9, b"fragmented ping", fin=False)], 1002),
        ([frame(0x3, b"reserved opcode")], 1002),
        ([frame(0x1, b"a", fin=False), frame(0x0, b"\xc3", fin=False), frame(0x0, b"(")], 1007),
    ],
)
def test_invalid_frames_are_closed_with_a_code(frames, code):
    with serving(oxloop.web.start_asgi, app=make_app([])) as address:
        with socket.create_connection(address, timeout=10) as sock:
            assert handshake(sock).startswith(b"HTTP/1.1 101 ")
            sock.sendall(b"".join(frames))
            assert close_code_of(read_until_closed(sock)) == code


def test_handshake_checks_and_raw_exchange():
    with serving(oxloop.web.start_asgi, app=make_app([])) as address:
        with socket.create_connection(address, timeout=10) as sock:
            head = handshake(sock)
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
            assert b"\r\nUpgrade: websocket\r\n" in head
            # A text message split in three frames, a ping in the middle.
            sock.sendall(
                frame(0x1, b"frag", fin=False)
                + frame(0x9, b"p")
                + frame(0x0, b"men", fin=False)
                + frame(0x0, b"ted")
            )
            got = b""
            while got.count(b"fragmented") < 1:
                got += sock.recv(65536)
            assert got.startswith(b"\x8a\x01p")  # the pong comes first
            assert got.endswith(b"\x81\x0afragmented")
            sock.sendall(frame(0x8, struct.pack("!H", 1000)))
            rest = read_until_closed(sock)
            assert rest == b"\x88\x02\x03\xe8"  # the close echoed, then the end
        key = base64.b64encode(os.urandom(16)).decode()
        common = "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        bad_version = f"{common}Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 8\r\n\r\n"
        reply = raw_exchange(address, bad_version.encode())
        assert reply.startswith(b"HTTP/1.1 426 ")
        assert b"Sec-WebSocket-Version: 13" in reply
        no_key = f"{common}Sec-WebSocket-Version: 13\r\n\r\n"
        assert raw_exchange(address, no_key.encode()).startswith(b"HTTP/1.1 400 ")


def test_graceful_shutdown_closes_with_1001_on_one_loop():
    """Server and `websockets` client on the same oxloop loop."""
    seen: list[tuple] = []

    async def app(scope, receive, send):
        assert scope["type"] == "websocket"
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        seen.append((message["type"], message.get("code")))

    async def main() -> None:
        server = await oxloop.web.start_asgi(app, port=0, lifespan="off")
        host, port = server.address
        async with connect(f"ws://{host}:{port}/") as ws:
            await server.shutdown(timeout=5)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1001
        assert server.connections() == 0

    oxloop.run(asyncio.wait_for(main(), 30))
    assert seen == [("websocket.disconnect", 1001)]


def test_command_line_setting():
    from oxloop import serve

    args = serve._parser().parse_args(["m:app", "--ws-max-message-bytes", "4096"])
    assert args.ws_max_message_bytes == 4096
    assert (args.ws_ping_interval, args.ws_ping_timeout) == (20.0, 20.0)
    args = serve._parser().parse_args(["m:app", "--ws-ping-interval", "none"])
    assert args.ws_ping_interval is None
    args = serve._parser().parse_args(["m:app", "--ws-ping-timeout", "2.5"])
    assert args.ws_ping_timeout == 2.5


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked frame from the server: (opcode, payload)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            piece = sock.recv(n - len(data))
            assert piece, "the server closed the connection"
            data += piece
        return data

    first, second = exactly(2)
    n = second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", exactly(2))
    return first & 0x0F, exactly(n)


def test_keepalive_pings_close_a_silent_client_with_1011():
    events: list[tuple] = []
    settings = {"ws_ping_interval": 0.1, "ws_ping_timeout": 0.3}
    with serving(oxloop.web.start_asgi, app=make_app(events), **settings) as address:
        # A client that answers every ping stays connected through many timeouts.
        with socket.create_connection(address, timeout=10) as sock:
            assert handshake(sock).startswith(b"HTTP/1.1 101 ")
            pings = 0
            while pings < 8:
                opcode, payload = read_frame(sock)
                assert opcode == 0x9
                pings += 1
                sock.sendall(frame(0xA, payload))
            sock.sendall(frame(0x1, b"still here"))
            while (opcode := read_frame(sock))[0] == 0x9:
                sock.sendall(frame(0xA, opcode[1]))
            assert opcode == (0x1, b"still here")
        # A client that never answers is closed with 1011 after the timeout.
        with socket.create_connection(address, timeout=10) as sock:
            assert handshake(sock).startswith(b"HTTP/1.1 101 ")
            assert close_code_of(read_until_closed(sock)) == 1011
    assert ("disconnect", 1011, "keepalive ping timeout") in events


def test_keepalive_pings_can_be_turned_off():
    with pytest.raises(ValueError, match="ws_ping_timeout must be a positive number"):
        with serving(oxloop.web.start_asgi, app=make_app([]), ws_ping_timeout=-1):
            pass
    settings = {"ws_ping_interval": None, "ws_ping_timeout": 0.05}
    with serving(oxloop.web.start_asgi, app=make_app([]), **settings) as address:
        with socket.create_connection(address, timeout=0.5) as sock:
            assert handshake(sock).startswith(b"HTTP/1.1 101 ")
            with pytest.raises(TimeoutError):
                sock.recv(1)  # no ping, no close
            sock.settimeout(10)
            sock.sendall(frame(0x1, b"hi"))
            assert read_frame(sock) == (0x1, b"hi")
