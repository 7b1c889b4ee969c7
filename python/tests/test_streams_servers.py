"""TCP connections, servers, transports and protocols through asyncio's public API."""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile

import pytest
from conftest import free_port, run


class Collector(asyncio.Protocol):
    """Records what a connection receives; `done` resolves at connection_lost."""

    def __init__(self, loop):
        self.data = bytearray()
        self.transport = None
        self.eof = False
        self.done = loop.create_future()
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


async def _echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def test_streams_echo(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello\n")
            line = await reader.readline()
            writer.writelines([b"a", b"b", b"c\n"])
            line2 = await reader.readline()
            assert writer.can_write_eof()
            writer.write_eof()
            rest = await reader.read()
            writer.close()
            await writer.wait_closed()
            return line, line2, rest

    assert run(loop, main()) == (b"hello\n", b"abc\n", b"")


def test_create_connection_local_addr_and_extra_info(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            addr = server.sockets[0].getsockname()
            local = ("127.0.0.1", free_port())
            transport, proto = await loop.create_connection(
                lambda: Collector(loop), *addr, local_addr=local
            )
            assert transport.get_extra_info("sockname") == local
            assert transport.get_extra_info("peername") == addr
            sock = transport.get_extra_info("socket")
            assert sock.fileno() >= 0
            assert transport.get_extra_info("sslcontext") is None
            assert transport.get_extra_info("nonexistent", "dflt") == "dflt"
            transport.close()
            assert transport.is_closing()
            await proto.done
            return True

    assert run(loop, main())


def test_create_connection_with_sock(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            sock = socket.create_connection(server.sockets[0].getsockname())
            sock.setblocking(False)
            transport, proto = await loop.create_connection(lambda: Collector(loop), sock=sock)
            transport.write(b"via sock")
            while bytes(proto.data) != b"via sock":
                await asyncio.sleep(0.005)
            transport.close()
            await proto.done
            return True

    assert run(loop, main())


def test_create_connection_happy_eyeballs_and_interleave(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "localhost", port, happy_eyeballs_delay=0.05, interleave=1
            )
            writer.write(b"he\n")
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return line

    assert run(loop, main()) == b"he\n"


def test_create_connection_refused(loop):
    port = free_port()

    async def main():
        with pytest.raises(OSError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        if sys.version_info >= (3, 12):
            # all_errors: every attempt's error, in an ExceptionGroup.
            for host in ("127.0.0.1", "localhost"):
                with pytest.raises(ExceptionGroup) as info:  # noqa: F821 (3.11+)
                    await loop.create_connection(asyncio.Protocol, host, port, all_errors=True)
                assert all(isinstance(e, OSError) for e in info.value.exceptions)
        return True

    assert run(loop, main())


def test_create_server_several_hosts_and_options(loop):
    async def main():
        server = await loop.create_server(
            asyncio.Protocol,
            ["127.0.0.1", "::1"] if socket.has_ipv6 else ["127.0.0.1"],
            0,
            reuse_address=True,
            reuse_port=True,
            backlog=10,
        )
        async with server:
            assert server.is_serving()
            for sock in server.sockets:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            families = {s.family for s in server.sockets}
            assert socket.AF_INET in families
            assert server.get_loop() is loop
        assert not server.is_serving()
        return True

    assert run(loop, main())


def test_server_start_serving_false_and_sock(loop):
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(lambda: Collector(loop), sock=sock, start_serving=False)
        assert not server.is_serving()
        await server.start_serving()
        assert server.is_serving()
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert server.sockets == () or server.sockets == []
        return True

    assert run(loop, main())


def test_serve_forever_cancelled(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        task = loop.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        writer.close()
        await writer.wait_closed()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        await server.wait_closed()
        return True

    assert run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="close_clients/abort_clients: 3.13+")
def test_server_close_and_abort_clients(loop):
    async def main():
        for method in ("close_clients", "abort_clients"):
            server = await asyncio.start_server(_echo, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"1")
            await reader.readexactly(1)
            server.close()
            getattr(server, method)()
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass
            await asyncio.wait_for(server.wait_closed(), 5)
            writer.close()
        return True

    assert run(loop, main())


def test_connect_accepted_socket(loop):
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        listener.close()
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), conn)
        client.sendall(b"accepted")
        client.close()
        await proto.done
        assert proto.eof
        return bytes(proto.data)

    assert run(loop, main()) == b"accepted"


def test_pause_resume_reading(loop):
    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), b)
        assert transport.is_reading()
        transport.pause_reading()
        assert not transport.is_reading()
        a.sendall(b"while paused")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        transport.resume_reading()
        assert transport.is_reading()
        while bytes(proto.data) != b"while paused":
            await asyncio.sleep(0.005)
        a.close()
        await proto.done
        return True

    assert run(loop, main())


