"""Programs written for asyncio by others, run unchanged on the oxloop loop:
aiohttp (server and client) and uvicorn serving a small ASGI app."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from conftest import free_port, run


def test_aiohttp_server_and_client(loop):
    web = pytest.importorskip("aiohttp.web", reason="aiohttp is not installed")
    import aiohttp

    async def hello(request):
        return web.json_response({"hello": request.match_info["name"]})

    async def upload(request):
        body = await request.read()
        return web.Response(body=body[::-1])

    async def ws_echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo:" + msg.data)
        return ws

    async def main():
        app = web.Application()
        app.add_routes(
            [web.get("/hello/{name}", hello), web.post("/up", upload), web.get("/ws", ws_echo)]
        )
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/hello/ox") as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"hello": "ox"}
                payload = bytes(range(256)) * 4096
                async with session.post(f"http://127.0.0.1:{port}/up", data=payload) as resp:
                    assert await resp.read() == payload[::-1]
                results = await asyncio.gather(
                    *(_get_json(session, f"http://127.0.0.1:{port}/hello/{i}") for i in range(50))
                )
                assert results == [{"hello": str(i)} for i in range(50)]
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                    await ws.send_str("ping")
                    msg = await ws.receive()
                    assert msg.data == "echo:ping"
        finally:
            await runner.cleanup()
        return True

    assert run(loop, main(), timeout=30)


async def _get_json(session, url):
    async with session.get(url) as resp:
        return await resp.json()


async def _asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = json.dumps({"path": scope["path"], "len": len(body)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def _raw_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


def test_uvicorn_serves_asgi_app(loop):
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
    port = free_port()

    async def main():
        config = uvicorn.Config(
            _asgi_app,
            host="127.0.0.1",
            port=port,
            loop="none",
            lifespan="on",
            log_level="warning",
            http="h11",
        )
        server = uvicorn.Server(config)
        # The test owns the process's signals; uvicorn must not install its own.
        server.install_signal_handlers = lambda: None
        serving = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
        answers = await asyncio.gather(*(_raw_get(port, f"/item/{i}") for i in range(20)))
        # Also with a plain blocking socket in a thread (a client nobody here wrote).
        blocking = await asyncio.to_thread(_blocking_get, port)
        server.should_exit = True
        await serving
        return answers, blocking

    answers, blocking = run(loop, main(), timeout=30)
    for i, raw in enumerate(answers):
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw
        assert json.loads(body) == {"path": f"/item/{i}", "len": 0}
    assert blocking.startswith(b"HTTP/1.1 200")


def _blocking_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert b'"len": 3' in data
    return data
