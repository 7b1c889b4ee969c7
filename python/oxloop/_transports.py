"""The Python face of oxloop's stream transport.

`oxloop._oxloop.StreamTransport` (Rust) does the I/O, the write buffer, flow control
and the calls into the protocol. `SocketTransport` is what protocols and users see: an
`asyncio.Transport` (so `isinstance` checks hold) whose methods are the native
transport's, bound per instance, plus what asyncio code reads from a transport in
Python: `get_extra_info`, the server's count of its connections, the loop's table of
transports, and the socket object for `get_extra_info("socket")`.
"""

from __future__ import annotations

from asyncio import constants, transports, trsock

from . import _oxloop

__all__ = ["SocketTransport"]


# The native transport's methods that a SocketTransport hands out as its own: bound to
# each instance, so `transport.write(data)` calls Rust with no Python frame between.
_NATIVE_METHODS = (
    "write",
    "writelines",
    "write_eof",
    "can_write_eof",
    "close",
    "abort",
    "is_closing",
    "pause_reading",
    "resume_reading",
    "is_reading",
    "set_write_buffer_limits",
    "get_write_buffer_size",
    "get_write_buffer_limits",
    "get_protocol",
    "set_protocol",
    "_force_close",
    "_fileno",
)


class SocketTransport(transports._FlowControlMixin):
    """asyncio's socket transport (TCP and Unix streams) running on the oxloop core: an
    `asyncio.Transport` (with asyncio's flow-control mixin, which `loop.sendfile`'s
    fallback asks for) whose methods are the native transport's."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        # Not the mixin's own __init__: flow control is the native transport's.
        transports.Transport.__init__(self, extra)
        self._loop = loop
        self._server = server
        native = _oxloop.StreamTransport(loop)
        self._native = native
        for name in _NATIVE_METHODS:
            setattr(self, name, getattr(native, name))
        # The core owns the fd from now on and closes it. The caller's socket object
        # keeps the number, for the caller and for get_extra_info("socket"), and is
        # detached once the core has closed it (in _connection_lost), so that it never
        # closes the fd itself.
        self._sock = sock
        self._sock_fd = fd = sock.fileno()
        self._extra["socket"] = trsock.TransportSocket(sock)
        for name, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            if name not in self._extra:
                try:
                    self._extra[name] = get()
                except OSError:
                    self._extra[name] = None
        if server is not None:
            _server_call(server, "_attach", self)
        loop._transports[fd] = self
        try:
            native._start(loop, fd, protocol, self, waiter)
        except BaseException:
            sock.detach()  # the core closed the fd when it failed
            raise

    @property
    def _protocol_paused(self) -> bool:
        """Whether the protocol was told `pause_writing` (read by asyncio's TLS layer)."""
        return self._native._protocol_paused

    def _send_file(self, fileno: int, offset: int, count: int, waiter) -> None:
        self._native._send_file(fileno, offset, count, waiter)

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
