"""oxloop.green's blocking-style I/O: sockets, TLS, select/poll, DNS, pipes and
subprocesses, switching to the loop instead of blocking; real sockets on loopback."""

from __future__ import annotations

import os
import socket as stdsocket
import ssl
import struct
import sys

import pytest
from conftest import open_fds

from oxloop import green


@pytest.fixture
def evloop():
    """A fresh green loop for the thread, destroyed afterwards; the fds it opened
    (and the test's sockets) are closed again."""
    before = open_fds()
    ev = green.EventLoop()
    try:
        yield ev
    finally:
        ev.destroy()
    assert open_fds() <= before


def listener() -> green.socket:
    sock = green.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


def echo_server(sock, handled=None):
    """Accepts forever; each connection echoes lines in its own task."""

    def serve(conn):
        with conn, conn.makefile("rb") as reader:
            for line in reader:
                conn.sendall(line.upper())
        if handled is not None:
            handled.append(1)

    while True:
        conn, _ = sock.accept()
        green.spawn(serve, conn)


def test_hundreds_of_tasks_doing_socket_io(evloop):
    server = listener()
    port = server.getsockname()[1]
    handled = []
    accepting = green.spawn(echo_server, server, handled)

    def client(i):
        with green.create_connection(("127.0.0.1", port)) as conn:
            for j in range(3):
                conn.sendall(b"hello %d %d\n" % (i, j))
                got = b""
                while not got.endswith(b"\n"):
                    got += conn.recv(100)
                assert got == b"HELLO %d %d\n" % (i, j)
        return i

    clients = [green.spawn(client, i) for i in range(300)]
    assert [c.join(30) and c.result() for c in clients] == list(range(300))
    while len(handled) < 300:
        green.sleep(0.01)
    accepting.kill()
    accepting.join()
    server.close()


def test_add_reader_on_a_green_socket_that_was_read(evloop):
    a, b = green.socketpair()
    with a, b:
        green.spawn(lambda: b.send(b"x"))
        assert a.recv(1) == b"x"  # from the main greenlet
        reader = green.spawn(a.recv, 1)
        green.spawn(lambda: (green.sleep(0.01), b.send(b"y")))
        assert reader.join(5) and reader.result() == b"y"  # leaves the fd watched
        got = []
        evloop.add_reader(a, lambda: (got.append(a.recv(1)), evloop.remove_reader(a)))
        b.send(b"z")
        evloop.run()
        assert got == [b"z"]


def test_socket_timeouts_and_nonblocking_mode(evloop):
    a, b = green.socketpair()
    with a, b:
        a.settimeout(0.02)
        assert a.gettimeout() == 0.02 and a.getblocking()
        with pytest.raises(TimeoutError):
            a.recv(10)
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            a.recv(10)
        a.setblocking(True)
        b.sendall(b"x" * 10)
        buf = bytearray(10)
        assert a.recv_into(buf) == 10 and bytes(buf) == b"x" * 10


def test_recv_and_send_behave_as_the_standard_librarys(evloop):
    """The green socket's own recv/send: the same results, errors and messages as
    `socket.socket`'s, for every bytes-like argument."""
    import array

    a, b = green.socketpair()
    plain_a, plain_b = stdsocket.socketpair()
    with a, b, plain_a, plain_b:
        for data in (b"ab", bytearray(b"cd"), memoryview(b"xef")[1:], array.array("h", [1, 2])):
            assert a.send(data) == plain_a.send(data)
            a.sendall(data)
            plain_a.sendall(data)
            assert b.recv(100) == plain_b.recv(100)
        assert a.send(b"") == 0
        for bad in ("text", 5, None, memoryview(b"abcd")[::2]):
            with pytest.raises(Exception) as green_error:
                a.send(bad)
            with pytest.raises(Exception) as plain_error:
                plain_a.send(bad)
            assert type(green_error.value) is type(plain_error.value), bad
        with pytest.raises(ValueError, match="negative buffersize in recv"):
            b.recv(-1)
        b.sendall(b"x" * 50_000)
        got = b""
        while len(got) < 50_000:
            got += a.recv(300_000)  # larger than the reused receive buffer
        assert got == b"x" * 50_000
        b.sendall(b"peek")
        assert a.recv(10, stdsocket.MSG_PEEK) == b"peek"
        a.settimeout(0.0)
        got = b""
        while got != b"peek":
            got += a.recv(10)
        with pytest.raises(BlockingIOError):
            a.recv(10)
    for sock, plain in ((a, plain_a), (b, plain_b)):
        with pytest.raises(OSError) as green_error:
            sock.recv(10)
        with pytest.raises(OSError) as plain_error:
            plain.recv(10)
        assert str(green_error.value) == str(plain_error.value)
        with pytest.raises(OSError) as green_error:
            sock.send(b"x")
        with pytest.raises(OSError) as plain_error:
            plain.send(b"x")
        assert str(green_error.value) == str(plain_error.value)
    c, d = green.socketpair()
    with c:
        d.close()
        with pytest.raises(BrokenPipeError, match=r"\[Errno 32\] Broken pipe"):
            c.send(b"x")


