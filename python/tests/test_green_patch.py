"""oxloop.green.patch_all(): unmodified standard-library code (urllib.request,
http.server, socketserver, subprocess, time.sleep) runs concurrently in green tasks.
Each check runs in its own interpreter, so no patch leaks into the other tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from oxloop import green


def run_script(source: str) -> list[str]:
    """Runs `source` in a new interpreter; its output lines (it must exit 0)."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_urllib_against_http_server_with_100_tasks():
    assert run_script(
        """
        from oxloop import green
        green.patch_all()
        import http.server, time, urllib.request

        inside = [0, 0]  # handlers running now, most at once

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                inside[0] += 1
                inside[1] = max(inside)
                time.sleep(0.02)  # green: the other requests go on
                inside[0] -= 1
                body = self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(green.TaskingMixIn, http.server.HTTPServer):
            request_queue_size = 200

        server = Server(("127.0.0.1", 0), Handler)
        serving = green.spawn(server.serve_forever, 0.05)
        url = "http://127.0.0.1:%d/page/" % server.server_address[1]

        def fetch(i):
            with urllib.request.urlopen(url + str(i), timeout=30) as response:
                return response.read().decode()

        tasks = [green.spawn(fetch, i) for i in range(100)]
        assert [t.join(60) and t.result() for t in tasks] == ["/page/%d" % i for i in range(100)]
        assert inside[1] > 1, inside
        serving.kill()
        serving.join()
        server.server_close()
        green.unpatch_all()
        import socket
        assert socket.socket is not green.socket and not green.is_patched()
        print("fetched", len(tasks))
        """
    ) == ["fetched", "100"]


def test_socketserver_echo():
    assert run_script(
        """
        from oxloop import green
        green.patch_all()
        import socket, socketserver

        class Echo(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    self.wfile.write(line.upper())

        class Server(green.TaskingMixIn, socketserver.TCPServer):
            allow_reuse_address = True
            request_queue_size = 128  # the default 5 makes the kernel drop handshakes

        server = Server(("127.0.0.1", 0), Echo)
        serving = green.spawn(server.serve_forever, 0.05)

        def client(i):
            with socket.create_connection(server.server_address) as conn:
                reader = conn.makefile("rb")
                conn.sendall(b"abc%d\\n" % i)
                return reader.readline()

        tasks = [green.spawn(client, i) for i in range(50)]
        assert [t.join(30) and t.result() for t in tasks] == [b"ABC%d\\n" % i for i in range(50)]
        serving.kill()
        serving.join()
        server.server_close()
        print("echoed")
        """
    ) == ["echoed"]


def test_patched_sleep_subprocess_and_select_let_tasks_run():
    assert run_script(
        """
        from oxloop import green
        green.patch_all()
        import select, subprocess, sys, time

        ticks = []
        def ticker():
            while True:
                ticks.append(1)
                time.sleep(0.005)

        t = green.spawn(ticker)
        done = subprocess.run(
            [sys.executable, "-c", "import time; time.sleep(0.2); print('child')"],
            capture_output=True, text=True, timeout=30,
        )
        assert done.stdout == "child\\n", done
        assert len(ticks) > 1
        before = len(ticks)
        select.select([], [], [], 0.05)
        assert len(ticks) > before
        assert not hasattr(select, "epoll")
        t.kill()
        green.unpatch_all()
        assert hasattr(select, "epoll") and time.sleep.__module__ == "time"
        print("ok")
        """
    ) == ["ok"]


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_raises_keyboard_interrupt_in_the_main_task():
    assert run_script(
        """
        import os, signal, time
        from oxloop import green
        green.patch_all()

        def worker():
            while True:
                time.sleep(0.01)

        workers = [green.spawn(worker) for _ in range(5)]
        green.spawn(lambda: (time.sleep(0.05), os.kill(os.getpid(), signal.SIGINT)))
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            print("interrupted")
        """
    ) == ["interrupted"]


def test_patch_and_unpatch_in_process():
    import select
    import socket
    import time

    originals = socket.socket, socket.getaddrinfo, select.select, time.sleep
    green.patch_socket()
    green.patch_dns()
    green.patch_select()
    green.patch_time()
    green.patch_ssl()
    try:
        assert socket.socket is green.socket and socket.getaddrinfo is green.getaddrinfo
        assert select.select is green.select and time.sleep is not originals[3]
    finally:
        green.unpatch_all()
    assert (socket.socket, socket.getaddrinfo, select.select, time.sleep) == originals
    assert not green.is_patched()


def test_patch_all_and_unpatch_all_in_process():
    import os
    import queue
    import socketserver
    import threading

    def current():
        return (
            threading.Lock,
            threading._allocate_lock,
            threading.RLock,
            threading.local,
            threading.Thread.join,
            socketserver.ThreadingMixIn.process_request,
            queue.SimpleQueue,
            os.read,
            os.write,
            subprocess.Popen,
            signal.signal,
            signal.getsignal,
        )

    originals = current()
    green.patch_all()
    try:
        patched = current()
        assert all(a is not b for a, b in zip(originals, patched, strict=True))
        assert subprocess.Popen is green.Popen
    finally:
        green.unpatch_all()
    assert current() == originals
    assert not green.is_patched()


