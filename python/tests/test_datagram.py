"""UDP endpoints: create_datagram_endpoint and its options."""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import run


class Dgram(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.received = asyncio.Queue()
        self.errors = []
        self.closed = loop.create_future()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.closed.set_result(exc)


def test_datagram_echo(loop):
    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Dgram(loop), local_addr=("127.0.0.1", 0)
        )
        server_addr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(lambda: Dgram(loop), remote_addr=server_addr)
        assert ct.get_extra_info("peername") == server_addr
        ct.sendto(b"one")
        data, addr = await sp.received.get()
        assert data == b"one" and addr == ct.get_extra_info("sockname")
        st.sendto(b"two", addr)
        assert (await cp.received.get())[0] == b"two"
        assert st.get_write_buffer_size() == 0
        ct.close()
        st.close()
        await cp.closed
        await sp.closed
        return True

    assert run(loop, main())


def test_datagram_family_and_reuse_port(loop):
    async def main():
        t1, p1 = await loop.create_datagram_endpoint(
            lambda: Dgram(loop),
            local_addr=("127.0.0.1", 0),
            family=socket.AF_INET,
            reuse_port=True,
        )
        port = t1.get_extra_info("sockname")[1]
        t2, p2 = await loop.create_datagram_endpoint(
            lambda: Dgram(loop), local_addr=("127.0.0.1", port), reuse_port=True
        )
        sock = t2.get_extra_info("socket")
        assert sock.family == socket.AF_INET
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        t1.close()
        t2.close()
        return True

    assert run(loop, main())


def test_datagram_allow_broadcast(loop):
    async def main():
        t, p = await loop.create_datagram_endpoint(
            lambda: Dgram(loop), local_addr=("127.0.0.1", 0), allow_broadcast=True
        )
        sock = t.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        t.close()
        return True

    assert run(loop, main())


def test_datagram_sock_argument_and_error_received(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        # Connect to a port nobody listens on: the kernel reports ECONNREFUSED.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()
        probe.close()
        sock.connect(dead)
        t, p = await loop.create_datagram_endpoint(lambda: Dgram(loop), sock=sock)
        t.sendto(b"nobody home")
        for _ in range(200):
            if p.errors:
                break
            await asyncio.sleep(0.005)
            t.sendto(b"again")
        assert p.errors and isinstance(p.errors[0], ConnectionRefusedError)
        t.close()
        return True

    assert run(loop, main())


def test_datagram_sendto_wrong_address_for_connected(loop):
    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Dgram(loop), local_addr=("127.0.0.1", 0)
        )
        ct, cp = await loop.create_datagram_endpoint(
            lambda: Dgram(loop), remote_addr=st.get_extra_info("sockname")
        )
        with pytest.raises(ValueError):
            ct.sendto(b"x", ("127.0.0.1", 9))
        ct.close()
        st.close()
        return True

    assert run(loop, main())


def test_datagram_many_messages(loop):
    async def main():
        st, sp = await loop.create_datagram_endpoint(
            lambda: Dgram(loop), local_addr=("127.0.0.1", 0)
        )
        ct, cp = await loop.create_datagram_endpoint(
            lambda: Dgram(loop), remote_addr=st.get_extra_info("sockname")
        )
        for i in range(200):
            ct.sendto(str(i).encode())
        got = [int((await sp.received.get())[0]) for _ in range(200)]
        ct.close()
        st.close()
        return got

    assert run(loop, main()) == list(range(200))
