"""Pipes and child processes: connect_read_pipe/connect_write_pipe, subprocess_exec,
subprocess_shell and asyncio's subprocess streams; no child is left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
from conftest import run


def _children() -> list[int]:
    """Pids of this process's children that still exist (zombies included)."""
    me = os.getpid()
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            kids.append(int(name))
    return kids


class PipeCollector(asyncio.Protocol):
    def __init__(self, loop):
        self.data = bytearray()
        self.done = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.done.set_result(exc)


def test_read_and_write_pipes(loop):
    async def main():
        r, w = os.pipe()
        rt, rp = await loop.connect_read_pipe(lambda: PipeCollector(loop), os.fdopen(r, "rb", 0))
        wt, wp = await loop.connect_write_pipe(lambda: PipeCollector(loop), os.fdopen(w, "wb", 0))
        assert rt.get_extra_info("pipe").fileno() == r
        assert wt.get_extra_info("pipe").fileno() == w
        assert wt.can_write_eof()
        payload = b"through the pipe " * 20_000
        wt.write(payload)
        wt.writelines([b"a", b"b"])
        rt.pause_reading()
        rt.resume_reading()
        if sys.version_info >= (3, 11):  # pipe transports' is_reading is new in 3.11
            assert rt.is_reading()
        wt.close()
        await rp.done
        await wp.done
        return bytes(rp.data) == payload + b"ab"

    assert run(loop, main())


def test_write_pipe_reader_goes_away(loop):
    async def main():
        r, w = os.pipe()
        wt, wp = await loop.connect_write_pipe(lambda: PipeCollector(loop), os.fdopen(w, "wb", 0))
        os.close(r)
        exc = await wp.done
        # Reader closed: the transport closes (BrokenPipe or clean).
        assert exc is None or isinstance(exc, BrokenPipeError)
        return True

    assert run(loop, main())


def test_create_subprocess_exec_communicate(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; data = sys.stdin.read(); sys.stdout.write(data.upper());"
            " sys.stderr.write('err'); sys.exit(3)",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(b"hello child")
        return out, err, proc.returncode

    assert run(loop, main()) == (b"HELLO CHILD", b"err", 3)
    assert _children() == []


def test_create_subprocess_shell(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo shell-$((1+2)); exit 5", stdout=subprocess.PIPE
        )
        out = await proc.stdout.read()
        code = await proc.wait()
        return out, code

    assert run(loop, main()) == (b"shell-3\n", 5)
    assert _children() == []


def test_subprocess_kill_and_terminate(loop):
    async def main():
        codes = []
        for action in ("kill", "terminate", "send_signal"):
            proc = await asyncio.create_subprocess_exec("sleep", "30")
            assert proc.returncode is None
            if action == "send_signal":
                proc.send_signal(signal.SIGINT)
            else:
                getattr(proc, action)()
            codes.append(await proc.wait())
        return codes

    assert run(loop, main()) == [-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT]
    assert _children() == []


def test_subprocess_exec_protocol(loop):
    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.out = bytearray()
            self.exited = loop.create_future()
            self.stdout_closed = loop.create_future()
            self.fds_closed = []

        def pipe_data_received(self, fd, data):
            self.out += data

        def pipe_connection_lost(self, fd, exc):
            self.fds_closed.append(fd)
            if fd == 1:
                self.stdout_closed.set_result(True)

        def process_exited(self):
            self.exited.set_result(True)

    async def main():
        transport, proto = await loop.subprocess_exec(
            Proto, "printf", "%s", "raw-protocol", stdin=None, stderr=None
        )
        assert transport.get_pid() > 0
        assert transport.get_pipe_transport(1) is not None
        assert transport.get_extra_info("subprocess").pid == transport.get_pid()
        # process_exited may come before the last pipe data (asyncio's documented
        # order): wait for both.
        await proto.exited
        await proto.stdout_closed
        code = transport.get_returncode()
        transport.close()
        return code, bytes(proto.out)

    assert run(loop, main()) == (0, b"raw-protocol")


def test_subprocess_shell_protocol(loop):
    async def main():
        transport, proto = await loop.subprocess_shell(
            asyncio.SubprocessProtocol, "exit 7", stdin=None, stdout=None, stderr=None
        )
        while transport.get_returncode() is None:
            await asyncio.sleep(0.005)
        transport.close()
        return transport.get_returncode()

    assert run(loop, main()) == 7


def test_subprocess_not_found(loop):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/program")
        return True

    assert run(loop, main())


def test_many_subprocesses_concurrently(loop):
    async def main():
        async def one(i):
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", f"echo {i}", stdout=subprocess.PIPE
            )
            out, _ = await proc.communicate()
            return int(out)

        return await asyncio.gather(*(one(i) for i in range(20)))

    assert run(loop, main()) == list(range(20))
    assert _children() == []


def test_subprocess_on_loop_in_other_thread():
    import threading

    import oxloop

    loop = oxloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def child():
            proc = await asyncio.create_subprocess_exec("true")
            return await proc.wait()

        assert asyncio.run_coroutine_threadsafe(child(), loop).result(10) == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert _children() == []


def test_subprocess_streams_large_data_both_ways(loop):
    payload = os.urandom(8 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate(payload)
        return out == payload, proc.returncode

    assert run(loop, main(), timeout=30) == (True, 0)


def test_subprocess_exits_before_reading_stdin(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "true", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        # The child does not read: asyncio ignores the broken pipe in communicate().
        out, _ = await proc.communicate(b"x" * (4 * 1024 * 1024))
        return out, proc.returncode

    assert run(loop, main()) == (b"", 0)


def test_subprocess_stdout_readline_streaming(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            "-c",
            "import sys\nfor line in sys.stdin:\n    print(line.strip()[::-1])",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        answers = []
        for word in ("alpha", "beta", "gamma"):
            proc.stdin.write(word.encode() + b"\n")
            await proc.stdin.drain()
            answers.append((await proc.stdout.readline()).strip())
        proc.stdin.close()
        await proc.wait()
        return answers

    assert run(loop, main()) == [b"ahpla", b"ateb", b"ammag"]
