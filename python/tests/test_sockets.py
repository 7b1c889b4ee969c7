"""The loop's low-level socket methods (sock_*) on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile

import pytest
from conftest import run


def _nb(sock):
    sock.setblocking(False)
    return sock


async def _tcp_pair(loop):
    listener = _nb(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = _nb(socket.socket())
    accept = loop.create_task(loop.sock_accept(listener))
    await loop.sock_connect(client, listener.getsockname())
    server, addr = await accept
    assert addr == client.getsockname()
    listener.close()
    server.setblocking(False)
    return client, server


def test_connect_accept_send_recv(loop):
    async def main():
        client, server = await _tcp_pair(loop)
        with client, server:
            await loop.sock_sendall(client, b"hello world")
            data = b""
            while len(data) < 11:
                data += await loop.sock_recv(server, 100)
            buf = bytearray(5)
            await loop.sock_sendall(server, b"abcde")
            n = 0
            view = memoryview(buf)
            while n < 5:
                n += await loop.sock_recv_into(client, view[n:])
            return data, bytes(buf)

    assert run(loop, main()) == (b"hello world", b"abcde")


def test_sendall_large(loop):
    payload = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers

    async def main():
        client, server = await _tcp_pair(loop)
        with client, server:

            async def reader():
                got = bytearray()
                while len(got) < len(payload):
                    chunk = await loop.sock_recv(server, 65536)
                    assert chunk
                    got += chunk
                return bytes(got)

            r = loop.create_task(reader())
            await loop.sock_sendall(client, payload)
            return await r

    assert run(loop, main()) == payload


def test_recv_eof(loop):
    async def main():
        client, server = await _tcp_pair(loop)
        with server:
            client.close()
            return await loop.sock_recv(server, 10)

    assert run(loop, main()) == b""


def test_recv_cancel_then_reuse(loop):
    async def main():
        client, server = await _tcp_pair(loop)
        with client, server:
            t = loop.create_task(loop.sock_recv(server, 10))
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            await loop.sock_sendall(client, b"z")
            return await loop.sock_recv(server, 10)

    assert run(loop, main()) == b"z"


def test_connect_refused(loop):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    addr = probe.getsockname()
    probe.close()

    async def main():
        with _nb(socket.socket()) as s:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(s, addr)

    run(loop, main())


def test_udp_sendto_recvfrom(loop):
    async def main():
        a = _nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        b = _nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with a, b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            if sys.version_info >= (3, 11):
                await loop.sock_sendto(a, b"dgram", b.getsockname())
                data, addr = await loop.sock_recvfrom(b, 100)
                assert (data, addr) == (b"dgram", a.getsockname())
                buf = bytearray(10)
                await loop.sock_sendto(b, b"back", a.getsockname())
                n, addr = await loop.sock_recvfrom_into(a, buf)
                assert (bytes(buf[:n]), addr) == (b"back", b.getsockname())
            else:
                a.sendto(b"dgram", b.getsockname())
                assert await loop.sock_recv(b, 100) == b"dgram"
            return True

    assert run(loop, main())


def test_blocking_socket_rejected_in_debug_mode(loop):
    loop.set_debug(True)  # asyncio checks the socket's mode in debug mode only

    async def main():
        with socket.socket() as s:
            assert s.getblocking()
            for coro in (
                loop.sock_recv(s, 1),
                loop.sock_recv_into(s, bytearray(1)),
                loop.sock_sendall(s, b"x"),
                loop.sock_connect(s, ("127.0.0.1", 1)),
                loop.sock_accept(s),
            ):
                with pytest.raises(ValueError, match="non-blocking"):
                    try:
                        await coro
                    finally:
                        coro.close()

    run(loop, main())


def test_sock_sendfile(loop):
    payload = b"0123456789" * 100_000

    async def main():
        client, server = await _tcp_pair(loop)
        with client, server, tempfile.TemporaryFile() as f:
            f.write(payload)
            f.flush()
            f.seek(0)

            async def reader():
                got = bytearray()
                while True:
                    chunk = await loop.sock_recv(server, 65536)
                    if not chunk:
                        return bytes(got)
                    got += chunk

            r = loop.create_task(reader())
            sent = await loop.sock_sendfile(client, f)
            assert sent == len(payload)
            f.seek(0)
            sent2 = await loop.sock_sendfile(client, f, offset=10, count=20)
            assert sent2 == 20
            client.shutdown(socket.SHUT_WR)
            return await r

    assert run(loop, main()) == payload + payload[10:30]


def test_sock_sendfile_refuses_udp(loop):
    async def main():
        with _nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
            with tempfile.TemporaryFile() as f:
                with pytest.raises(ValueError, match="SOCK_STREAM"):
                    await loop.sock_sendfile(s, f)

    run(loop, main())


def test_getaddrinfo_numeric_and_localhost(loop):
    async def main():
        numeric = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        assert numeric[0][4] == ("127.0.0.1", 80)
        v6 = await loop.getaddrinfo("::1", "443", type=socket.SOCK_STREAM)
        assert v6[0][4][:2] == ("::1", 443)
        local = await loop.getaddrinfo("localhost", 8080, type=socket.SOCK_STREAM)
        assert {ai[4][0] for ai in local} & {"127.0.0.1", "::1"}
        assert local == socket.getaddrinfo("localhost", 8080, type=socket.SOCK_STREAM)
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo("no-such-host.invalid", 80)
        return True

    assert run(loop, main())


def test_getaddrinfo_matches_socket_module(loop):
    async def main():
        for host, port, kw in [
            ("127.0.0.1", "http", {}),
            (None, 0, {"flags": socket.AI_PASSIVE}),
            ("127.0.0.1", 0, {"family": socket.AF_INET, "proto": socket.IPPROTO_UDP}),
        ]:
            got = await loop.getaddrinfo(host, port, **kw)
            want = socket.getaddrinfo(
                host,
                port,
                kw.get("family", 0),
                kw.get("type", 0),
                kw.get("proto", 0),
                kw.get("flags", 0),
            )
            assert got == want, (host, port, kw)
        return True

    assert run(loop, main())


def test_getnameinfo(loop):
    async def main():
        return await loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST)

    host, port = run(loop, main())
    assert host == "127.0.0.1"
