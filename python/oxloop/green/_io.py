"""Blocking-style I/O that switches instead of blocking: sockets, SSL sockets,
`select`/`poll`, `sleep`, DNS, pipes and subprocesses.

Each fd is non-blocking underneath. An operation first tries the system call; only
when it would block does the task watch the fd on the loop and switch to the hub, and
the fd's callback switches back. A socket's timeout (`settimeout`) is kept in Python
and applied to each wait. Called where no task can wait (in the loop's own greenlet,
say from an asyncio callback while patched), the functions block as the standard
library's do.
"""

from __future__ import annotations

import _socket
import errno
import io
import os as _os
import select as _select
import socket as _stdsocket
import ssl as _ssl
import stat as _stat
import subprocess as _subprocess
import time as _time
import weakref as _weakref

from greenlet import getcurrent, greenlet

from .. import _oxloop
from . import _hub
from ._hub import _evloop, _local, _Runner, _Waiter
from ._threads import _green_loop

__all__ = [
    "Popen",
    "SSLContext",
    "SSLSocket",
    "TaskingMixIn",
    "create_connection",
    "getaddrinfo",
    "getfqdn",
    "gethostbyaddr",
    "gethostbyname",
    "gethostbyname_ex",
    "getnameinfo",
    "pipe",
    "poll",
    "read",
    "select",
    "socket",
    "socketpair",
    "write",
    "wrap_socket",
]

# The originals, taken before any patching.
_C = _socket.socket
_c_recv_into = _C.recv_into
_socket_recv = _oxloop._socket_recv
_socket_send = _oxloop._socket_send
_c_settimeout = _C.settimeout
_orig_socket = _stdsocket.socket
_orig_getaddrinfo = _socket.getaddrinfo
_orig_gethostbyname = _socket.gethostbyname
_orig_gethostbyname_ex = _socket.gethostbyname_ex
_orig_gethostbyaddr = _socket.gethostbyaddr
_orig_getnameinfo = _socket.getnameinfo
_orig_select = _select.select
_orig_poll = _select.poll
_orig_sleep = _time.sleep
_orig_os_read = _os.read
_orig_os_write = _os.write

_TIMED_OUT = object()


def _loop_for_wait():
    """The thread's green loop if the calling greenlet may wait on it, else None."""
    evloop = getattr(_local, "evloop", None) or _evloop()
    hub = evloop._hub
    if hub is not None and not hub.dead and evloop.loop.is_running():
        return None if hub is getcurrent() else evloop
    return None if evloop.loop.is_running() else evloop


def _wait_fd(fd: int, write: bool, timeout: float | None, owner=None) -> None:
    """Waits until `fd` is readable (writable), raising `TimeoutError` after
    `timeout` seconds. A socket (`owner`) waiting to read from a task keeps its fd
    watched between waits (see `_wait_readable`); other waits watch it only while
    they wait."""
    cur = getcurrent()
    if owner is not None and not write and type(cur) is _Runner:
        return _wait_readable(_local.evloop, cur, owner, fd, timeout)
    evloop = _loop_for_wait()
    if evloop is None:  # cannot switch here: block as the standard library would
        if write:
            ready = _orig_select([], [fd], [fd], timeout)
        else:
            ready = _orig_select([fd], [], [fd], timeout)
        if not any(ready):
            raise TimeoutError("timed out")
        return
    loop = evloop.loop
    if write:
        loop._add_writer(fd, cur.switch)
    else:
        loop._add_reader(fd, cur.switch)
    timer = None if timeout is None else loop.call_later(timeout, cur.switch, _TIMED_OUT)
    try:
        woken = evloop._wait()
    finally:
        if write:
            loop._remove_writer(fd)
        else:
            loop._remove_reader(fd)
        if timer is not None:
            timer.cancel()
    if woken is _TIMED_OUT:
        raise TimeoutError("timed out")


class _SocketWatch(_oxloop.TaskReader):
    """The reader that a task-reading socket leaves on its fd between waits (in
    `evloop._socket_readers[fd]` and in the socket's `_watch`). When the fd is ready
    the loop switches (natively) to the greenlet in `waiting`; with none waiting it
    calls `idle()`, which removes the reader."""

    __slots__ = ("owner", "handle", "evloop", "fd")

    def __init__(self, evloop, owner, fd: int) -> None:
        self.owner = _weakref.ref(owner)
        self.evloop = evloop
        self.fd = fd
        self.handle = evloop.loop._add_task_reader(fd, self)

    def idle(self) -> None:
        """The fd is ready and nobody waits: stop watching until someone does."""
        readers = self.evloop._socket_readers
        if readers.get(self.fd) is self:
            del readers[self.fd]
        self.evloop.loop._remove_reader(self.fd)


