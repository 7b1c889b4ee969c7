"""oxloop.handlers: the My Event Loop model (Handler, Timeout, Log, TCP and UDP)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading

import pytest
from conftest import free_port

import oxloop
from oxloop.handlers import (
    EventLoop,
    Handler,
    Log,
    TCPClientHandler,
    TCPListener,
    TCPServerEventLoop,
    TCPServerHandler,
    Timeout,
    UDPServerHandler,
)


@pytest.fixture
def ev():
    """The thread's handler loop, closed (handlers, timeouts, log, loop) afterwards."""
    loop = EventLoop()
    errors = []
    loop.asyncio_loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    loop.errors = errors
    try:
        yield loop
    finally:
        loop.close()


def run(ev, limit=10.0):
    """Runs the loop until nothing is left; fails if that takes more than `limit` s."""
    hung = []
    guard = ev.asyncio_loop.call_later(limit, lambda: (hung.append(True), ev.stop()))
    ev.loop()
    guard.cancel()
    assert not hung, "the handler loop did not end"


class Reader(Handler):
    def __init__(self, label, fd, got):
        super().__init__(label, fd)
        self.got = got

    def read_callback(self):
        data = self.fd.recv(100)
        self.got.append((self.label, data))
        if not data:
            self.destroy()


# ----------------------------------------------------------------------- timeouts


def test_timeouts_run_with_themselves_and_loop_ends_when_none_is_left(ev):
    fired = []
    t1 = Timeout.new("one", 0.02, fired.append)
    t2 = Timeout.new("two", 0.01, fired.append)
    assert t1.alive() and 0 < t1.remaining() <= 0.02
    run(ev)
    assert fired == [t2, t1]
    assert not t1.alive() and t1.remaining() == 0


def test_timeout_cancel_restart_reset(ev):
    fired = []
    t = Timeout.new("t", 30, fired.append)
    assert t.cancel() is True
    assert t.cancel() is False
    assert not t.alive()
    t.reset(0.01)  # re-armed after a cancel
    assert t.alive() and t.seconds == 0.01

    def again(timeout):
        fired.append(timeout.label)
        if len(fired) < 3:
            timeout.restart()

    Timeout.new("again", 0.01, again)
    run(ev)
    assert fired.count("again") == 2 and t in fired
    with pytest.raises(ValueError):
        t.reset(-1)
    with pytest.raises(TypeError):
        Timeout.new("bad", 1, "not callable")


def test_a_failing_timeout_callback_is_reported_and_the_loop_goes_on(ev):
    fired = []

    def bad(timeout):
        raise ValueError("boom")

    Timeout.new("bad", 0, bad)
    Timeout.new("good", 0.01, fired.append)
    run(ev)
    assert len(fired) == 1
    assert "timeout 'bad'" in ev.errors[0]["message"]
    assert isinstance(ev.errors[0]["exception"], ValueError)


# ----------------------------------------------------------------------- handlers


def test_handlers_read_write_and_destroy(ev):
    a, b = socket.socketpair()
    got = []

    class Both(Reader):
        def __init__(self, *args):
            super().__init__(*args)
            self.to_write = [b"out"]
            self.owned = self.timeout("never", 30, got.append)

        def is_writable(self):
            return bool(self.to_write)

        def write_callback(self):
            self.fd.send(self.to_write.pop())

        def destroyed_callback(self):
            got.append("destroyed")

    handler = Both("a", a, got)
    b.send(b"in")
    b.shutdown(socket.SHUT_WR)
    run(ev)
    assert got == [("a", b"in"), ("a", b""), "destroyed"]
    assert b.recv(100) == b"out"
    assert not handler.alive() and not handler.owned.alive()
    assert a.fileno() == -1  # destroy() closed the socket
    with pytest.raises(RuntimeError, match="destroyed"):
        handler.timeout("late", 1, print)
    b.close()


def test_every_ready_handler_is_served(ev):
    pairs = [socket.socketpair() for _ in range(5)]
    got = []
    for i, (a, b) in enumerate(pairs):
        Reader(f"h{i}", a, got)
        b.send(b"x")
        b.close()
    run(ev)
    expected = [(f"h{i}", data) for i in range(5) for data in (b"x", b"")]
    assert sorted(got) == sorted(expected)
    # All five were served in the first round, before any saw its end of file.
    assert {data for _, data in got[:5]} == {b"x"}


def test_an_fd_can_have_one_handler(ev):
    a, b = socket.socketpair()
    first = Reader("first", a, [])
    with pytest.raises(ValueError, match="already has a handler"):
        Reader("second", a.fileno(), [])
    first.destroy()
    again = Reader("again", socket.socket(fileno=os.dup(b.fileno())), [])
    again.destroy()
    b.close()


def test_an_fd_closed_under_its_handler_is_reported_not_spun_on(ev):
    a, b = socket.socketpair()
    got = []

    class Closes(Reader):
        def read_callback(self):
            super().read_callback()
            self.fd.close()  # closed without destroy()

    Closes("closer", a, got)
    b.send(b"x")
    run(ev)  # ends: the handler was destroyed
    assert got == [("closer", b"x")]
    assert "closed under it" in ev.errors[0]["message"]
    assert not ev.handlers
    b.close()


