"""Unix-domain stream sockets: create_unix_server and create_unix_connection."""

from __future__ import annotations

import asyncio
import os
import socket

from conftest import run


async def _echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_unix_echo(loop, tmp_path):
    path = str(tmp_path / "echo.sock")

    async def main():
        server = await asyncio.start_unix_server(_echo, path)
        async with server:
            assert os.path.exists(path)
            reader, writer = await asyncio.open_unix_connection(path)
            assert writer.get_extra_info("peername") == path
            writer.write(b"over unix\n")
            line = await reader.readline()
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
        return line

    assert run(loop, main()) == b"over unix\n"


def test_unix_server_with_sock_and_start_serving_false(loop, tmp_path):
    path = str(tmp_path / "s.sock")

    async def main():
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        server = await loop.create_unix_server(asyncio.Protocol, sock=sock, start_serving=False)
        assert not server.is_serving()
        await server.start_serving()
        transport, proto = await loop.create_unix_connection(asyncio.Protocol, path)
        assert transport.get_extra_info("socket").family == socket.AF_UNIX
        transport.close()
        server.close()
        await server.wait_closed()
        return True

    assert run(loop, main())


def test_unix_connection_with_sock(loop, tmp_path):
    path = str(tmp_path / "c.sock")

    async def main():
        server = await asyncio.start_unix_server(_echo, path)
        async with server:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            writer.write(b"abc")
            got = await reader.readexactly(3)
            writer.close()
            await writer.wait_closed()
        return got

    assert run(loop, main()) == b"abc"


def test_unix_connect_missing_path(loop, tmp_path):
    async def main():
        try:
            await loop.create_unix_connection(asyncio.Protocol, str(tmp_path / "missing"))
        except FileNotFoundError:
            return True
        return False

    assert run(loop, main())


def test_unix_datagram_endpoint(loop, tmp_path):
    server_path = str(tmp_path / "dgram-server.sock")
    client_path = str(tmp_path / "dgram-client.sock")

    class P(asyncio.DatagramProtocol):
        def __init__(self):
            self.queue = asyncio.Queue()

        def datagram_received(self, data, addr):
            self.queue.put_nowait((data, addr))

    async def main():
        st, sp = await loop.create_datagram_endpoint(
            P, local_addr=server_path, family=socket.AF_UNIX
        )
        ct, cp = await loop.create_datagram_endpoint(
            P, local_addr=client_path, remote_addr=server_path, family=socket.AF_UNIX
        )
        ct.sendto(b"unix dgram")
        data, addr = await sp.queue.get()
        st.sendto(b"back", addr)
        back, _ = await cp.queue.get()
        ct.close()
        st.close()
        return data, addr, back

    assert run(loop, main()) == (b"unix dgram", client_path, b"back")


def test_sock_accept_on_unix_socket(loop, tmp_path):
    path = str(tmp_path / "accept.sock")

    async def main():
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen()
        listener.setblocking(False)
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        with listener, client:
            accepting = loop.create_task(loop.sock_accept(listener))
            await loop.sock_connect(client, path)
            conn, _ = await accepting
            with conn:
                conn.setblocking(False)
                await loop.sock_sendall(client, b"u")
                return await loop.sock_recv(conn, 1)

    assert run(loop, main()) == b"u"