def _wait_readable(evloop, cur, owner, fd: int, timeout: float | None) -> None:
    """A task's wait for a socket to be readable, without two `epoll_ctl` calls per
    wait: the fd stays watched after the wait (a `_SocketWatch`), and the watcher is
    removed only when it fires with no task waiting, or when the socket closes. A
    watcher that someone else replaced or removed (its handle is then cancelled) is
    installed again."""
    watch = owner._watch
    if watch is None or watch.evloop is not evloop or watch.handle.cancelled():
        readers = evloop._socket_readers
        watch = readers.get(fd)
        if watch is None or watch.handle.cancelled() or watch.owner() is not owner:
            # None yet, replaced or removed by someone else, or left by a socket
            # that is gone.
            if watch is not None and not watch.handle.cancelled():
                evloop.loop._remove_reader(fd)
            watch = readers[fd] = _SocketWatch(evloop, owner, fd)
        owner._watch = watch
    watch.waiting = cur
    if timeout is None:
        try:
            evloop._hub.switch()
        finally:
            watch.waiting = None
        return
    timer = evloop.loop.call_later(timeout, cur.switch, _TIMED_OUT)
    try:
        woken = evloop._hub.switch()
    finally:
        watch.waiting = None
        timer.cancel()
    if woken is _TIMED_OUT:
        raise TimeoutError("timed out")


def _cancel_waits(fd: int) -> None:
    """Wakes the tasks waiting on `fd` (about to be closed) with `EBADF`."""
    evloop = getattr(_local, "evloop", None)
    if evloop is None or evloop.loop.is_closed():
        return
    loop = evloop.loop
    watch = evloop._socket_readers.pop(fd, None)
    if watch is not None and not watch.handle.cancelled():
        loop._remove_reader(fd)
        if watch.waiting is not None:
            exc = OSError(errno.EBADF, "the socket was closed while a task waited on it")
            loop.call_soon(watch.waiting.throw, exc)
    reader, writer = loop._fd_handles(fd)
    for handle, remove in ((reader, loop._remove_reader), (writer, loop._remove_writer)):
        if handle is None:
            continue
        waiter = getattr(handle._callback, "__self__", None)
        exc = OSError(errno.EBADF, "the socket was closed while a task waited on it")
        if isinstance(waiter, greenlet):
            remove(fd)
            loop.call_soon(waiter.throw, exc)
        elif isinstance(waiter, _Waiter):
            remove(fd)
            loop.call_soon(waiter.fail, exc)


def _is_numeric_host(host) -> bool:
    try:
        _socket.inet_pton(_socket.AF_INET, host)
        return True
    except (OSError, TypeError, ValueError):
        pass
    try:
        _socket.inet_pton(_socket.AF_INET6, host.split("%", 1)[0])
        return True
    except (OSError, TypeError, ValueError, AttributeError):
        return False


def _resolve(sock, address):
    """`address` with its host name resolved through the green resolver."""
    if sock.family in (_socket.AF_INET, _socket.AF_INET6) and isinstance(address, tuple):
        host = address[0]
        if isinstance(host, bytes):
            host = host.decode("idna")
        if isinstance(host, str) and host and not _is_numeric_host(host):
            infos = getaddrinfo(host, address[1], sock.family, sock.type, sock.proto)
            if not infos:
                raise _socket.gaierror(_socket.EAI_NONAME, "no address")
            return infos[0][4][:2] + tuple(address[2:])
    return address