def test_big_sendall_while_the_peer_reads_slowly(evloop):
    a, b = green.socketpair()
    payload = os.urandom(4 * 1024 * 1024)

    def reader():
        got = bytearray()
        while len(got) < len(payload):
            chunk = b.recv(65536)
            if not chunk:
                break
            got += chunk
            green.sleep(0)
        return bytes(got)

    task = green.spawn(reader)
    a.sendall(payload)
    assert task.join(30) and task.result() == payload
    a.close()
    b.close()


def test_makefile_reads_lines(evloop):
    a, b = green.socketpair()
    with a, b:
        task = green.spawn(lambda: [a.sendall(b"line %d\n" % i) for i in range(1000)])
        with b.makefile("rb") as reader:
            lines = [reader.readline() for _ in range(1000)]
        assert lines == [b"line %d\n" % i for i in range(1000)]
        task.join()


def test_a_task_blocked_on_a_socket_whose_peer_vanishes_gets_an_error(evloop):
    server = listener()
    peer = green.socket()
    peer.connect(server.getsockname())
    conn, _ = server.accept()
    task = green.spawn(conn.recv, 100)
    green.sleep(0.01)
    assert task.is_alive()
    peer.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a reset, not an orderly end
    task.join(5)
    assert isinstance(task.exception, ConnectionResetError)
    conn.close()
    server.close()


def test_closing_a_socket_wakes_its_waiting_task(evloop):
    a, b = green.socketpair()
    task = green.spawn(a.recv, 100)
    green.sleep(0.01)
    a.close()
    task.join(5)
    assert isinstance(task.exception, OSError)
    b.close()


def test_connect_to_a_closed_port_and_by_name(evloop):
    server = listener()
    port = server.getsockname()[1]
    server.close()
    with green.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    server = listener()
    port = server.getsockname()[1]
    with green.socket() as sock:
        sock.connect(("localhost", port))  # resolved in the executor
        conn, _ = server.accept()
        conn.close()
    server.close()


def test_tls_with_a_self_signed_certificate(evloop, cert_files):
    cert, key = cert_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = green.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    server = green.wrap_socket(server_ctx, listener(), server_side=True)

    def serve():
        while True:
            conn, _ = server.accept()
            green.spawn(lambda c: (c.sendall(c.recv(100).upper()), c.close()), conn)

    accepting = green.spawn(serve)

    def client(i):
        plain = green.create_connection(server.getsockname())
        with client_ctx.wrap_socket(plain, server_hostname="localhost") as conn:
            assert isinstance(conn, green.SSLSocket) and isinstance(conn, green.socket)
            conn.sendall(b"secret %d" % i)
            return conn.recv(100)

    clients = [green.spawn(client, i) for i in range(20)]
    assert [c.join(30) and c.result() for c in clients] == [b"SECRET %d" % i for i in range(20)]
    accepting.kill()
    accepting.join()
    server.close()


def test_sslobject_and_memory_bios_over_a_green_socket(evloop, cert_files):
    cert, key = cert_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    a, b = green.socketpair()
    server = green.spawn(
        lambda: (lambda s: (s.sendall(s.recv(100) * 2), s.close()))(
            green.wrap_socket(server_ctx, b, server_side=True)
        )
    )
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")

    def flush():
        pending = outgoing.read()
        if pending:
            a.sendall(pending)

    def drive(operation, *args):
        """Runs a TLS step, moving bytes between the BIOs and the green socket."""
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                flush()
                data = a.recv(65536)
                if not data:
                    incoming.write_eof()
                incoming.write(data)
                continue
            flush()
            return result

    drive(tls.do_handshake)
    drive(tls.write, b"bio ")
    got = b""
    while len(got) < 8:
        got += drive(tls.read, 100)
    assert got == b"bio bio "
    server.join(10)
    a.close()


