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