class socket(_orig_socket):  # noqa: N801 - the standard library's name
    """The standard library's `socket.socket`, with blocking calls that switch to the
    loop instead of blocking the thread (and `settimeout` applied per call)."""

    __slots__ = ("_gtimeout", "_drained", "_watch")

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None) -> None:  # noqa: A002
        _orig_socket.__init__(self, family, type, proto, fileno)
        self._gtimeout = _socket.getdefaulttimeout()
        self._drained = False
        self._watch = None
        _c_settimeout(self, 0.0)

    # Timeouts live here; the fd stays non-blocking.
    def settimeout(self, timeout) -> None:
        """Sets the timeout of each blocking call (None: wait forever; 0: never wait)."""
        if timeout is not None:
            timeout = float(timeout)
            if timeout < 0:
                raise ValueError("Timeout value out of range")
        self._gtimeout = timeout
        _c_settimeout(self, 0.0)

    def gettimeout(self):
        """The timeout of each blocking call."""
        return self._gtimeout

    def setblocking(self, flag: bool) -> None:
        """`settimeout(None)` if `flag`, else `settimeout(0.0)`."""
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        """Whether calls may wait (the timeout is not 0)."""
        return self._gtimeout != 0.0

    @property
    def timeout(self):
        """The timeout (as `gettimeout()`)."""
        return self._gtimeout

    def _wait(self, write: bool) -> None:
        timeout = self._gtimeout
        if timeout == 0.0:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        if not write:
            cur = getcurrent()
            if type(cur) is _Runner:
                _wait_readable(_local.evloop, cur, self, self.fileno(), timeout)
                return
        _wait_fd(self.fileno(), write, timeout, self)

    def _wait_read(self) -> None:
        """`_wait(False)`, the common case, with one call less."""
        cur = getcurrent()
        timeout = self._gtimeout
        if type(cur) is _Runner and timeout != 0.0:
            _wait_readable(_local.evloop, cur, self, self.fileno(), timeout)
        else:
            self._wait(False)

    # Receiving.
    # A read that got less than it asked for has most likely emptied the socket, so
    # the next read of a task waits for readability first rather than fail with
    # EAGAIN (a system call and an exception saved per message in a ping-pong).
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Receives up to `bufsize` bytes (b"" at end of stream)."""
        if self._drained:
            self._drained = False
            watch = self._watch
            cur = getcurrent()
            # The usual case: a task without a timeout waits on the watcher this
            # socket left (natively; False if that watcher was removed meanwhile).
            if (
                watch is None
                or flags
                or type(cur) is not _Runner
                or self._gtimeout is not None
                or watch.evloop is not _local.evloop
                or not watch.wait(watch.evloop._hub, cur)
            ):
                self._wait_drained(cur, flags)
        while True:
            data = _socket_recv(self.fileno(), bufsize, flags)
            if data is not None:
                break
            self._wait_read()
        if len(data) < bufsize:
            self._drained = True
        return data

    def _wait_drained(self, cur, flags: int) -> None:
        """The wait for readability after a short read, when `recv`'s inline one
        does not apply."""
        if type(cur) is _Runner and not flags:
            timeout = self._gtimeout
            if timeout != 0.0:
                _wait_readable(_local.evloop, cur, self, self.fileno(), timeout)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        """Receives into `buffer`; how many bytes."""
        if self._drained:
            self._drained = False
            cur = getcurrent()
            if type(cur) is _Runner and self._gtimeout != 0.0 and not flags:
                _wait_readable(_local.evloop, cur, self, self.fileno(), self._gtimeout)
        while True:
            try:
                count = _c_recv_into(self, buffer, nbytes, flags)
            except BlockingIOError:
                self._wait_read()
                continue
            if count < (nbytes or len(buffer)):
                self._drained = True
            return count

    def recvfrom(self, bufsize: int, flags: int = 0):
        """Receives a datagram: `(data, address)`."""
        while True:
            try:
                return _C.recvfrom(self, bufsize, flags)
            except BlockingIOError:
                self._wait(False)

    def recvfrom_into(self, buffer, nbytes: int = 0, flags: int = 0):
        """Receives a datagram into `buffer`: `(nbytes, address)`."""
        while True:
            try:
                return _C.recvfrom_into(self, buffer, nbytes, flags)
            except BlockingIOError:
                self._wait(False)

    def recvmsg(self, *args):
        """`socket.recvmsg`, waiting greenly."""
        while True:
            try:
                return _C.recvmsg(self, *args)
            except BlockingIOError:
                self._wait(False)

    # Sending.
    def send(self, data, flags: int = 0) -> int:
        """Sends some of `data`; how many bytes."""
        while True:
            sent = _socket_send(self.fileno(), data, flags)
            if sent is not None:
                return sent
            self._wait(True)

    def sendall(self, data, flags: int = 0) -> None:
        """Sends all of `data` (the timeout bounds each wait)."""
        sent = _socket_send(self.fileno(), data, flags)
        if sent is None:
            sent = 0
        elif sent == len(data):
            return
        with memoryview(data) as view, view.cast("B") as octets:
            total = len(octets)
            while sent < total:
                sent += self.send(octets[sent:], flags)

    def sendto(self, data, *args) -> int:
        """Sends a datagram (`sendto(data[, flags], address)`)."""
        while True:
            try:
                return _C.sendto(self, data, *args)
            except BlockingIOError:
                self._wait(True)

    def sendmsg(self, *args) -> int:
        """`socket.sendmsg`, waiting greenly."""
        while True:
            try:
                return _C.sendmsg(self, *args)
            except BlockingIOError:
                self._wait(True)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        """Sends a file's bytes (through `send`)."""
        return self._sendfile_use_send(file, offset, count)

    # Connections.
    def connect(self, address) -> None:
        """Connects to `address` (host names resolved without blocking)."""
        err = self.connect_ex(address)
        if err:
            raise OSError(err, _os.strerror(err))

    def connect_ex(self, address) -> int:
        """`connect`, returning an errno (0 when connected) instead of raising."""
        address = _resolve(self, address)
        err = _C.connect_ex(self, address)
        if err in (0, errno.EISCONN):
            return 0
        if err not in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            return err
        if self._gtimeout == 0.0:
            return err
        try:
            _wait_fd(self.fileno(), True, self._gtimeout)
        except TimeoutError:
            return errno.ETIMEDOUT
        return self.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)

    def accept(self):
        """Waits for a connection: `(socket, address)`."""
        while True:
            try:
                fd, addr = self._accept()
                break
            except BlockingIOError:
                self._wait(False)
        sock = socket(self.family, self.type, self.proto, fileno=fd)
        return sock, addr

    def _real_close(self, _ss=_C):
        fd = self.fileno()
        if fd >= 0:
            _cancel_waits(fd)
        _ss.close(self)


