"""Nothing left behind: fds and child processes return to their baseline."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import weakref

from conftest import open_fds, run
from test_pipes_subprocess import _children

import oxloop


def _settle():
    gc.collect()


def test_loops_created_and_closed_leak_no_fds():
    _settle()
    before = open_fds()
    for _ in range(200):
        loop = oxloop.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    del loop
    _settle()
    assert open_fds() == before


def test_loops_never_run_leak_no_fds():
    _settle()
    before = open_fds()
    for _ in range(200):
        oxloop.new_event_loop().close()
    _settle()
    assert open_fds() == before


def test_servers_transports_and_loop_closed_back_to_baseline():
    _settle()
    before = open_fds()
    loop = oxloop.new_event_loop()

    async def echo(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        running = asyncio.get_running_loop()
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        udp, _ = await running.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        r, w = os.pipe()
        rt, _ = await running.connect_read_pipe(asyncio.Protocol, os.fdopen(r, "rb", 0))
        wt, _ = await running.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print(1)", stdout=subprocess.PIPE
        )
        await proc.communicate()
        async with server:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"x")
            assert await reader.read() == b"x"
            writer.close()
            await writer.wait_closed()
        udp.close()
        rt.close()
        wt.close()
        await asyncio.sleep(0.01)

    try:
        run(loop, main())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    del loop
    _settle()
    assert open_fds() == before
    assert _children() == []


def test_thousand_connect_close_cycles(loop):
    async def main():
        accepted = 0

        async def on_conn(reader, writer):
            nonlocal accepted
            accepted += 1
            writer.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        _settle()
        before = open_fds()
        for _ in range(1000):
            reader, writer = await asyncio.open_connection(*addr)
            await reader.read()
            writer.close()
            await writer.wait_closed()
        while accepted < 1000:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)
        _settle()
        after = open_fds()
        server.close()
        await server.wait_closed()
        return before, after

    before, after = run(loop, main(), timeout=60)
    assert after == before


def test_closed_connections_are_freed_when_protocols_hold_their_transports(loop):
    # A protocol that keeps its transport (most do) and the native transport that
    # keeps its protocol: once the connection is lost, both must be freed, as with
    # asyncio's own transports.
    class Keeper(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        served = []

        def factory():
            protocol = Keeper()
            served.append(weakref.ref(protocol))
            return protocol

        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        clients = []
        for _ in range(50):
            transport, protocol = await loop.create_connection(Keeper, *addr)
            clients.append((weakref.ref(transport), weakref.ref(protocol)))
            transport.write(b"ping")
            transport.close()
            del transport, protocol
        while len(served) < 50 or any(
            p() is not None and not p().transport.is_closing() for p in served
        ):
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        _settle()
        alive = [r for pair in clients for r in pair if r() is not None]
        alive += [p for p in served if p() is not None]
        return len(alive)

    assert run(loop, main()) == 0


def test_subprocesses_leave_no_children(loop):
    async def main():
        for _ in range(30):
            proc = await asyncio.create_subprocess_exec("true")
            await proc.wait()
        procs = [await asyncio.create_subprocess_exec("sleep", "30") for _ in range(5)]
        for p in procs:
            p.kill()
        for p in procs:
            await p.wait()

    _settle()
    before = open_fds()
    run(loop, main())
    _settle()
    assert _children() == []
    assert open_fds() == before


def test_loop_closed_with_registered_readers_releases_fds():
    import socket

    _settle()
    before = open_fds()
    loop = oxloop.new_event_loop()
    a, b = socket.socketpair()
    loop.add_reader(a, print)
    loop.add_writer(b, print)
    loop.close()
    a.close()
    b.close()
    del loop
    _settle()
    assert open_fds() == before


def test_close_releases_fds_while_object_alive():
    _settle()
    before = open_fds()
    loop = oxloop.new_event_loop()
    loop.close()
    after = open_fds()
    del loop
    assert after == before


def test_loop_closed_while_child_runs_leaves_no_fd_and_no_zombie():
    import warnings

    _settle()
    before = open_fds()
    loop = oxloop.new_event_loop()

    async def main():
        return await asyncio.create_subprocess_exec("sleep", "30")

    proc = loop.run_until_complete(main())
    pid = proc.pid
    loop.close()
    os.kill(pid, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del loop, proc
        _settle()
    assert open_fds() == before
    for _ in range(500):
        if pid not in _children():
            break
        import time

        time.sleep(0.01)
    assert pid not in _children()


_OUT_OF_FDS_SERVER = r"""
import asyncio, json, os, resource, sys
import oxloop

async def main():
    loop = asyncio.get_running_loop()
    reports = []
    loop.set_exception_handler(lambda _loop, ctx: reports.append(ctx["message"]))
    made = asyncio.Event()
    accepted = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            accepted.append(transport)
            if len(accepted) == int(sys.argv[1]):
                made.set()

        def data_received(self, data):
            self.transport.write(data)

    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
    # Out of fds: the soft limit just above what is open, then /dev/null until EMFILE.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    filler = []
    try:
        while True:
            filler.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(2.5)  # the clients connect meanwhile; accept meets EMFILE
    out_of_fds = len(reports)
    for fd in filler:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await asyncio.wait_for(made.wait(), 20)
    print(json.dumps({"reports": out_of_fds, "messages": sorted(set(reports)),
                      "accepted": len(accepted)}), flush=True)
    await asyncio.sleep(0.5)  # the clients' echoes
    server.close()

oxloop.run(main())
"""


def test_out_of_fds_listener_reports_once_per_attempt_and_accepts_after():
    """A listener that meets EMFILE reports it and retries a second later, once per
    attempt (not once per backlog slot, as asyncio's own accept loop does); the
    waiting connections are accepted and served once fds are free."""
    import json
    import socket

    clients = 20
    proc = subprocess.Popen(
        [sys.executable, "-c", _OUT_OF_FDS_SERVER, str(clients)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proc.stdout.readline())
        conns = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(clients)]
        result = json.loads(proc.stdout.readline())
        for i, c in enumerate(conns):
            c.sendall(b"ping %d" % i)
            assert c.recv(64) == b"ping %d" % i
            c.close()
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
    assert result["accepted"] == clients
    assert result["messages"] == ["socket.accept() out of system resource"]
    # 2.5 s out of fds, a retry every second: about three attempts, one report each.
    assert 1 <= result["reports"] <= 5, result
