"""TLS through asyncio.sslproto on the oxloop loop, with a self-signed certificate
made for the test."""

from __future__ import annotations

import asyncio
import ssl
import sys
import tempfile

import pytest
from conftest import run

x509 = pytest.importorskip("cryptography.x509", reason="the cryptography package makes the cert")


@pytest.fixture
def contexts(cert_files):
    cert, key = cert_files
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=cert)
    return server, client


async def _echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def test_tls_echo(loop, contexts):
    server_ctx, client_ctx = contexts

    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=client_ctx,
                server_hostname="localhost",
                ssl_handshake_timeout=5,
            )
            assert writer.get_extra_info("sslcontext") is client_ctx
            assert writer.get_extra_info("peercert")["subject"]
            assert writer.get_extra_info("cipher")
            assert writer.get_extra_info("compression") is None
            assert isinstance(writer.get_extra_info("ssl_object"), ssl.SSLObject)
            payload = b"secret " * 50_000
            writer.write(payload)
            got = await reader.readexactly(len(payload))
            writer.close()
            await writer.wait_closed()
        return got == payload

    assert run(loop, main())


def test_tls_wrong_hostname_fails(loop, contexts):
    server_ctx, client_ctx = contexts

    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx, server_hostname="not-localhost"
                )
        return True

    assert run(loop, main())


def test_tls_handshake_timeout(loop, contexts):
    _, client_ctx = contexts

    async def main():
        # A plain TCP server that never answers the handshake.
        writers = []
        silent = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
        async with silent:
            port = silent.sockets[0].getsockname()[1]
            with pytest.raises((TimeoutError, asyncio.TimeoutError, ConnectionError)):
                await asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=client_ctx,
                    server_hostname="localhost",
                    ssl_handshake_timeout=0.2,
                )
            # (From 3.12 on, wait_closed waits for the server's connections.)
            for w in writers:
                w.close()
        return True

    assert run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is new in 3.11")
def test_start_tls(loop, contexts):
    server_ctx, client_ctx = contexts

    async def handle(reader, writer):
        line = await reader.readline()
        assert line == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        data = await reader.readline()
        writer.write(b"tls:" + data)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"GO\n"
            transport = writer.transport
            proto = transport.get_protocol()
            tls_transport = await loop.start_tls(
                transport, proto, client_ctx, server_hostname="localhost"
            )
            writer._transport = tls_transport
            assert tls_transport.get_extra_info("peercert")
            tls_transport.write(b"hello\n")
            line = await reader.readline()
            tls_transport.close()
        return line

    assert run(loop, main()) == b"tls:hello\n"


def test_sendfile_fallback_over_tls(loop, contexts):
    """TLS transports cannot use sendfile(2): fallback=True reads and writes."""
    server_ctx, client_ctx = contexts
    payload = b"tls-sendfile" * 20_000

    async def handle(reader, writer):
        data = await reader.readexactly(len(payload))
        writer.write(b"ok" if data == payload else b"bad")
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            with tempfile.TemporaryFile() as f:
                f.write(payload)
                f.seek(0)
                with pytest.raises(RuntimeError, match="fallback is disabled"):
                    await loop.sendfile(writer.transport, f, fallback=False)
                sent = await loop.sendfile(writer.transport, f, fallback=True)
            answer = await reader.readexactly(2)
            writer.close()
            await writer.wait_closed()
        return sent, answer

    assert run(loop, main()) == (len(payload), b"ok")
