"""The Python half of oxloop's stream transport.

`oxloop._oxloop.StreamTransport` (Rust) does the I/O, the write buffer, flow control
and the calls into the protocol; this subclass keeps what asyncio code reads from a
transport in Python: `get_extra_info`, the server's count of its connections, the
loop's table of transports, and a socket object for `get_extra_info("socket")`.
"""

from __future__ import annotations

from asyncio import constants, trsock

from . import _oxloop

__all__ = ["SocketTransport"]


class SocketTransport(_oxloop.StreamTransport):
    """asyncio's socket transport (TCP and Unix streams) running on the oxloop core."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self._loop = loop
        self._server = server
        # The core owns the fd from now on and closes it. The caller's socket object
        # keeps the number, for the caller and for get_extra_info("socket"), and is
        # detached once the core has closed it (in _connection_lost), so that it never
        # closes the fd itself.
        self._sock = sock
        self._sock_fd = fd = sock.fileno()
        self._extra = dict(extra or {})
        self._extra["socket"] = trsock.TransportSocket(self._sock)
        for name, get in (
            ("sockname", self._sock.getsockname),
            ("peername", self._sock.getpeername),
        ):
            if name not in self._extra:
                try:
                    self._extra[name] = get()
                except OSError:
                    self._extra[name] = None
        if server is not None:
            _server_call(server, "_attach", self)
        loop._transports[fd] = self
        try:
            self._start(loop, fd, protocol, waiter)
        except BaseException:
            sock.detach()  # the core closed the fd when it failed
            raise

    def get_extra_info(self, name, default=None):
        """`socket`, `sockname`, `peername`, and what the creator added (TLS adds its own)."""
        return self._extra.get(name, default)

    def _connection_lost(self) -> None:
        """Called by the native half once the connection is gone (after the protocol's
        `connection_lost`): the fd is closed, so the socket object lets go of it."""
        self._sock.detach()
        server, self._server = self._server, None
        if server is not None:
            _server_call(server, "_detach", self)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        fd = self._fileno()
        if fd < 0:
            info.append("closed")
        elif self.is_closing():
            info.append("closing")
        info.append(f"fd={fd}")
        if fd >= 0:
            info.append(f"read={'polling' if self.is_reading() else 'idle'}")
            size = self.get_write_buffer_size()
            info.append(f"write=<{'polling' if size else 'idle'}, bufsize={size}>")
        return "<{}>".format(" ".join(info))


_ARITY: dict[type, bool] = {}


def _server_call(server, name: str, transport) -> None:
    """`server._attach()`/`_detach()`: Python 3.13 passes the transport, older ones not."""
    method = getattr(server, name)
    takes_transport = _ARITY.get(type(server))
    if takes_transport is None:
        import inspect

        takes_transport = len(inspect.signature(method).parameters) >= 1
        _ARITY[type(server)] = takes_transport
    if takes_transport:
        method(transport)
    else:
        method()