def test_patched_https_with_urllib(cert_files):
    cert, key = cert_files
    assert run_script(
        f"""
        from oxloop import green
        green.patch_all()
        import http.server, ssl, urllib.request

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"secure " + self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(green.TaskingMixIn, http.server.HTTPServer):
            request_queue_size = 64

        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain({cert!r}, {key!r})
        server = Server(("127.0.0.1", 0), Handler)
        server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
        assert isinstance(server.socket, green.SSLSocket)
        serving = green.spawn(server.serve_forever, 0.05)
        client_ctx = ssl.create_default_context(cafile={cert!r})
        url = "https://localhost:%d/" % server.server_address[1]

        def fetch(i):
            with urllib.request.urlopen(url + str(i), context=client_ctx, timeout=30) as r:
                return r.read()

        tasks = [green.spawn(fetch, i) for i in range(20)]
        assert [t.join(60) and t.result() for t in tasks] == [
            b"secure /%d" % i for i in range(20)
        ]
        serving.kill()
        serving.join()
        server.server_close()
        print("https")
        """
    ) == ["https"]


def test_asyncio_still_works_while_patched():
    assert run_script(
        """
        from oxloop import green
        green.patch_all()
        import asyncio, oxloop

        async def handle(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("localhost", port)
            writer.write(b"patched\\n")
            line = await reader.readline()
            writer.close()
            server.close()
            await server.wait_closed()
            return line.decode().strip()

        print(oxloop.run(main()))
        """
    ) == ["PATCHED"]


def test_patched_threading_locks_queue_and_local():
    assert run_script(
        """
        from oxloop import green
        green.patch_all()
        import queue, threading, time

        ticks = []
        def ticker():
            while True:
                ticks.append(1)
                time.sleep(0.002)
        ticking = green.spawn(ticker)

        # A task waiting for a held lock lets the others run.
        lock, order = threading.Lock(), []
        def holder():
            with lock:
                order.append("held")
                time.sleep(0.05)
                order.append("released")
        def waiter():
            time.sleep(0.01)
            before = len(ticks)
            with lock:
                order.append("got")
            return len(ticks) > before
        h, w = green.spawn(holder), green.spawn(waiter)
        assert h.join(10) and w.join(10) and w.result()
        assert order == ["held", "released", "got"]
        assert lock.acquire(timeout=0)
        lock.release()

        # RLock: re-entrant in one task, exclusive between tasks.
        rlock, inside = threading.RLock(), []
        def reenter(i):
            with rlock:
                with rlock:
                    inside.append(i)
                    time.sleep(0.005)
                    assert inside[-1] == i
        tasks = [green.spawn(reenter, i) for i in range(5)]
        assert all(t.join(10) for t in tasks) and [t.result() for t in tasks]
        assert sorted(inside) == list(range(5))

        # Event, Condition and Semaphore of the threading module, over green locks.
        event, woke = threading.Event(), []
        tasks = [green.spawn(lambda: woke.append(event.wait(10))) for _ in range(5)]
        time.sleep(0.02)
        event.set()
        assert all(t.join(10) for t in tasks) and woke == [True] * 5
        sem, active, peak = threading.Semaphore(2), [0], [0]
        def limited():
            with sem:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                time.sleep(0.01)
                active[0] -= 1
        tasks = [green.spawn(limited) for _ in range(6)]
        assert all(t.join(10) for t in tasks) and peak == [2]

        # queue.Queue with a bound, and SimpleQueue.
        q = queue.Queue(maxsize=2)
        def producer():
            for i in range(20):
                q.put(i)
            q.put(None)
        def consumer():
            got = []
            while (item := q.get()) is not None:
                got.append(item)
                q.task_done()
            return got
        p, c = green.spawn(producer), green.spawn(consumer)
        assert p.join(10) and c.join(10) and c.result() == list(range(20))
        sq = queue.SimpleQueue()
        getter = green.spawn(sq.get)
        time.sleep(0.01)
        sq.put("simple")
        assert getter.join(10) and getter.result() == "simple"
        with_timeout = green.spawn(lambda: queue.Queue().get(timeout=0.02))
        assert with_timeout.join(10) and isinstance(with_timeout.exception, queue.Empty)

        # A real thread releases a lock a task waits for; the task joins the thread.
        blocker = threading.Lock()
        blocker.acquire()
        def take():
            before = len(ticks)
            with blocker:
                pass
            return len(ticks) > before
        taker = green.spawn(take)
        time.sleep(0.02)
        thread = threading.Thread(target=blocker.release)
        def join_it():
            thread.start()
            thread.join()
            return thread.is_alive()
        joiner = green.spawn(join_it)
        assert taker.join(10) and taker.result() is True
        assert joiner.join(10) and joiner.result() is False

        # threading.local: one set of attributes per task.
        class Local(threading.local):
            def __init__(self):
                self.made = True
        loc = Local()
        loc.x = "main"
        def use(i):
            assert loc.made and not hasattr(loc, "x")
            loc.x = i
            time.sleep(0.005)
            return loc.x
        tasks = [green.spawn(use, i) for i in range(10)]
        assert [t.join(10) and t.result() for t in tasks] == list(range(10))
        assert loc.x == "main"
        ticking.kill()
        print("ok")
        """
    ) == ["ok"]