def test_select_and_poll(evloop):
    import select

    a, b = green.socketpair()
    with a, b:
        assert green.select([a], [], [], 0.01) == ([], [], [])
        green.spawn(lambda: (green.sleep(0.01), b.send(b"x")))
        assert green.select([a], [], [], 5) == ([a], [], [])
        p = green.poll()
        p.register(a, select.POLLIN)
        assert p.poll(0) == [(a.fileno(), select.POLLIN)]
        a.recv(1)
        assert p.poll(10) == []
        green.spawn(lambda: (green.sleep(0.01), b.send(b"y")))
        assert p.poll() == [(a.fileno(), select.POLLIN)]
        p.unregister(a)


def test_dns(evloop):
    infos = green.getaddrinfo("127.0.0.1", 80, type=stdsocket.SOCK_STREAM)
    assert infos[0][0] == stdsocket.AF_INET and infos[0][4] == ("127.0.0.1", 80)
    assert {i[4][0] for i in green.getaddrinfo("localhost", 80)} & {"127.0.0.1", "::1"}
    assert green.gethostbyname("127.0.0.1") == "127.0.0.1"
    assert green.gethostbyname("localhost").startswith("127.")
    assert green.gethostbyname_ex("localhost")[2]
    assert isinstance(green.gethostbyaddr("127.0.0.1")[0], str)
    assert isinstance(green.getfqdn(), str)
    assert green.getnameinfo(("127.0.0.1", 80), stdsocket.NI_NUMERICHOST | 2) == (
        "127.0.0.1",
        "80",
    )


def test_dns_lets_other_tasks_run(evloop):
    ticks = []
    ticker = green.spawn(lambda: [ticks.append(green.sleep(0)) for _ in range(5)])
    green.gethostbyname_ex("localhost")
    ticker.join()
    assert len(ticks) == 5


def test_pipes(evloop):
    r, w = green.pipe()
    try:
        task = green.spawn(green.read, r, 100)
        green.sleep(0.01)
        assert task.is_alive()
        assert green.write(w, b"data") == 4
        task.join()
        assert task.result() == b"data"
    finally:
        os.close(r)
        os.close(w)


def test_subprocess_pipes(evloop):
    code = "import sys; data = sys.stdin.read(); print(data.upper(), end='')"
    procs = [
        green.Popen([sys.executable, "-c", code], stdin=-1, stdout=-1, stderr=-1, text=True)
        for _ in range(3)
    ]
    tasks = [green.spawn(p.communicate, f"child {i}", 30) for i, p in enumerate(procs)]
    for i, task in enumerate(tasks):
        task.join()
        assert task.result() == (f"CHILD {i}", "")
    assert [p.wait() for p in procs] == [0, 0, 0]
    with green.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as slow:
        with pytest.raises(Exception) as info:
            slow.wait(0.05)
        assert "timed out" in str(info.value)
        slow.kill()
        assert slow.wait() != 0


def test_udp_and_dup(evloop):
    receiver = green.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    sender = green.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind(("127.0.0.1", 0))
        task = green.spawn(receiver.recvfrom, 100)
        green.sleep(0.01)
        assert task.is_alive()
        sender.sendto(b"datagram", receiver.getsockname())
        task.join(5)
        data, addr = task.result()
        assert data == b"datagram" and addr[1] == sender.getsockname()[1]
        copy = receiver.dup()
        with copy:
            assert isinstance(copy, green.socket) and copy.gettimeout() is None
            sender.sendto(b"again", receiver.getsockname())
            assert copy.recv(100) == b"again"


def test_kill_a_task_blocked_in_recv_then_read_again(evloop):
    a, b = green.socketpair()
    with a, b:
        blocked = green.spawn(a.recv, 10)
        green.sleep(0.01)
        blocked.kill()
        assert blocked.join(5) and blocked.exception is None
        b.send(b"after")
        reader = green.spawn(a.recv, 10)
        assert reader.join(5) and reader.result() == b"after"


def test_reads_from_tasks_the_main_greenlet_and_select_on_one_socket(evloop):
    a, b = green.socketpair()
    with a, b:

        def later(data):
            green.sleep(0.01)
            b.send(data)

        for turn in range(2):
            green.spawn(later, b"1")
            assert green.spawn(a.recv, 1).join(5)  # a task: leaves the fd watched
            green.spawn(later, b"2")
            assert a.recv(1) == b"2"  # the main greenlet watches it only while waiting
            green.spawn(later, b"3")
            assert green.select([a], [], [], 5)[0] == [a]
            assert a.recv(1) == b"3"
            green.spawn(later, b"4")
            task = green.spawn(a.recv, 1)
            assert task.join(5) and task.result() == b"4", turn
