"""Handlers and timeouts: the "My Event Loop" model, on the thread's oxloop loop.

```python
from oxloop.handlers import EventLoop, TCPListener, TCPServerEventLoop, TCPServerHandler

class Echo(TCPServerHandler):
    def recv_callback(self, data):
        self.send(data)

TCPServerEventLoop(("127.0.0.1", 6666), TCPListener, Echo).loop()
```

A `Handler` wraps one fd: `read_callback()` runs when it is readable, and
`write_callback()` when it is writable, as `is_readable()`/`is_writable()` ask. A
`Timeout` runs a callback once after some seconds; one created by `handler.timeout()`
belongs to the handler and is cancelled when the handler is destroyed. `EventLoop().loop()`
runs until no handler and no pending timeout is left. `Log` writes to the terminal, a
rotating file and e-mail (oxloop-log's outputs, through the extension). TCP servers and
clients and UDP endpoints come ready-made.

Everything runs on the thread's asyncio loop: an `oxloop.Loop` made for the thread, or
the loop already running in it, so handlers also work inside `oxloop.run(main())`
next to ordinary asyncio code (`await EventLoop().run()` waits for them there).

Where this differs from the original package, and why:

- State belongs to the thread's loop, not to class attributes: handlers and timeouts
  created in a thread join that thread's loop, and two threads run two independent
  loops.
- Every ready handler is served in one iteration (the original served one event per
  `select` call), and timeouts run on time even while fds are busy (the original ran
  them only when no fd was ready).
- Timeouts use the loop's monotonic clock (the original used the wall clock, so a clock
  change moved every timeout).
- `is_readable()`/`is_writable()` are asked again after each iteration in which a
  handler or timeout callback ran (or `send`/`sendto` queued data, or `EventLoop.update()`
  was called), instead of before every `select`: state changed by other asyncio code
  needs `update()`.
- An exception from a handler's callback goes to the loop's exception handler and
  destroys that handler (the original let it end the program); one from a timeout's
  callback is reported and the loop goes on. A handler whose fd was closed under it is
  reported the same way, and `exceptional_callback()` (default: `destroy()`) runs, so
  the loop neither spins nor waits forever on it (a socket's `fileno()` says it is
  closed; an int fd is checked with `fstat`). `is_exceptional()` does not exist:
  epoll has no "exceptional" set in the sense of `select`.
- `TCPClientHandler` keeps its socket non-blocking after connecting (the original made
  it blocking) and destroys itself after `connection_callback(False)`.
- `Log.set_mail` speaks SMTP to a server (batched, at most one mail per interval, sent
  by the loop without blocking it) instead of piping each message to `sendmail`; on a
  clean end `EventLoop.loop()` sends what is still waiting before it returns.
- The thread-to-loop `Queue` and the `StateMachine` of the original are not provided:
  `loop.call_soon_threadsafe` and plain Python cover them.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import errno
import os
import socket
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from . import _oxloop
from ._loop import Loop

__all__ = [
    "EventLoop",
    "Handler",
    "Log",
    "TCPClientHandler",
    "TCPListener",
    "TCPServerEventLoop",
    "TCPServerHandler",
    "Timeout",
    "UDPServerHandler",
]

_local = threading.local()

#: Most bytes read from a stream socket at once, and datagrams read per wake-up.
_READ_SIZE = 65536
_READS_PER_WAKEUP = 64


class _LoopState:
    """What belongs to one thread's loop: its handlers, pending timeouts and log."""

    def __init__(self, loop: asyncio.AbstractEventLoop, owned: bool) -> None:
        self.loop = loop
        self.owned = owned  # made here (closed by EventLoop.close), not the running loop
        self.handlers: dict[int, Handler] = {}
        self.timeouts: set[Timeout] = set()
        self.log = _LogState(self)
        self.update_scheduled = False
        self.idle: asyncio.Future[None] | None = None
        self.stopping = False

    def changed(self) -> None:
        """Something may have changed: after this iteration, ask the handlers again
        what they wait for, and see whether anything is left."""
        if not self.update_scheduled and not self.loop.is_closed():
            self.update_scheduled = True
            self.loop.call_soon(self.update)

    def update(self) -> None:
        self.update_scheduled = False
        for handler in list(self.handlers.values()):
            handler._update_interest()
        if self.idle is not None and not self.idle.done() and self.empty():
            self.idle.set_result(None)

    def empty(self) -> bool:
        return not self.handlers and not self.timeouts

    def report(self, message: str, exc: BaseException | None = None, **context: Any) -> None:
        """Reports through the loop's exception handler (and the log at ERROR)."""
        ctx: dict[str, Any] = {"message": message, **context}
        if exc is not None:
            ctx["exception"] = exc
        self.log.emit(Log.ERROR, f"{message}: {exc!r}" if exc is not None else message)
        self.loop.call_exception_handler(ctx)


