"""add_reader/add_writer and their removal, with ints and objects with fileno()."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest


def _stop_after(loop, seconds=5):
    return loop.call_later(seconds, loop.stop)


def test_reader_with_int_fd(loop):
    r, w = os.pipe()
    try:
        got = []

        def on_read():
            got.append(os.read(r, 100))
            loop.stop()

        loop.add_reader(r, on_read)
        os.write(w, b"hello")
        safety = _stop_after(loop)
        loop.run_forever()
        safety.cancel()
        assert got == [b"hello"]
        assert loop.remove_reader(r) is True
        assert loop.remove_reader(r) is False
    finally:
        os.close(r)
        os.close(w)


def test_reader_and_writer_with_socket_objects(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        got = []

        def on_writable():
            a.send(b"ping")
            loop.remove_writer(a)

        def on_readable():
            got.append(b.recv(100))
            loop.stop()

        loop.add_writer(a, on_writable)
        loop.add_reader(b, on_readable)
        safety = _stop_after(loop)
        loop.run_forever()
        safety.cancel()
        assert got == [b"ping"]
        assert loop.remove_writer(a) is False
        assert loop.remove_reader(b) is True
    finally:
        a.close()
        b.close()


def test_replacing_a_reader(loop):
    a, b = socket.socketpair()
    try:
        got = []
        loop.add_reader(b, lambda: got.append("old"))
        loop.add_reader(b, lambda: (got.append("new"), b.recv(10), loop.stop()))
        a.send(b"x")
        safety = _stop_after(loop)
        loop.run_forever()
        safety.cancel()
        assert got == ["new"]
        assert loop.remove_reader(b)
    finally:
        a.close()
        b.close()


def test_reader_args_passed(loop):
    a, b = socket.socketpair()
    try:
        got = []

        def cb(x, y):
            got.append((x, y))
            b.recv(10)
            loop.stop()

        loop.add_reader(b.fileno(), cb, 1, "two")
        a.send(b"x")
        safety = _stop_after(loop)
        loop.run_forever()
        safety.cancel()
        assert got == [(1, "two")]
        loop.remove_reader(b.fileno())
    finally:
        a.close()
        b.close()


def test_reader_fires_repeatedly_level_triggered(loop):
    a, b = socket.socketpair()
    try:
        count = []

        def cb():
            count.append(1)
            if len(count) == 3:
                b.recv(10)
                loop.stop()

        loop.add_reader(b, cb)
        a.send(b"x")
        safety = _stop_after(loop)
        loop.run_forever()
        safety.cancel()
        assert len(count) == 3
        loop.remove_reader(b)
    finally:
        a.close()
        b.close()


def test_remove_unknown_fd_returns_false(loop):
    a, b = socket.socketpair()
    try:
        assert loop.remove_reader(a) is False
        assert loop.remove_writer(a.fileno()) is False
    finally:
        a.close()
        b.close()


def test_negative_fd(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, print)
    with pytest.raises(ValueError):
        loop.add_writer(-5, print)


def test_object_without_fileno(loop):
    with pytest.raises((ValueError, TypeError)):
        loop.add_reader(object(), print)


def test_closed_fd(loop):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        loop.add_reader(r, print)


def test_regular_file_is_refused(loop):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(OSError):
            loop.add_reader(f.fileno(), print)
        assert loop.remove_reader(f.fileno()) is False


def test_add_reader_on_closed_loop(loop):
    a, b = socket.socketpair()
    try:
        loop.close()
        with pytest.raises(RuntimeError):
            loop.add_reader(a, print)
    finally:
        a.close()
        b.close()


def test_reader_removed_when_socket_closed_then_fd_reused(loop):
    a, b = socket.socketpair()
    loop.add_reader(b, print)
    assert loop.remove_reader(b)
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        got = []
        loop.add_reader(d, lambda: (got.append(d.recv(10)), loop.stop()))
        c.send(b"fresh")
        safety = _stop_after(loop)
        loop.run_forever()
        safety.cancel()
        assert got == [b"fresh"]
        loop.remove_reader(d)
    finally:
        c.close()
        d.close()
