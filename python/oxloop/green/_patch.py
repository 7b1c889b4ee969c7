"""Putting the green functions into the standard library (and taking them out again).

Each `patch_*` replaces attributes of a standard module and remembers the originals;
`unpatch_all()` puts every original back. Code that looks the names up when it runs
(`socket.socket(...)`, `socket.create_connection`, `time.sleep`, `select.poll`) runs
green; code that copied a name before the patch (`from socket import socket`) keeps
the original.
"""

from __future__ import annotations

import select
import selectors
import socket
import ssl
import time

from . import _io

__all__ = [
    "is_patched",
    "patch_all",
    "patch_dns",
    "patch_select",
    "patch_socket",
    "patch_ssl",
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


def patch_all() -> None:
    """Every patch above: sockets, DNS, SSL, select and time."""
    patch_socket()
    patch_dns()
    patch_ssl()
    patch_select()
    patch_time()


def unpatch_all() -> None:
    """Puts back every original that a patch replaced."""
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