def test_flow_control_with_peer_not_reading(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), b)
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"x" * 65536
        total = 0
        while not proto.paused:
            transport.write(chunk)
            total += len(chunk)
            assert total < 512 * 1024 * 1024
        assert transport.get_write_buffer_size() > 64 * 1024
        # Now the peer reads everything: the buffer drains and resume_writing comes.
        got = 0
        while got < total:
            try:
                data = a.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            got += len(data)
        # On io_uring the last send counts as buffered until the loop reaps its
        # completion, an iteration after the peer could read its bytes.
        for _ in range(1000):
            if proto.resumed:
                break
            await asyncio.sleep(0.001)
        assert proto.resumed == proto.paused == 1
        assert transport.get_write_buffer_size() == 0
        transport.close()
        a.close()
        await proto.done
        return True

    assert run(loop, main())


def test_writer_drain_blocks_until_peer_reads(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=b)
        writer.transport.set_write_buffer_limits(high=32 * 1024)
        writer.write(b"y" * (4 * 1024 * 1024))
        drain = loop.create_task(writer.drain())
        await asyncio.sleep(0.05)
        assert not drain.done()
        got = 0
        while got < 4 * 1024 * 1024:
            try:
                got += len(a.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await drain
        writer.close()
        a.close()
        await writer.wait_closed()
        return True

    assert run(loop, main())


def test_abort_discards_buffer(loop):
    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), b)
        transport.write(b"z" * (8 * 1024 * 1024))
        transport.abort()
        exc = await proto.done
        assert exc is None
        assert transport.is_closing()
        a.close()
        return True

    assert run(loop, main())


def test_peer_reset(loop):
    async def main():
        server_proto = []
        server = await loop.create_server(
            lambda: server_proto.append(Collector(loop)) or server_proto[-1], "127.0.0.1", 0
        )
        async with server:
            sock = socket.create_connection(server.sockets[0].getsockname())
            sock.sendall(b"before reset")
            while not server_proto or bytes(server_proto[0].data) != b"before reset":
                await asyncio.sleep(0.005)
            linger_zero = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
            sock.close()  # RST
            exc = await server_proto[0].done
            assert exc is None or isinstance(exc, ConnectionResetError)
            # Writing after the reset does not raise.
            server_proto[0].transport.write(b"after")
        return True

    assert run(loop, main())


def test_protocol_raising_in_data_received(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Bad(Collector):
        def data_received(self, data):
            raise RuntimeError("protocol bug")

    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(lambda: Bad(loop), b)
        a.sendall(b"trigger")
        await proto.done
        a.close()
        # The loop goes on.
        await asyncio.sleep(0.01)
        return True

    assert run(loop, main())
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], RuntimeError)
    assert "protocol" in errors[0]["message"].lower() or errors[0].get("protocol")


def test_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)
            self.received = bytearray()
            self.calls = 0
            self.done = loop.create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.calls += 1
            self.received += self.buf[:nbytes]

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(Buffered, b)
        payload = bytes(range(256)) * 100
        a.sendall(payload)
        a.close()
        await proto.done
        assert proto.calls >= 1
        return bytes(proto.received) == payload

    assert run(loop, main())