def _state() -> _LoopState:
    """The calling thread's state: on the loop running in this thread if there is
    one, else on an `oxloop.Loop` made for the thread."""
    state: _LoopState | None = getattr(_local, "state", None)
    running = asyncio._get_running_loop()
    if state is not None and not state.loop.is_closed():
        if running is None or running is state.loop:
            return state
    if running is not None:
        state = _LoopState(running, owned=False)
    else:
        state = _LoopState(Loop(), owned=True)
    _local.state = state
    return state


class EventLoop:
    """The thread's handler loop. `loop()` runs it until no handler and no pending
    timeout is left; `await run()` does the same inside running asyncio code."""

    def __init__(self) -> None:
        self._state = _state()

    @property
    def asyncio_loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop (an `oxloop.Loop` unless another one was running)."""
        return self._state.loop

    @property
    def handlers(self) -> list[Handler]:
        """The live handlers of this loop."""
        return list(self._state.handlers.values())

    def loop(self) -> None:
        """Runs until no handler and no pending timeout is left, then sends the log's
        waiting e-mail (up to its timeout)."""
        loop = self._state.loop
        if loop.is_running():
            raise RuntimeError("the loop is already running: use `await EventLoop().run()`")
        loop.run_until_complete(self.run())

    async def run(self) -> None:
        """Waits until no handler and no pending timeout is left (as `loop()`)."""
        state = self._state
        state.stopping = False
        while not state.empty() and not state.stopping:
            state.idle = state.loop.create_future()
            state.changed()
            try:
                await state.idle
            finally:
                state.idle = None
        if not state.stopping:
            await state.log.drain_mail()

    def update(self) -> None:
        """Asks every handler's `is_readable()`/`is_writable()` again after this
        iteration (for state changed outside the handlers' own callbacks)."""
        self._state.changed()

    def stop(self) -> None:
        """Makes `loop()`/`run()` return at the end of this iteration, leaving the
        handlers and timeouts as they are."""
        self._state.stopping = True
        idle = self._state.idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    def close(self) -> None:
        """Destroys every handler, cancels every timeout, closes the log and, if it
        was made for this thread, the loop."""
        state = self._state
        for handler in list(state.handlers.values()):
            handler.destroy()
        for timeout in list(state.timeouts):
            timeout.cancel()
        state.log.close()
        if state.owned and not state.loop.is_running():
            state.loop.close()
        if getattr(_local, "state", None) is state:
            _local.state = None


# ----------------------------------------------------------------------- handlers


def _fileno_of(fd: Any) -> int:
    if isinstance(fd, int) and not isinstance(fd, bool):
        return fd
    fileno = getattr(fd, "fileno", None)
    if fileno is None:
        raise TypeError(f"a Handler wraps an fd or an object with fileno(), not {fd!r}")
    return int(fileno())


class Handler:
    """One fd and what to do when it is ready. Subclasses implement `read_callback()`
    and may implement `write_callback()`, `is_readable()` (default True),
    `is_writable()` (default False), `exceptional_callback()` (default `destroy()`) and
    `destroyed_callback()`.

    `fd` is an int or an object with `fileno()` (a socket); `destroy()` closes it.
    An fd can have one handler at a time.
    """

    def __init__(self, label: str, fd: Any) -> None:
        self.label = label
        self.fd = fd
        self._state = _state()
        self._fileno = _fileno_of(fd)
        if self._fileno < 0:
            raise ValueError(f"handler {label!r}: its fd is closed")
        other = self._state.handlers.get(self._fileno)
        if other is not None:
            raise ValueError(
                f"fd {self._fileno} already has a handler ({other.label!r}); destroy it first"
            )
        self._state.handlers[self._fileno] = self
        self._timeouts: set[Timeout] = set()
        self._reading = False
        self._writing = False
        self._destroyed = False
        self._fd_gone = False
        self._state.changed()

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else f"fd={self._fileno}"
        return f"<{type(self).__name__} {self.label!r} {state}>"

    # What subclasses implement.
    def read_callback(self) -> None:
        """The fd is readable."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_callback()")

    def write_callback(self) -> None:
        """The fd is writable (only asked for while `is_writable()` is true)."""

    def exceptional_callback(self) -> None:
        """The fd failed (closed under the handler); the default destroys the handler."""
        self.destroy()

    def destroyed_callback(self) -> None:
        """Called by `destroy()`, before the fd is closed."""

    def is_readable(self) -> bool:
        """Whether to wait for the fd to be readable (asked after each iteration in
        which something ran)."""
        return True

    def is_writable(self) -> bool:
        """Whether to wait for the fd to be writable."""
        return False

    # Services.
    def alive(self) -> bool:
        """Whether the handler is not destroyed yet."""
        return not self._destroyed

    def timeout(self, label: str, seconds: float, callback: Callable[[Timeout], Any]) -> Timeout:
        """A timeout owned by this handler: cancelled when the handler is destroyed."""
        if self._destroyed:
            raise RuntimeError(f"handler {self.label!r} is destroyed")
        return Timeout(label, seconds, callback, owner=self)

    def destroy(self) -> None:
        """Stops watching the fd, calls `destroyed_callback()`, cancels the handler's
        timeouts and closes the fd. Later calls do nothing."""
        if self._destroyed:
            return
        self._destroyed = True
        state = self._state
        self._unwatch()
        if state.handlers.get(self._fileno) is self:
            del state.handlers[self._fileno]
        try:
            self.destroyed_callback()
        except Exception as exc:
            state.report(f"handler {self.label!r}: destroyed_callback() failed", exc, handler=self)
        for timeout in list(self._timeouts):
            timeout.cancel()
        self._close_fd()
        state.changed()

    def log_error(self, message: str) -> None:
        """Logs `label: message` at ERROR."""
        Log.error(f"{self.label}: {message}")

    def log_warn(self, message: str) -> None:
        """Logs `label: message` at WARN."""
        Log.warn(f"{self.label}: {message}")

    def log_info(self, message: str) -> None:
        """Logs `label: message` at INFO."""
        Log.info(f"{self.label}: {message}")

    def log_debug(self, message: str) -> None:
        """Logs `label: message` at DEBUG."""
        Log.debug(f"{self.label}: {message}")

    def log_debug2(self, message: str) -> None:
        """Logs `label: message` at DEBUG2."""
        Log.debug2(f"{self.label}: {message}")

    # The machinery.
    def _close_fd(self) -> None:
        fd = self.fd
        if fd is None or self._fd_gone:
            return
        if isinstance(fd, int):
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
        elif hasattr(fd, "close"):
            fd.close()

    def _unwatch(self) -> None:
        loop = self._state.loop
        if loop.is_closed():
            return
        if self._reading:
            loop.remove_reader(self._fileno)
        if self._writing:
            loop.remove_writer(self._fileno)
        self._reading = self._writing = False

    def _current_fileno(self) -> int:
        """The fd now: -1 once closed (a socket says so; an int fd is asked)."""
        try:
            fileno = _fileno_of(self.fd)
            if isinstance(self.fd, int):
                os.fstat(fileno)
            return fileno
        except (OSError, ValueError):
            return -1

    def _update_interest(self) -> None:
        if self._destroyed:
            return
        if self._current_fileno() != self._fileno:
            self._fd_lost("its fd was closed under it")
            return
        try:
            want_read = bool(self.is_readable())
            want_write = bool(self.is_writable())
        except Exception as exc:
            self._failed("is_readable()/is_writable()", exc)
            return
        loop = self._state.loop
        try:
            if want_read != self._reading:
                if want_read:
                    loop.add_reader(self._fileno, self._on_readable)
                else:
                    loop.remove_reader(self._fileno)
                self._reading = want_read
            if want_write != self._writing:
                if want_write:
                    loop.add_writer(self._fileno, self._on_writable)
                else:
                    loop.remove_writer(self._fileno)
                self._writing = want_write
        except OSError as exc:
            self._fd_lost(f"its fd cannot be watched ({exc})", gone=exc.errno == errno.EBADF)

    def _fd_lost(self, why: str, gone: bool = True) -> None:
        state = self._state
        # Closed already: its number may belong to another file by now, never close it.
        self._fd_gone = gone
        self._unwatch_quietly()
        state.report(f"handler {self.label!r} (fd {self._fileno}): {why}", handler=self)
        try:
            self.exceptional_callback()
        except Exception as exc:
            self._failed("exceptional_callback()", exc)
        if not self._destroyed:
            # Left alive it would be watched again: a handler without its fd is over.
            self.destroy()

    def _unwatch_quietly(self) -> None:
        try:
            self._unwatch()
        except OSError:
            self._reading = self._writing = False

    def _failed(self, what: str, exc: BaseException) -> None:
        self._state.report(f"handler {self.label!r}: {what} failed", exc, handler=self)
        self._unwatch_quietly()
        self.destroy()

    def _on_readable(self) -> None:
        if not self._destroyed:
            try:
                self.read_callback()
            except Exception as exc:
                self._failed("read_callback()", exc)
        self._state.changed()

    def _on_writable(self) -> None:
        if not self._destroyed:
            try:
                self.write_callback()
            except Exception as exc:
                self._failed("write_callback()", exc)
        self._state.changed()


# ----------------------------------------------------------------------- timeouts


class Timeout:
    """A callback run once, `seconds` after it is armed (on the loop's monotonic
    clock); the callback receives the timeout, and may re-arm it with `restart()` or
    `reset()`. Make one with `handler.timeout(label, seconds, callback)` (owned by the
    handler) or `Timeout.new(label, seconds, callback)`."""

    def __init__(
        self,
        label: str,
        seconds: float,
        callback: Callable[[Timeout], Any],
        owner: Handler | None = None,
    ) -> None:
        if not callable(callback):
            raise TypeError(f"timeout {label!r}: the callback {callback!r} is not callable")
        self.label = label
        self.callback = callback
        self.owner = owner
        self._state = owner._state if owner is not None else _state()
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.seconds = _check_seconds(label, seconds)
        self.restart()

    @classmethod
    def new(cls, label: str, seconds: float, callback: Callable[[Timeout], Any]) -> Timeout:
        """A timeout of the thread's loop that no handler owns."""
        return cls(label, seconds, callback)

    def __repr__(self) -> str:
        state = f"in {self.remaining():.3f} s" if self.alive() else "not pending"
        return f"<Timeout {self.label!r} {state}>"

    def alive(self) -> bool:
        """Whether it is armed and has not run yet."""
        return self._handle is not None

    def remaining(self) -> float:
        """Seconds until it runs (0 when not pending)."""
        if self._handle is None:
            return 0.0
        return max(0.0, self._deadline - self._state.loop.time())

    def cancel(self) -> bool:
        """Disarms it; whether it was pending. It may be re-armed later."""
        if self._handle is None:
            return False
        self._handle.cancel()
        self._forget()
        return True

    def restart(self) -> None:
        """Arms it again for its `seconds` from now (whether pending or not)."""
        if self.owner is not None and not self.owner.alive():
            raise RuntimeError(
                f"timeout {self.label!r}: its handler {self.owner.label!r} is destroyed"
            )
        loop = self._state.loop
        if self._handle is not None:
            self._handle.cancel()
        self._deadline = loop.time() + self.seconds
        self._handle = loop.call_at(self._deadline, self._fire)
        self._state.timeouts.add(self)
        if self.owner is not None:
            self.owner._timeouts.add(self)

    def reset(self, seconds: float) -> None:
        """Arms it for `seconds` from now (and keeps that as its `seconds`)."""
        self.seconds = _check_seconds(self.label, seconds)
        self.restart()

    def _forget(self) -> None:
        self._handle = None
        self._state.timeouts.discard(self)
        if self.owner is not None:
            self.owner._timeouts.discard(self)
        self._state.changed()

    def _fire(self) -> None:
        self._forget()
        try:
            self.callback(self)
        except Exception as exc:
            self._state.report(f"timeout {self.label!r}: its callback failed", exc, timeout=self)


def _check_seconds(label: str, seconds: float) -> float:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise TypeError(f"timeout {label!r}: seconds must be a number, not {seconds!r}") from None
    if not value >= 0:
        raise ValueError(f"timeout {label!r}: seconds must be >= 0, not {seconds!r}")
    return value


# ----------------------------------------------------------------------- TCP


class _Stream(Handler):
    """A connected TCP socket: reads into `recv_callback`, buffered `send`."""

    def __init__(self, label: str, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._send_buffer = bytearray()
        super().__init__(label, sock)

    def recv_callback(self, data: bytes) -> None:
        """Data arrived."""
        raise NotImplementedError(f"{type(self).__name__} must implement recv_callback()")

    def shutdown_callback(self) -> None:
        """The peer closed the connection (or reset it); the default destroys the
        handler."""
        self.destroy()

    def send(self, data: bytes) -> None:
        """Sends `data` without blocking: what the socket does not take now is kept
        and written when it is writable."""
        if self._destroyed:
            raise RuntimeError(f"send() on handler {self.label!r}, which is destroyed")
        if not self._send_buffer and self._can_send():
            try:
                sent = self.fd.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except ConnectionError as exc:
                self.log_debug(f"send failed: {exc}")
                self.shutdown_callback()
                return
            data = memoryview(data)[sent:]
        if data:
            self._send_buffer += data
            self._state.changed()

    def pending_bytes(self) -> int:
        """Bytes given to `send()` and not written yet."""
        return len(self._send_buffer)

    def _can_send(self) -> bool:
        return True

    def is_readable(self) -> bool:
        return True

    def is_writable(self) -> bool:
        return bool(self._send_buffer)

    def read_callback(self) -> None:
        try:
            data = self.fd.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError as exc:
            self.log_debug(f"receive failed: {exc}")
            data = b""
        if data:
            self.recv_callback(data)
        else:
            self.shutdown_callback()

    def write_callback(self) -> None:
        if not self._send_buffer:
            return
        try:
            sent = self.fd.send(self._send_buffer)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError as exc:
            self.log_debug(f"send failed: {exc}")
            self.shutdown_callback()
            return
        del self._send_buffer[:sent]


class TCPServerHandler(_Stream):
    """An accepted TCP connection: implement `recv_callback(data)`; `send(data)`;
    `shutdown_callback()` on EOF (default: destroy)."""

    def __init__(self, addr: Any, sock: socket.socket) -> None:
        self.addr = addr
        super().__init__(f"{type(self).__name__}({_addr_str(addr)})", sock)


class TCPListener(Handler):
    """A listening TCP socket on `addr` that makes a `handler_class(addr, sock)` for
    each accepted connection. `address` is where it listens (port 0 picks one)."""

    def __init__(self, addr: Any, handler_class: type[TCPServerHandler], backlog: int = 128):
        host, port = addr[0], addr[1]
        family = socket.AF_INET6 if ":" in str(host) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.handler_class = handler_class
        self.address = sock.getsockname()
        super().__init__(f"{type(self).__name__}({_addr_str(self.address)})", sock)

    def read_callback(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                conn, addr = self.fd.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds, a connection aborted before accept
                self.log_warn(f"accept failed: {exc}")
                return
            try:
                self.handler_class(addr, conn)
            except Exception as exc:  # that connection is lost; the listener goes on
                conn.close()
                self._state.report(
                    f"listener {self.label!r}: {self.handler_class.__name__}() failed",
                    exc,
                    handler=self,
                )


class TCPServerEventLoop(EventLoop):
    """An `EventLoop` with a `listener_class(addr, handler_class)` already listening
    (`self.listener`)."""

    def __init__(
        self,
        addr: Any,
        listener_class: type[TCPListener] = TCPListener,
        handler_class: type[TCPServerHandler] = TCPServerHandler,
    ) -> None:
        super().__init__()
        self.listener = listener_class(addr, handler_class)


class TCPClientHandler(_Stream):
    """An outgoing TCP connection to `addr`, connected without blocking: implement
    `connection_callback(ok)` and `recv_callback(data)`. After a failed connection the
    handler destroys itself (make a new one to retry)."""

    def __init__(self, addr: Any, label: str | None = None) -> None:
        self.addr = addr
        self.connected = False
        host = addr[0]
        family = socket.AF_INET6 if ":" in str(host) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        super().__init__(label or f"{type(self).__name__}({_addr_str(addr)})", sock)
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._state.loop.call_soon(self._connected, err)

    def connection_callback(self, ok: bool) -> None:
        """The connection was made (`ok`) or failed."""

    def _can_send(self) -> bool:
        return self.connected

    def is_readable(self) -> bool:
        return self.connected

    def is_writable(self) -> bool:
        return not self.connected or bool(self._send_buffer)

    def write_callback(self) -> None:
        if self.connected:
            super().write_callback()
            return
        self._connected(self.fd.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def _connected(self, err: int) -> None:
        if self._destroyed or self.connected:
            return
        if err:
            self.log_debug(f"cannot connect: {os.strerror(err)}")
            try:
                self.connection_callback(False)
            finally:
                self.destroy()
            return
        self.connected = True
        self.connection_callback(True)
        self._state.changed()


# ----------------------------------------------------------------------- UDP


class UDPServerHandler(Handler):
    """A UDP socket bound to `addr` (or, with `addr=None`, to a free port on first
    use, for a client): implement `recv_callback(addr, datagram)`; `sendto(addr,
    datagram)` never blocks (what the socket cannot take now is queued)."""

    def __init__(self, addr: Any = None, label: str | None = None, family: int = 0) -> None:
        if not family:
            host = addr[0] if addr else ""
            family = socket.AF_INET6 if ":" in str(host) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if addr is not None:
                sock.bind(addr)
        except BaseException:
            sock.close()
            raise
        self.addr = addr
        self._address = sock.getsockname()
        self._queue: collections.deque[tuple[Any, bytes]] = collections.deque()
        super().__init__(label or f"{type(self).__name__}({_addr_str(addr)})", sock)

    @property
    def address(self) -> Any:
        """The local address of the socket (the last one known, once destroyed)."""
        if self.fd.fileno() >= 0:
            self._address = self.fd.getsockname()
        return self._address

    def recv_callback(self, addr: Any, datagram: bytes) -> None:
        """A datagram arrived from `addr`."""
        raise NotImplementedError(f"{type(self).__name__} must implement recv_callback()")

    def sendto(self, addr: Any, datagram: bytes) -> None:
        """Sends `datagram` to `addr` (queued if the socket's buffer is full)."""
        if self._destroyed:
            raise RuntimeError(f"sendto() on handler {self.label!r}, which is destroyed")
        if not self._queue:
            try:
                self.fd.sendto(datagram, addr)
                return
            except (BlockingIOError, InterruptedError):
                pass
        self._queue.append((addr, bytes(datagram)))
        self._state.changed()

    def is_writable(self) -> bool:
        return bool(self._queue)

    def read_callback(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            if self._destroyed:
                return
            try:
                datagram, addr = self.fd.recvfrom(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                # An ICMP "port unreachable" for an earlier sendto: nothing to read.
                continue
            self.recv_callback(addr, datagram)

    def write_callback(self) -> None:
        while self._queue:
            addr, datagram = self._queue[0]
            try:
                self.fd.sendto(datagram, addr)
            except (BlockingIOError, InterruptedError):
                return
            self._queue.popleft()


def _addr_str(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


# ----------------------------------------------------------------------- Log


class _LogState:
    """One loop's log: its level, outputs and the native sink that writes them."""

    def __init__(self, state: _LoopState) -> None:
        self.loop_state = weakref.ref(state)
        self.level = Log.INFO
        self.terminal = True
        self.file: dict[str, Any] | None = None
        self.mail: dict[str, Any] | None = None
        self.mail_level = Log.ERROR
        self.sink: Any = None
        self._exit_hook = False

    def change(self, **settings: Any) -> None:
        """Applies new settings; if the outputs cannot be made, keeps the old ones."""
        old = {name: getattr(self, name) for name in settings}
        for name, value in settings.items():
            setattr(self, name, value)
        try:
            self.configure()
        except BaseException:
            for name, value in old.items():
                setattr(self, name, value)
            self.configure()
            raise

    def configure(self) -> None:
        """Makes the sink again for the new settings (the old one is flushed)."""
        self.close()
        state = self.loop_state()
        if state is None or not (self.terminal or self.file or self.mail):
            return
        if not isinstance(state.loop, _oxloop.LoopCore):
            if self.file or self.mail:
                raise RuntimeError(
                    "the log's file and e-mail outputs need an oxloop loop; "
                    f"this thread runs {type(state.loop).__name__}"
                )
            return
        kwargs: dict[str, Any] = {
            "terminal": self.terminal,
            "level_filter": _LEVEL_DIRECTIVES[self.level],
        }
        if self.file:
            kwargs.update(self.file)
        if self.mail:
            kwargs.update(self.mail)
        self.sink = _oxloop.LogSink(state.loop, **kwargs)
        if not self._exit_hook:
            # Flush the background writers when the program ends.
            atexit.register(_close_log, weakref.ref(self))
            self._exit_hook = True

    def emit(self, level: int, message: str) -> None:
        limit = max(self.level, self.mail_level) if self.mail else self.level
        if level > limit:
            return
        if self.sink is None:
            self.configure()
            if self.sink is None:
                if self.terminal:  # not on an oxloop loop: no native outputs
                    print(f"{_LEVEL_DIRECTIVES[level].upper()} {message}", file=sys.stderr)
                return
        self.sink.emit(level, message)

    def close(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.close()

    async def drain_mail(self) -> None:
        state = self.loop_state()
        sink = self.sink
        if state is None or sink is None or not self.mail or not sink.mail_pending():
            return
        sink.send_mail_now()
        deadline = state.loop.time() + self.mail.get("mail_timeout", 30.0)
        while sink.mail_pending() and state.loop.time() < deadline and not state.stopping:
            await asyncio.sleep(0.02)


def _close_log(ref: weakref.ref[_LogState]) -> None:
    log = ref()
    if log is not None:
        log.close()


_LEVEL_DIRECTIVES = ["error", "warn", "info", "debug", "trace"]


class Log:
    """The thread's log: terminal (stderr, on by default), a rotating file and
    e-mail. Class methods act on the log of the calling thread's loop.

    Levels, most severe first: `ERROR`, `WARN`, `INFO` (default), `DEBUG`, `DEBUG2`.
    """

    ERROR = 0
    WARN = 1
    INFO = 2
    DEBUG = 3
    DEBUG2 = 4

    @staticmethod
    def _log() -> _LogState:
        return _state().log

    @classmethod
    def set_level(cls, level: int) -> None:
        """Logs messages at `level` and more severe to the terminal and the file."""
        cls._log().change(level=_check_level(level))

    @classmethod
    def set_terminal(cls, on: bool) -> None:
        """Turns the terminal output (stderr) on or off (off for a daemon)."""
        cls._log().change(terminal=bool(on))

    @classmethod
    def set_file(
        cls,
        path: str | os.PathLike[str] | None,
        rotation: str = "daily",
        max_bytes: int = 0,
        max_files: int | None = None,
    ) -> None:
        """Writes to a file: `path` `dir/name.log` gives `dir/name.YYYY-MM-DD.log`
        (`rotation="daily"`, or `"hourly"`), `dir/name.log` (`"never"`), or
        `dir/name.log` renamed `dir/name.N.log` when it would pass `max_bytes`
        (`"size"`); `max_files` keeps only the newest. `None` stops the file output."""
        if path is None:
            file = None
        else:
            if rotation == "size" and max_bytes <= 0:
                raise ValueError('rotation="size" needs max_bytes > 0')
            directory, name = os.path.split(os.fspath(path))
            prefix = name[:-4] if name.endswith(".log") else name
            if not prefix:
                raise ValueError(f"log file {path!r} has no name")
            file = {
                "file_dir": directory or ".",
                "file_prefix": prefix,
                "rotation": rotation,
                "max_bytes": max_bytes,
                "max_files": max_files,
            }
        cls._log().change(file=file)

    @classmethod
    def set_mail(
        cls,
        level: int,
        from_addr: str | None,
        to_addrs: str | list[str] = (),
        server: str = "localhost",
        port: int = 25,
        *,
        subject: str | None = None,
        interval: float = 60.0,
        gather: float = 1.0,
        timeout: float = 30.0,
        tls: str | None = None,
        ca_pem: bytes | None = None,
        credentials: tuple[str, str] | None = None,
        allow_insecure_auth: bool = False,
    ) -> None:
        """Mails messages at `level` and more severe from `from_addr` to `to_addrs`
        through the SMTP server `server:port`: batched (`gather` seconds after the
        first), at most one mail per `interval` seconds, sent by the loop without
        blocking it. `tls` is `"starttls"` or `"implicit"` (verified against `ca_pem`,
        or the Mozilla roots); `credentials` is `(user, password)`. `from_addr=None`
        stops mailing."""
        log = cls._log()
        mail_level = log.mail_level
        if from_addr is None:
            mail = None
        else:
            if isinstance(to_addrs, str):
                to_addrs = [to_addrs]
            mail_level = _check_level(level)
            mail = {
                "mail_server": server,
                "mail_port": port,
                "mail_from": from_addr,
                "mail_to": list(to_addrs),
                "mail_level": level,
                "mail_subject": subject,
                "mail_interval": interval,
                "mail_gather": gather,
                "mail_timeout": timeout,
                "mail_tls": tls,
                "mail_ca_pem": ca_pem,
                "mail_credentials": credentials,
                "mail_allow_insecure_auth": allow_insecure_auth,
            }
        log.change(mail=mail, mail_level=mail_level)

    @classmethod
    def mail_pending(cls) -> int:
        """Messages waiting to be mailed."""
        sink = cls._log().sink
        return sink.mail_pending() if sink is not None else 0

    @classmethod
    def mails_sent(cls) -> int:
        """Mails sent so far (since the last configuration change)."""
        sink = cls._log().sink
        return sink.mails_sent() if sink is not None else 0

    @classmethod
    def close(cls) -> None:
        """Flushes and closes the outputs (they reopen on the next message)."""
        cls._log().close()

    @classmethod
    def error(cls, message: str) -> None:
        """Logs at ERROR."""
        cls._log().emit(cls.ERROR, message)

    @classmethod
    def warn(cls, message: str) -> None:
        """Logs at WARN."""
        cls._log().emit(cls.WARN, message)

    @classmethod
    def info(cls, message: str) -> None:
        """Logs at INFO."""
        cls._log().emit(cls.INFO, message)

    @classmethod
    def debug(cls, message: str) -> None:
        """Logs at DEBUG."""
        cls._log().emit(cls.DEBUG, message)

    @classmethod
    def debug2(cls, message: str) -> None:
        """Logs at DEBUG2 (the most detailed)."""
        cls._log().emit(cls.DEBUG2, message)


def _check_level(level: int) -> int:
    if not isinstance(level, int) or not Log.ERROR <= level <= Log.DEBUG2:
        raise ValueError(f"log levels are Log.ERROR ({Log.ERROR}) to Log.DEBUG2, not {level!r}")
    return level
