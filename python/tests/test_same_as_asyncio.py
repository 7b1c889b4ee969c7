"""Differential tests: the same scenario on asyncio's own loop and on oxloop must
leave the same trace (the order in which callbacks, timers and tasks run)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

import oxloop


def _trace(make_loop, scenario):
    loop = make_loop()
    try:
        trace = []
        scenario(loop, trace)
        return trace
    finally:
        loop.close()


def _both(scenario):
    want = _trace(asyncio.SelectorEventLoop, scenario)
    got = _trace(oxloop.new_event_loop, scenario)
    assert got == want
    return got


def test_ready_callbacks_before_expired_timers():
    def scenario(loop, trace):
        loop.call_later(0, trace.append, "later0")
        loop.call_at(loop.time() - 1, trace.append, "at-past")
        loop.call_soon(trace.append, "soon1")
        loop.call_soon(lambda: loop.call_soon(trace.append, "soon-nested"))
        loop.call_soon(trace.append, "soon2")
        loop.call_later(0.02, loop.stop)
        loop.run_forever()

    assert _both(scenario)


def test_tasks_futures_and_callbacks_interleave():
    def scenario(loop, trace):
        async def child(name, n):
            for i in range(n):
                trace.append((name, i))
                await asyncio.sleep(0)
            return name

        async def main():
            fut = loop.create_future()
            fut.add_done_callback(lambda f: trace.append(("done-cb", f.result())))
            t1 = loop.create_task(child("a", 3))
            t2 = loop.create_task(child("b", 2))
            loop.call_soon(trace.append, "soon")
            loop.call_soon(fut.set_result, "fut")
            trace.append(("gathered", await asyncio.gather(t1, t2, fut)))

        loop.run_until_complete(main())

    assert _both(scenario)


def test_stop_semantics():
    def scenario(loop, trace):
        def cb(i):
            trace.append(i)
            if i == 1:
                loop.stop()
                loop.call_soon(cb, 10)

        for i in range(3):
            loop.call_soon(cb, i)
        loop.run_forever()
        trace.append("stopped")
        loop.call_soon(loop.stop)
        loop.run_forever()
        trace.append("stopped again")

    assert _both(scenario)


def test_queued_callbacks_before_reader():
    def scenario(loop, trace):
        a, b = socket.socketpair()
        try:

            def on_read():
                trace.append(("read", b.recv(10)))
                loop.remove_reader(b)
                loop.call_soon(trace.append, "after-read")

            loop.add_reader(b, on_read)
            a.send(b"x")
            loop.call_soon(trace.append, "soon")
            loop.call_later(0.05, loop.stop)
            loop.run_forever()
        finally:
            a.close()
            b.close()

    assert _both(scenario)


def test_exceptions_reach_handler_in_order():
    def scenario(loop, trace):
        loop.set_exception_handler(
            lambda lp, ctx: trace.append((ctx["message"][:30], type(ctx.get("exception"))))
        )

        async def failing():
            raise OSError("task")

        loop.call_soon(lambda: 1 / 0)
        loop.create_task(failing())
        loop.call_soon(loop.stop)
        loop.run_forever()
        import gc

        gc.collect()
        loop.call_soon(loop.stop)
        loop.run_forever()

    _both(scenario)


def test_reader_before_expired_timer():
    def scenario(loop, trace):
        a, b = socket.socketpair()
        try:

            def on_read():
                trace.append(("read", b.recv(10)))
                loop.remove_reader(b)

            loop.add_reader(b, on_read)
            a.send(b"x")
            loop.call_at(loop.time() - 1, trace.append, "timer")
            loop.call_later(0.05, loop.stop)
            loop.run_forever()
        finally:
            a.close()
            b.close()

    assert _both(scenario)


def test_timers_only_order():
    def scenario(loop, trace):
        now = loop.time()
        for i, delay in enumerate([0.03, 0.01, 0.02, 0.01, 0.0, -1]):
            loop.call_at(now + delay, trace.append, (i, delay))
        loop.call_at(now + 0.05, loop.stop)
        loop.run_forever()

    assert _both(scenario)


@pytest.mark.parametrize("n", [1, 7])
def test_pipe_transport_events(n):
    def scenario(loop, trace):
        class P(asyncio.Protocol):
            def connection_made(self, t):
                trace.append("made")

            def data_received(self, d):
                trace.append(("data", len(d)))

            def eof_received(self):
                trace.append("eof")

            def connection_lost(self, exc):
                trace.append(("lost", exc))
                loop.stop()

        r, w = os.pipe()
        loop.run_until_complete(loop.connect_read_pipe(P, os.fdopen(r, "rb", 0)))
        for _ in range(n):
            os.write(w, b"x")
        os.close(w)
        loop.call_later(5, loop.stop)
        loop.run_forever()

    trace = _both(scenario)
    assert trace[0] == "made" and trace[-1] == ("lost", None)


def test_protocol_callbacks_run_in_the_context_the_server_was_made_in():
    # asyncio's transports call the protocol from handles that inherit the context the
    # server was created in (uvicorn's ASGI tasks read context variables set there).
    import contextvars

    var = contextvars.ContextVar("var", default="unset")

    def scenario(loop, trace):
        class Recorder(asyncio.Protocol):
            def connection_made(self, transport):
                trace.append(("connection_made", var.get()))

            def data_received(self, data):
                trace.append(("data_received", var.get()))

            def eof_received(self):
                trace.append(("eof_received", var.get()))

            def connection_lost(self, exc):
                trace.append(("connection_lost", var.get()))
                done.set_result(None)

        done = loop.create_future()

        async def serve():
            var.set("server")
            return await loop.create_server(Recorder, "127.0.0.1", 0)

        async def client(port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            await writer.drain()
            writer.close()
            await done
            await writer.wait_closed()

        server = loop.run_until_complete(asyncio.wait_for(serve(), 10))
        port = server.sockets[0].getsockname()[1]
        loop.run_until_complete(asyncio.wait_for(client(port), 10))
        server.close()
        loop.run_until_complete(server.wait_closed())

    trace = _both(scenario)
    assert ("data_received", "server") in trace


def test_due_timer_before_the_callbacks_an_io_callback_schedules():
    def scenario(loop, trace):
        a, b = socket.socketpair()
        try:

            def on_read():
                trace.append(("read", b.recv(10)))
                loop.remove_reader(b)
                loop.call_soon(trace.append, "scheduled-by-read")

            loop.add_reader(b, on_read)
            a.send(b"x")
            loop.call_at(loop.time() - 1, trace.append, "timer")
            loop.call_later(0.05, loop.stop)
            loop.run_forever()
        finally:
            a.close()
            b.close()

    assert _both(scenario)


def test_callbacks_ready_before_the_wait_run_before_a_transports_read():
    """A task's first step, queued before the wait that reports a stream transport's
    bytes, runs before `data_received` (aiohttp's concurrent close relies on it)."""

    def scenario(loop, trace):
        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                trace.append(("server read", data))
                self.transport.write(b"reply")

        class Client(asyncio.Protocol):
            def data_received(self, data):
                trace.append(("client read", data))

        async def main():
            server = await loop.create_server(Server, "127.0.0.1", 0)
            transport, _ = await loop.create_connection(Client, *server.sockets[0].getsockname())
            await asyncio.sleep(0.05)
            transport.write(b"ask")
            # The bytes are in the server's socket before the next wait; the task's
            # first step was queued before it.
            await asyncio.sleep(0.05)

            async def step():
                trace.append("task")

            for _ in range(3):
                transport.write(b"more")
                loop.create_task(step())
                await asyncio.sleep(0.05)
            transport.close()
            server.close()
            await server.wait_closed()

        loop.run_until_complete(asyncio.wait_for(main(), 10))

    assert _both(scenario)