def test_loop_sendfile(loop):
    payload = b"sendfile!" * 200_000

    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), b)
        peer = loop.create_task(_read_all(loop, a))
        with tempfile.TemporaryFile() as f:
            f.write(payload)
            f.seek(0)
            sent = await loop.sendfile(transport, f)
            f.seek(0)
            sent2 = await loop.sendfile(transport, f, offset=3, count=6)
        transport.write_eof()
        got = await peer
        transport.close()
        a.close()
        await proto.done
        return sent, sent2, got

    sent, sent2, got = run(loop, main())
    assert sent == len(payload) and sent2 == 6
    assert got == payload + payload[3:9]


def test_cancelled_loop_sendfile_sends_no_more_of_the_file(loop):
    """A cancelled `loop.sendfile` sends no more: the connection is aborted with the
    file cut short, instead of the rest going out after the cancellation."""
    payload = b"x" * (8 << 20)

    async def main():
        a, b = socket.socketpair()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), b)
        with tempfile.TemporaryFile() as f:
            f.write(payload)
            f.seek(0)
            # The peer does not read yet, so the file cannot be sent before the cancel.
            sending = loop.create_task(loop.sendfile(transport, f))
            await asyncio.sleep(0.01)
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
        a.setblocking(False)
        got = 0
        try:
            while chunk := await loop.sock_recv(a, 1 << 20):
                got += len(chunk)
        except ConnectionError:
            pass
        a.close()
        await proto.done
        return got

    assert run(loop, main()) < len(payload)


async def _read_all(loop, sock):
    sock.setblocking(False)
    got = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 20):
        got += chunk
    return bytes(got)


def test_loop_sendfile_refused_on_pipe_transport(loop):
    """Pipe transports have no sendfile mode at all: asyncio refuses them."""
    import os

    async def main():
        r, w = os.pipe()
        transport, proto = await loop.connect_write_pipe(
            lambda: Collector(loop), os.fdopen(w, "wb", buffering=0)
        )
        with tempfile.TemporaryFile() as f:
            with pytest.raises(RuntimeError, match="not supported"):
                await loop.sendfile(transport, f)
        transport.close()
        await proto.done
        os.close(r)
        return True

    assert run(loop, main())


def test_many_concurrent_connections(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            addr = server.sockets[0].getsockname()

            async def one(i):
                r, w = await asyncio.open_connection(*addr)
                msg = f"msg {i}\n".encode()
                w.write(msg)
                got = await r.readline()
                w.close()
                await w.wait_closed()
                return got == msg

            results = await asyncio.gather(*(one(i) for i in range(100)))
        return all(results)

    assert run(loop, main())


def test_transport_repr_and_fd_owned_by_transport(loop):
    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), b)
        text = repr(transport)
        assert f"fd={b.fileno()}" in text and "read=polling" in text, text
        # asyncio refuses fd watchers on an fd a transport owns.
        with pytest.raises(RuntimeError, match="transport"):
            loop.add_reader(b.fileno(), print)
        with pytest.raises(RuntimeError, match="transport"):
            loop.remove_writer(b.fileno())
        transport.pause_reading()
        assert "read=idle" in repr(transport)
        transport.close()
        await proto.done
        a.close()
        return True

    assert run(loop, main())


def test_write_eof_twice_then_write(loop):
    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(lambda: Collector(loop), b)
        transport.write_eof()
        transport.write_eof()
        assert a.recv(10) == b""
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"after eof")
        transport.close()
        await proto.done
        a.close()
        return True

    assert run(loop, main())


def test_sock_connect_with_hostname(loop):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            sock = socket.socket()
            sock.setblocking(False)
            with sock:
                await loop.sock_connect(sock, ("localhost", port))
                await loop.sock_sendall(sock, b"named")
                return await loop.sock_recv(sock, 10)

    assert run(loop, main()) == b"named"