def test_an_int_fd_closed_under_its_handler_is_reported(ev):
    r, w = os.pipe()
    got = []

    class PipeReader(Handler):
        def read_callback(self):
            got.append(os.read(r, 100))
            os.close(r)  # closed without destroy()

    handler = PipeReader("pipe", r)
    os.write(w, b"x")
    run(ev)
    assert got == [b"x"] and not handler.alive()
    assert "closed under it" in ev.errors[0]["message"]
    os.close(w)


def test_an_fd_that_cannot_be_watched_is_reported_and_closed(ev, tmp_path):
    fd = os.open(tmp_path / "regular", os.O_CREAT | os.O_RDWR)  # epoll refuses files

    class FileReader(Handler):
        def read_callback(self):
            pass

    handler = FileReader("file", fd)
    run(ev)
    assert not handler.alive()
    assert "cannot be watched" in ev.errors[0]["message"]
    with pytest.raises(OSError):
        os.fstat(fd)  # destroy() closed it


def test_a_failing_callback_destroys_its_handler(ev):
    a, b = socket.socketpair()

    class Fails(Handler):
        def read_callback(self):
            raise KeyError("bad")

    handler = Fails("fails", a)
    b.send(b"x")
    run(ev)
    assert not handler.alive()
    assert "read_callback() failed" in ev.errors[0]["message"]
    b.close()


def test_handlers_belong_to_their_threads_loop():
    loops = {}

    def worker(name):
        a, b = socket.socketpair()
        got = []
        ev = EventLoop()
        Reader(name, a, got)
        b.send(name.encode())
        b.close()
        ev.loop()
        loops[name] = (ev.asyncio_loop, got)
        ev.close()

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert loops["t0"][0] is not loops["t1"][0]
    assert isinstance(loops["t0"][0], oxloop.Loop)
    assert loops["t0"][1] == [("t0", b"t0"), ("t0", b"")]
    assert loops["t1"][1] == [("t1", b"t1"), ("t1", b"")]


def test_handlers_inside_running_asyncio_code():
    async def main():
        a, b = socket.socketpair()
        got = []
        ev = EventLoop()
        assert ev.asyncio_loop is asyncio.get_running_loop()
        Reader("r", a, got)
        b.send(b"x")
        b.close()
        await asyncio.wait_for(ev.run(), 10)
        with pytest.raises(RuntimeError, match="already running"):
            ev.loop()
        ev.close()
        return got

    assert oxloop.run(main()) == [("r", b"x"), ("r", b"")]


# ----------------------------------------------------------------------- TCP and UDP


class Echo(TCPServerHandler):
    def recv_callback(self, data):
        self.send(data)


def test_tcp_echo_with_a_large_buffered_send(ev):
    server = TCPServerEventLoop(("127.0.0.1", 0), TCPListener, Echo)
    payload = os.urandom(4 << 20)  # more than the socket buffers take at once
    got = bytearray()
    states = []

    class Client(TCPClientHandler):
        def connection_callback(self, ok):
            states.append((ok, self.fd.getblocking()))
            self.send(payload)
            assert self.pending_bytes() > 0

        def recv_callback(self, data):
            got.extend(data)
            if len(got) == len(payload):
                self.destroy()
                server.listener.destroy()

    client = Client(server.listener.address)
    run(ev)
    assert states == [(True, False)]  # connected, and still non-blocking
    assert bytes(got) == payload
    with pytest.raises(RuntimeError, match="destroyed"):
        client.send(b"late")


def test_tcp_client_connection_refused(ev):
    results = []

    class Client(TCPClientHandler):
        def connection_callback(self, ok):
            results.append(ok)

    client = Client(("127.0.0.1", free_port()))
    run(ev)
    assert results == [False]
    assert not client.alive()


def test_tcp_server_sees_the_peer_close(ev):
    closed = []

    class Handler_(Echo):
        def shutdown_callback(self):
            closed.append(self.addr)
            self.destroy()
            server.listener.destroy()

    server = TCPServerEventLoop(("127.0.0.1", 0), TCPListener, Handler_)
    sock = socket.create_connection(server.listener.address)
    sock.close()
    run(ev)
    assert len(closed) == 1


def test_a_failing_connection_handler_leaves_the_listener_listening(ev):
    made = []

    class Picky(Echo):
        def __init__(self, addr, sock):
            made.append(addr)
            if len(made) == 1:
                raise ValueError("first one refused")
            super().__init__(addr, sock)
            self.destroy()
            server.listener.destroy()

    server = TCPServerEventLoop(("127.0.0.1", 0), TCPListener, Picky)
    first = socket.create_connection(server.listener.address)
    second = socket.create_connection(server.listener.address)
    run(ev)
    assert len(made) == 2
    assert "Picky() failed" in ev.errors[0]["message"]
    first.close()
    second.close()