def socketpair(family=None, type=_socket.SOCK_STREAM, proto=0):  # noqa: A002
    """`socket.socketpair` with green sockets."""
    if family is None:
        family = getattr(_socket, "AF_UNIX", _socket.AF_INET)
    a, b = _socket.socketpair(family, type, proto)
    return (
        socket(family, type, proto, a.detach()),
        socket(family, type, proto, b.detach()),
    )


def create_connection(address, timeout=_stdsocket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
    """`socket.create_connection` with a green socket and green DNS."""
    host, port = address
    error = None
    for family, type_, proto, _, addr in getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = None
        try:
            sock = socket(family, type_, proto)
            if timeout is not _stdsocket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(addr)
            return sock
        except OSError as exc:
            error = exc
            if sock is not None:
                sock.close()
    raise error if error is not None else OSError("getaddrinfo returned nothing")


class SSLSocket(_ssl.SSLSocket, socket):
    """`ssl.SSLSocket` whose connection, handshake, reads and writes switch to the loop
    instead of blocking. It is also a green `socket` (the plain calls before the wrap
    and after `unwrap` are the green socket's). Made by `wrap_socket(context, sock)`,
    `SSLContext.wrap_socket`, or any `ssl.SSLContext` once `patch_ssl()` is in effect."""

    def _ssl_call(self, fn, *args):
        while True:
            try:
                return fn(*args)
            except _ssl.SSLWantReadError:
                self._wait(False)
            except _ssl.SSLWantWriteError:
                self._wait(True)

    def do_handshake(self, block: bool = False) -> None:
        """Runs the TLS handshake."""
        self._check_connected()
        self._ssl_call(self._sslobj.do_handshake)

    def read(self, len: int = 1024, buffer=None):  # noqa: A002
        """Reads up to `len` decrypted bytes (into `buffer` if given)."""
        self._checkClosed()
        if self._sslobj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is not None:
                return self._ssl_call(self._sslobj.read, len, buffer)
            return self._ssl_call(self._sslobj.read, len)
        except _ssl.SSLError as exc:
            if exc.args[0] == _ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise

    def write(self, data) -> int:
        """Encrypts and sends some of `data`; how many bytes."""
        self._checkClosed()
        if self._sslobj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        return self._ssl_call(self._sslobj.write, data)

    def send(self, data, flags: int = 0) -> int:
        """Sends some of `data` through TLS (or plain before the wrap)."""
        self._checkClosed()
        if self._sslobj is None:
            return socket.send(self, data, flags)
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on SSLSocket")
        return self.write(data)

    def unwrap(self):
        """Ends TLS on the connection; returns the plain socket."""
        if not self._sslobj:
            raise ValueError("No SSL wrapper around " + str(self))
        plain = self._ssl_call(self._sslobj.shutdown)
        self._sslobj = None
        return plain

    def accept(self):
        """Waits for a connection and wraps it in server-side TLS."""
        plain, addr = socket.accept(self)
        wrapped = SSLSocket._create(
            sock=plain,
            server_side=True,
            do_handshake_on_connect=self.do_handshake_on_connect,
            suppress_ragged_eofs=self.suppress_ragged_eofs,
            context=self.context,
        )
        return wrapped, addr


class SSLContext(_ssl.SSLContext):
    """`ssl.SSLContext` whose `wrap_socket` makes green `SSLSocket`s."""

    sslsocket_class = SSLSocket


def wrap_socket(context: _ssl.SSLContext, sock, **kwargs) -> SSLSocket:
    """`context.wrap_socket(sock, **kwargs)`, making a green `SSLSocket` whatever
    the context's class."""
    return SSLSocket._create(sock=sock, context=context, **kwargs)


# select and poll.
def select(rlist, wlist, xlist, timeout=None):
    """`select.select` that lets other tasks run while it waits."""
    ready = _orig_select(rlist, wlist, xlist, 0)
    if any(ready) or timeout == 0:
        return ready
    evloop = _loop_for_wait()
    if evloop is None:
        return _orig_select(rlist, wlist, xlist, timeout)
    fds = [(_fileno(obj), False) for obj in rlist] + [(_fileno(obj), True) for obj in wlist]
    _wait_any(evloop, fds, timeout)
    return _orig_select(rlist, wlist, xlist, 0)


def _fileno(obj) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


def _wait_any(evloop, fds, timeout) -> None:
    """Waits until one of `fds` ((fd, write) pairs) is ready or `timeout` passes."""
    loop = evloop.loop
    waiter = _Waiter(getcurrent())
    added = []
    timer = None
    try:
        for fd, write in fds:
            if write:
                loop._add_writer(fd, waiter.wake)
            else:
                loop._add_reader(fd, waiter.wake)
            added.append((fd, write))
        if timeout is not None:
            timer = loop.call_later(max(timeout, 0.0), waiter.wake)
        evloop._wait()
    finally:
        waiter.active = False
        for fd, write in added:
            if write:
                loop._remove_writer(fd)
            else:
                loop._remove_reader(fd)
        if timer is not None:
            timer.cancel()


class poll:  # noqa: N801 - the standard library's name
    """`select.poll()` whose `poll()` lets other tasks run while it waits."""

    def __init__(self) -> None:
        self._poll = _orig_poll()
        self._fds: dict[int, int] = {}

    def register(self, fd, eventmask: int = _select.POLLIN | _select.POLLPRI | _select.POLLOUT):
        """Watches `fd` for `eventmask`."""
        fd = _fileno(fd)
        self._poll.register(fd, eventmask)
        self._fds[fd] = eventmask

    def modify(self, fd, eventmask: int) -> None:
        """Changes what `fd` is watched for."""
        fd = _fileno(fd)
        self._poll.modify(fd, eventmask)
        self._fds[fd] = eventmask

    def unregister(self, fd) -> None:
        """Stops watching `fd`."""
        fd = _fileno(fd)
        self._poll.unregister(fd)
        del self._fds[fd]

    def poll(self, timeout=None):
        """`[(fd, events)]` of the ready fds, waiting up to `timeout` milliseconds
        (None or negative: without limit)."""
        ready = self._poll.poll(0)
        if ready or timeout == 0:
            return ready
        seconds = None if timeout is None or timeout < 0 else timeout / 1000.0
        evloop = _loop_for_wait()
        if evloop is None:
            return self._poll.poll(timeout)
        fds = []
        for fd, mask in self._fds.items():
            if mask & (_select.POLLIN | _select.POLLPRI):
                fds.append((fd, False))
            if mask & _select.POLLOUT:
                fds.append((fd, True))
        _wait_any(evloop, fds, seconds)
        return self._poll.poll(0)


def sleep(seconds: float) -> None:
    """`time.sleep` that lets other tasks run (blocks where no task can wait)."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if _loop_for_wait() is None:
        _orig_sleep(seconds)
    else:
        _hub.sleep(seconds)


# DNS: numeric addresses at once, names in the loop's executor.
def _in_executor(fn, *args):
    evloop = _loop_for_wait()
    if evloop is None:
        return fn(*args)
    return _hub.wait(evloop.loop.run_in_executor(None, fn, *args))


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
    """`socket.getaddrinfo` without blocking other tasks."""
    try:
        infos = _orig_getaddrinfo(
            host,
            port,
            family,
            type,
            proto,
            flags | _socket.AI_NUMERICHOST | _socket.AI_NUMERICSERV,
        )
    except (_socket.gaierror, UnicodeError, TypeError):
        infos = _in_executor(_orig_getaddrinfo, host, port, family, type, proto, flags)
    return [
        (_as_enum(f, _stdsocket.AddressFamily), _as_enum(t, _stdsocket.SocketKind), p, c, a)
        for f, t, p, c, a in infos
    ]


def _as_enum(value, enum_class):
    try:
        return enum_class(value)
    except ValueError:
        return value


def gethostbyname(hostname: str) -> str:
    """`socket.gethostbyname` without blocking other tasks."""
    try:
        _socket.inet_aton(hostname)
        return hostname
    except (OSError, TypeError):
        pass
    return _in_executor(_orig_gethostbyname, hostname)


def gethostbyname_ex(hostname: str):
    """`socket.gethostbyname_ex` without blocking other tasks."""
    return _in_executor(_orig_gethostbyname_ex, hostname)


def gethostbyaddr(ip_address: str):
    """`socket.gethostbyaddr` without blocking other tasks."""
    return _in_executor(_orig_gethostbyaddr, ip_address)


def getnameinfo(sockaddr, flags: int):
    """`socket.getnameinfo` without blocking other tasks (numeric at once)."""
    if flags & _socket.NI_NUMERICHOST and flags & _socket.NI_NUMERICSERV:
        return _orig_getnameinfo(sockaddr, flags)
    return _in_executor(_orig_getnameinfo, sockaddr, flags)


def _fqdn(name: str) -> str:
    name = name.strip()
    if not name or name in ("0.0.0.0", "::"):
        name = _socket.gethostname()
    try:
        hostname, aliases, _ = _orig_gethostbyaddr(name)
    except OSError:
        return name
    for candidate in [hostname, *aliases]:
        if "." in candidate:
            return candidate
    return hostname


def getfqdn(name: str = "") -> str:
    """`socket.getfqdn` without blocking other tasks."""
    return _in_executor(_fqdn, name)


# Pipes and subprocesses.
def pipe() -> tuple[int, int]:
    """`os.pipe()` with both ends non-blocking (for `read`/`write` here)."""
    r, w = _os.pipe()
    _os.set_blocking(r, False)
    _os.set_blocking(w, False)
    return r, w


def _when_ready(fd: int, writing: bool, op, arg):
    """`op(fd, arg)` once `fd` is ready: waited for first on a blocking fd (the call
    must not block the loop), after each `BlockingIOError` on a non-blocking one."""
    if _os.get_blocking(fd):
        _wait_fd(fd, writing, None)
        return op(fd, arg)
    while True:
        try:
            return op(fd, arg)
        except BlockingIOError:
            _wait_fd(fd, writing, None)


def read(fd: int, n: int) -> bytes:
    """`os.read` that waits greenly until `fd` is readable."""
    return _when_ready(fd, False, _orig_os_read, n)


def write(fd: int, data) -> int:
    """`os.write` that waits greenly until `fd` is writable."""
    return _when_ready(fd, True, _orig_os_write, data)


_PIPE_BUF = getattr(_select, "PIPE_BUF", 512)


def _waits_green(fd: int) -> bool:
    """Whether the patched `os.read`/`os.write` should wait greenly on `fd`: the
    caller is a green task (or a main greenlet whose thread has a green loop), and
    `fd` is a blocking pipe or socket. Regular files never wait; a non-blocking fd
    keeps `BlockingIOError`, which its owner expects."""
    if _green_loop() is None:
        return False
    try:
        mode = _os.fstat(fd).st_mode
        if not (_stat.S_ISFIFO(mode) or _stat.S_ISSOCK(mode)):
            return False
        return _os.get_blocking(fd)
    except OSError:
        return False  # let the original report the bad fd


def patched_os_read(fd: int, n: int) -> bytes:
    """`os.read` for `patch_os`: on a blocking pipe or socket in a green task, waits
    greenly until `fd` is readable, then reads (what the original returns)."""
    if _waits_green(fd):
        _wait_fd(fd, False, None)
    return _orig_os_read(fd, n)


def patched_os_write(fd: int, data) -> int:
    """`os.write` for `patch_os`: on a blocking pipe or socket in a green task, writes
    all of `data` (as a blocking write does) in pieces of `PIPE_BUF` bytes, each after
    a green wait until `fd` is writable, so no piece blocks the thread."""
    if not _waits_green(fd):
        return _orig_os_write(fd, data)
    view = memoryview(data).cast("B")
    if not view:
        return _orig_os_write(fd, data)
    total = 0
    while total < len(view):
        _wait_fd(fd, True, None)
        total += _orig_os_write(fd, view[total : total + _PIPE_BUF])
    return total


class _GreenPipe(io.RawIOBase):
    """One end of a subprocess pipe, read or written greenly."""

    def __init__(self, fd: int, writing: bool) -> None:
        super().__init__()
        self._fd = fd
        self._writing = writing
        _os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def readable(self) -> bool:
        return not self._writing

    def writable(self) -> bool:
        return self._writing

    def readinto(self, buffer) -> int:
        data = read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data) -> int:
        return write(self._fd, data)

    def close(self) -> None:
        if not self.closed:
            super().close()
            _os.close(self._fd)


class Popen(_subprocess.Popen):
    """`subprocess.Popen` whose pipes, `wait()` and `communicate()` let other tasks
    run (the child's exit is watched through a pidfd)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, writing in (("stdin", True), ("stdout", False), ("stderr", False)):
            stream = getattr(self, name)
            if stream is None:
                continue
            text = isinstance(stream, io.TextIOWrapper)
            encoding = stream.encoding if text else None
            errors = stream.errors if text else None
            raw = _GreenPipe(_os.dup(stream.fileno()), writing)
            stream.close()
            buffered = io.BufferedWriter(raw) if writing else io.BufferedReader(raw)
            if text:
                buffered = io.TextIOWrapper(
                    buffered, encoding=encoding, errors=errors, write_through=writing
                )
            setattr(self, name, buffered)

    def wait(self, timeout: float | None = None) -> int:
        """Waits for the child to exit; its return code."""
        if self.returncode is not None:
            return self.returncode
        try:
            pidfd = _os.pidfd_open(self.pid)
        except OSError:
            return super().wait(timeout)
        try:
            try:
                _wait_fd(pidfd, False, timeout)
            except TimeoutError:
                raise _subprocess.TimeoutExpired(self.args, timeout) from None
        finally:
            _os.close(pidfd)
        return super().wait()

    def communicate(self, input=None, timeout: float | None = None):  # noqa: A002
        """Writes `input`, reads stdout and stderr to their end, waits for the exit."""
        tasks = []
        results = {}

        def feed():
            try:
                if input:
                    self.stdin.write(input)
                    self.stdin.flush()
            except BrokenPipeError:
                pass
            finally:
                self.stdin.close()

        def drain(name):
            stream = getattr(self, name)
            results[name] = stream.read()
            stream.close()

        if self.stdin is not None:
            tasks.append(_hub.spawn(feed))
        for name in ("stdout", "stderr"):
            if getattr(self, name) is not None:
                tasks.append(_hub.spawn(drain, name))
        deadline = None if timeout is None else _time.monotonic() + timeout
        for task in tasks:
            remaining = None if deadline is None else max(0.0, deadline - _time.monotonic())
            if not task.join(remaining):
                raise _subprocess.TimeoutExpired(self.args, timeout)
            task.result()
        self.wait(None if deadline is None else max(0.0, deadline - _time.monotonic()))
        return results.get("stdout"), results.get("stderr")


class TaskingMixIn:
    """A `socketserver` mix-in that handles each request in its own green task
    (as `ThreadingMixIn` does in a thread)."""

    def process_request(self, request, client_address) -> None:
        """Handles the request in a new green task."""
        _hub.spawn(self._process_request_in_task, request, client_address)

    def _process_request_in_task(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
