"""Running an `oxloop.web` server on a thread of its own for a test, and raw clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import oxloop
import oxloop.web


@contextlib.contextmanager
def serving(start: Any, **kwargs: Any) -> Iterator[tuple[str, int]]:
    """Runs `start(app..., port=0, **kwargs)` (`oxloop.web.start_asgi` / `start_wsgi`)
    on a new oxloop loop in a thread; yields `(host, port)`; shuts down gracefully."""
    ready: dict[str, Any] = {}
    started = threading.Event()
    loop = oxloop.new_event_loop()

    async def main() -> None:
        try:
            server = await start(port=0, **kwargs)
        except BaseException as exc:
            ready["error"] = exc
            started.set()
            return
        ready["server"] = server
        ready["stop"] = stop = asyncio.Event()
        started.set()
        await stop.wait()
        await server.shutdown(5.0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    try:
        assert started.wait(10), "the server did not start"
        if "error" in ready:
            raise ready["error"]
        yield ready["server"].address
    finally:
        if "stop" in ready:
            loop.call_soon_threadsafe(ready["stop"].set)
        thread.join(15)
        assert not thread.is_alive(), "the server did not shut down"
        loop.close()


def raw_exchange(
    address: tuple[str, int], data: bytes, timeout: float = 5.0, half_close: bool = True
) -> bytes:
    """Sends `data` (then half-closes, if `half_close`), returns everything the server
    sent until it closed."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            piece = sock.recv(65536)
            if not piece:
                return b"".join(chunks)
            chunks.append(piece)


def exchange_json(sock, request: bytes) -> dict:
    """Sends one request on `sock` (give it a time-out) and reads its `200` response's
    JSON body (Content-Length framed)."""
    sock.sendall(request)
    reader = sock.makefile("rb")
    status = reader.readline()
    assert status.split(b" ")[1:2] == [b"200"], status
    length = None
    while (line := reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    assert length is not None
    return json.loads(reader.read(length))