def test_udp_echo(ev):
    replies = []

    class UDPEcho(UDPServerHandler):
        def recv_callback(self, addr, datagram):
            self.sendto(addr, datagram.upper())

    class Client(UDPServerHandler):
        def recv_callback(self, addr, datagram):
            replies.append((addr, datagram))
            if len(replies) == 3:
                self.destroy()
                server.destroy()

    server = UDPEcho(("127.0.0.1", 0))
    client = Client(None, "client")
    for word in (b"one", b"two", b"three"):
        client.sendto(server.address, word)
    run(ev)
    assert replies == [(server.address, word) for word in (b"ONE", b"TWO", b"THREE")]
    with pytest.raises(RuntimeError, match="destroyed"):
        client.sendto(("127.0.0.1", 9), b"late")


# ----------------------------------------------------------------------- Log


def test_log_to_a_file_with_levels(ev, tmp_path):
    Log.set_terminal(False)
    Log.set_file(tmp_path / "app.log", rotation="never")
    Log.set_level(Log.INFO)
    Log.info("shown")
    Log.debug("hidden")
    Log.set_level(Log.DEBUG2)
    Log.debug2("detail")
    Log.error("bad")
    Log.close()  # flushes
    text = (tmp_path / "app.log").read_text()
    assert "shown" in text and "detail" in text and "bad" in text
    assert "hidden" not in text
    with pytest.raises(ValueError):
        Log.set_level(9)
    with pytest.raises(ValueError):
        Log.set_file(tmp_path / "x.log", rotation="weekly")
    Log.info("still written to the first file")
    Log.close()
    assert "still written" in (tmp_path / "app.log").read_text()
    with pytest.raises(ValueError, match="recipient"):
        Log.set_mail(Log.ERROR, "app@example.com", ["not an address"], "127.0.0.1", 25)


def test_log_terminal_output_on_and_off():
    program = (
        "from oxloop.handlers import Log\n"
        "Log.error('first line')\n"
        "Log.set_terminal(False)\n"
        "Log.error('second line')\n"
        "Log.set_terminal(True)\n"
        "Log.warn('third line')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    assert "ERROR" in out.stderr and "first line" in out.stderr
    assert "second line" not in out.stderr
    assert "WARN" in out.stderr and "third line" in out.stderr


def test_log_outputs_on_a_plain_asyncio_loop():
    async def main():
        ev = EventLoop()
        try:
            with pytest.raises(RuntimeError, match="need an oxloop loop"):
                Log.set_file("/tmp/never-made.log")
            Log.set_terminal(False)
            Log.info("the settings before the failed change still hold")
        finally:
            ev.close()

    asyncio.run(main())


def test_log_file_rotation_by_size(ev, tmp_path):
    Log.set_terminal(False)
    Log.set_file(tmp_path / "big.log", rotation="size", max_bytes=200, max_files=3)
    for i in range(40):
        Log.info(f"line {i:03}")
    Log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "big.log" in names and len(names) == 3
    assert "line 039" in (tmp_path / "big.log").read_text()


class SmtpSink:
    """A tiny SMTP server on 127.0.0.1 (asyncio, in its own thread) keeping each mail."""

    def __init__(self):
        self.mails = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self.main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def main(self):
        self.stop = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await self.stop

    def close(self):
        self.stop.get_loop().call_soon_threadsafe(self.stop.set_result, None)
        self.thread.join(10)

    async def serve(self, reader, writer):
        writer.write(b"220 sink ready\r\n")
        mail = {"to": []}
        while line := await reader.readline():
            command = line.decode().strip()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                writer.write(b"250-sink\r\n250 8BITMIME\r\n")
            elif verb == "MAIL":
                mail["from"] = command
                writer.write(b"250 ok\r\n")
            elif verb == "RCPT":
                mail["to"].append(command)
                writer.write(b"250 ok\r\n")
            elif verb == "DATA":
                writer.write(b"354 go on\r\n")
                data = await reader.readuntil(b"\r\n.\r\n")
                mail["data"] = data.decode()
                self.mails.append(mail)
                mail = {"to": []}
                writer.write(b"250 queued\r\n")
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"502 unknown\r\n")
            await writer.drain()
        writer.close()


def test_log_mails_errors_in_one_batch_without_blocking_the_loop(ev):
    sink = SmtpSink()
    try:
        Log.set_terminal(False)
        Log.set_mail(
            Log.ERROR,
            "app@example.com",
            ["ops@example.com"],
            "127.0.0.1",
            sink.port,
            subject="app errors",
            gather=0.05,
            interval=60,
        )
        ticks = []

        def tick(timeout):
            ticks.append(1)
            if len(ticks) < 5:
                timeout.restart()

        Log.error("disk full")
        Log.error("disk still full")
        Log.info("not mailed")
        Timeout.new("tick", 0.01, tick)
        run(ev)  # ends with the mail sent
        assert Log.mail_pending() == 0 and Log.mails_sent() == 1
        assert len(ticks) == 5
        [mail] = sink.mails
        assert "ops@example.com" in mail["to"][0]
        assert "Subject: app errors" in mail["data"]
        assert "disk full" in mail["data"] and "disk still full" in mail["data"]
        assert "not mailed" not in mail["data"]
    finally:
        sink.close()
