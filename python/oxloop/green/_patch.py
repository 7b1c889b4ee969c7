"""Putting the green functions into the standard library (and taking them out again).

Each `patch_*` replaces attributes of a standard module and remembers the originals;
`unpatch_all()` puts every original back. Code that looks the names up when it runs
(`socket.socket(...)`, `socket.create_connection`, `time.sleep`, `select.poll`) runs
green; code that copied a name before the patch (`from socket import socket`) keeps
the original.
"""

from __future__ import annotations

import os
import queue
import select
import selectors
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
import time

from . import _hub, _io, _threads

__all__ = [
    "is_patched",
    "patch_all",
    "patch_dns",
    "patch_os",
    "patch_queue",
    "patch_select",
    "patch_signal",
    "patch_socket",
    "patch_ssl",
    "patch_subprocess",
    "patch_thread",
    "patch_time",
    "unpatch_all",
]

_MISSING = object()
_saved: dict[tuple[object, str], object] = {}


def _replace(owner, name: str, value) -> None:
    key = (owner, name)
    if key not in _saved:
        _saved[key] = owner.__dict__.get(name, _MISSING)
    if value is _MISSING:
        if name in owner.__dict__:
            delattr(owner, name)
    else:
        setattr(owner, name, value)


def patch_socket() -> None:
    """`socket.socket`, `socketpair`, `create_connection` (and so `fromfd`,
    `create_server` and every `socket.socket(...)` call) become green."""
    _replace(socket, "socket", _io.socket)
    _replace(socket, "socketpair", _io.socketpair)
    _replace(socket, "create_connection", _io.create_connection)


def patch_dns() -> None:
    """`socket.getaddrinfo`, `gethostbyname`, `gethostbyname_ex`, `gethostbyaddr`,
    `getnameinfo` and `getfqdn` resolve names in the loop's executor."""
    for name in (
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
        "getnameinfo",
        "getfqdn",
    ):
        _replace(socket, name, getattr(_io, name))


def patch_ssl() -> None:
    """Every `ssl.SSLContext.wrap_socket` makes a green `SSLSocket`."""
    _replace(ssl.SSLContext, "sslsocket_class", _io.SSLSocket)


def patch_select() -> None:
    """`select.select` and `select.poll` become green; `select.epoll` is hidden and
    `selectors.DefaultSelector` is the (green) `PollSelector`, so `selectors`,
    `socketserver` and `subprocess` wait greenly."""
    _replace(select, "select", _io.select)
    _replace(select, "poll", _io.poll)
    for name in ("epoll", "devpoll", "kqueue"):
        if hasattr(select, name):
            _replace(select, name, _MISSING)
    _replace(selectors.PollSelector, "_selector_cls", _io.poll)
    if "_select" in selectors.SelectSelector.__dict__:
        _replace(selectors.SelectSelector, "_select", staticmethod(_io.select))
    _replace(selectors, "DefaultSelector", selectors.PollSelector)


def patch_time() -> None:
    """`time.sleep` lets the other tasks run."""
    _replace(time, "sleep", _io.sleep)


def _patch_locks() -> None:
    _replace(threading, "Lock", _threads.Lock)
    _replace(threading, "_allocate_lock", _threads.Lock)
    _replace(threading, "RLock", _threads.RLock)


def patch_thread() -> None:
    """`threading.Lock`, `RLock` (and so `Condition`, `Event`, `Semaphore`,
    `Barrier` and `queue.Queue` made afterwards) park a green task instead of blocking
    its thread, and still work between real threads; `threading.local` keeps one set of
    attributes per task; `Thread.join` in a task lets the others run;
    `socketserver.ThreadingMixIn` handles each request in a green task. Threads stay
    real threads (see docs/python-green.md for why)."""
    _patch_locks()
    _replace(threading, "local", _threads.local)
    _replace(threading.Thread, "join", _threads.join)
    _replace(socketserver.ThreadingMixIn, "process_request", _threads.process_request)


def patch_queue() -> None:
    """`queue.SimpleQueue` becomes the pure-Python one, and `queue.Queue`,
    `LifoQueue` and `PriorityQueue` get green-aware locks (those of `patch_thread`),
    so a task waiting in `get()`/`put()` lets the others run."""
    _patch_locks()
    _replace(queue, "SimpleQueue", queue._PySimpleQueue)


def patch_os() -> None:
    """`os.read` and `os.write` on a blocking pipe or socket wait greenly in a task
    (regular files and non-blocking fds behave as before)."""
    _replace(os, "read", _io.patched_os_read)
    _replace(os, "write", _io.patched_os_write)


def patch_subprocess() -> None:
    """`subprocess.Popen` (and so `run`, `call`, `check_output`) is `green.Popen`:
    its pipes, `wait()` and `communicate()` let the other tasks run."""
    _replace(subprocess, "Popen", _io.Popen)


_orig_signal = signal.signal
_orig_getsignal = signal.getsignal


class _GreenSignalHandler:
    """What the patched `signal.signal` installs around a Python handler: while the
    thread's green loop runs, the handler runs in a new green task (so it may wait
    greenly and never runs inside another task's frame); otherwise it runs at once,
    as it would unpatched."""

    __slots__ = ("handler",)

    def __init__(self, handler) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame) -> None:
        evloop = getattr(_hub._local, "evloop", None)
        if evloop is not None and evloop.loop.is_running():
            _hub.spawn(self.handler, signum, frame)
        else:
            self.handler(signum, frame)


def _unwrap(handler):
    return handler.handler if isinstance(handler, _GreenSignalHandler) else handler


def green_signal(signalnum: int, handler):
    """`signal.signal` for `patch_signal`: a Python handler runs in a green task when
    the signal arrives while the green loop runs (called as `handler(signum,
    frame)`); returns the previous handler as the original does."""
    if callable(handler) and handler is not signal.default_int_handler:
        handler = _GreenSignalHandler(handler)
    return _unwrap(_orig_signal(signalnum, handler))


def green_getsignal(signalnum: int):
    """`signal.getsignal` for `patch_signal`: the handler as it was given."""
    return _unwrap(_orig_getsignal(signalnum))


def patch_signal() -> None:
    """`signal.signal` handlers run in green tasks while the green loop runs, instead
    of inside whatever task the signal interrupted; `signal.getsignal` reports them as
    given."""
    _replace(signal, "signal", green_signal)
    _replace(signal, "getsignal", green_getsignal)


def patch_all() -> None:
    """Every patch above: sockets, DNS, SSL, select, time, threading locks and
    `local`, queue, os pipes, subprocess and signal handlers."""
    patch_socket()
    patch_dns()
    patch_ssl()
    patch_select()
    patch_time()
    patch_thread()
    patch_queue()
    patch_os()
    patch_subprocess()
    patch_signal()


def unpatch_all() -> None:
    """Puts back every original that a patch replaced; a handler installed through the
    patched `signal.signal` stays, as the plain handler."""
    if _saved.get((signal, "signal"), _MISSING) is not _MISSING:
        for signum in signal.valid_signals():
            try:
                current = _orig_getsignal(signum)
            except (OSError, ValueError):
                continue
            if isinstance(current, _GreenSignalHandler):
                try:
                    _orig_signal(signum, current.handler)
                except ValueError:  # not the main thread: it stays wrapped
                    pass
    while _saved:
        (owner, name), original = _saved.popitem()
        if original is _MISSING:
            if name in owner.__dict__:
                delattr(owner, name)
        else:
            setattr(owner, name, original)


def is_patched() -> bool:
    """Whether any patch is in effect."""
    return bool(_saved)