def test_threading_http_server_serves_requests_in_tasks():
    assert run_script(
        """
        from oxloop import green
        green.patch_all()
        import http.server, threading, urllib.request

        AT_ONCE = 30
        arrived = threading.Semaphore(0)
        all_in = threading.Event()
        count = [0]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                count[0] += 1
                if count[0] == AT_ONCE:
                    all_in.set()
                met = all_in.wait(20)   # every request is in a handler at once
                body = b"met" if met else b"alone"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threads_before = threading.active_count()
        serving = green.spawn(server.serve_forever, 0.05)
        url = "http://127.0.0.1:%d/" % server.server_address[1]

        def fetch():
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.read()

        tasks = [green.spawn(fetch) for _ in range(AT_ONCE)]
        assert [t.join(60) and t.result() for t in tasks] == [b"met"] * AT_ONCE
        assert threading.active_count() == threads_before
        server.shutdown()
        serving.join(10)
        server.server_close()
        print("served")
        """
    ) == ["served"]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_patched_os_pipes_subprocess_and_signals():
    assert run_script(
        """
        from oxloop import green
        green.patch_all()
        import os, signal, subprocess, sys, time

        ticks = []
        def ticker():
            while True:
                ticks.append(1)
                time.sleep(0.002)
        ticking = green.spawn(ticker)

        # os.read / os.write on a blocking pipe wait greenly.
        r, w = os.pipe()
        assert os.get_blocking(r) and os.get_blocking(w)
        reader = green.spawn(os.read, r, 100)
        time.sleep(0.02)
        before = len(ticks)
        assert os.write(w, b"hello") == 5
        assert reader.join(10) and reader.result() == b"hello"
        def slow_reader():
            total = 0
            while total < 1 << 20:
                total += len(os.read(r, 65536))
                time.sleep(0.001)
            return total
        drain = green.spawn(slow_reader)
        assert os.write(w, b"x" * (1 << 20)) == 1 << 20  # more than the pipe holds
        assert drain.join(10) and drain.result() == 1 << 20
        assert len(ticks) > before

        # A child writing slowly to a pipe, read with os.read; Popen.wait is green.
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import os, sys, time; time.sleep(0.1); os.write(1, b'late'); time.sleep(0.1)"],
            stdout=subprocess.PIPE,
        )
        assert isinstance(child, green.Popen)
        before = len(ticks)
        assert child.stdout.read() == b"late"
        assert child.wait(10) == 0 and len(ticks) > before
        assert subprocess.check_output([sys.executable, "-c", "print('child')"]) == b"child\\n"

        # signal.signal: while the loop runs, the handler runs in a green task of its
        # own (and may wait there); outside the loop it runs where the signal came.
        got = []
        def handler(signum, frame):
            time.sleep(0.001)
            got.append((signum, isinstance(green.current.task, green.Task)))
        assert signal.signal(signal.SIGUSR1, handler) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR1) is handler
        os.kill(os.getpid(), signal.SIGUSR1)  # the main greenlet, the loop not running
        assert got == [(signal.SIGUSR1, False)], got
        sender = green.spawn(os.kill, os.getpid(), signal.SIGUSR1)
        for _ in range(500):
            if len(got) == 2:
                break
            time.sleep(0.01)
        assert sender.join(10) and got[1] == (signal.SIGUSR1, True), got
        ticking.kill()

        # unpatch_all puts every original back; the handler stays, unwrapped.
        import _thread, queue, socketserver, threading
        green.unpatch_all()
        assert os.read.__module__ == "posix" and os.write.__module__ == "posix"
        assert subprocess.Popen.__module__ == "subprocess"
        assert threading.Lock is _thread.allocate_lock or threading.Lock is _thread.LockType
        assert threading.local.__module__ in ("_thread", "_threading_local")
        assert queue.SimpleQueue.__module__ == "_queue"
        assert threading.Thread.join.__module__ == "threading"
        assert socketserver.ThreadingMixIn.process_request.__module__ == "socketserver"
        assert signal.signal.__module__ == "signal"
        import _signal
        assert _signal.getsignal(signal.SIGUSR1) is handler
        print("ok")
        """
    ) == ["ok"]
