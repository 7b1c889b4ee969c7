"""`oxloop.Loop`: asyncio's event loop on the oxloop core.

The native base class (`oxloop._oxloop.LoopCore`, Rust) runs the loop: callbacks,
timers, fd watchers, signal handlers, cross-thread wake-ups, and the kernel wait with
the GIL released. This class adds what asyncio keeps in Python: `run_forever`'s
bookkeeping (running loop, async-generator hooks), tasks, executors, DNS, and the
network layer of the standard library's Unix loop (sockets, transports, servers,
pipes, TLS through `asyncio.sslproto`), which runs on the core's fd watchers.
"""

from __future__ import annotations

import errno
import io
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import weakref
from asyncio import (
    constants,
    coroutines,
    events,
    exceptions,
    sslproto,
    tasks,
    trsock,
    unix_events,
)

from . import _oxloop, sources
from ._transports import SocketTransport

__all__ = ["Loop"]

_PY314 = sys.version_info >= (3, 14)

# The errors of `accept()` that mean the process or the system is out of a resource
# (fds, buffers, memory): the listener waits and tries again instead of failing.
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _fd_of(fileobj) -> int:
    """The fd of an int or of an object with `fileno()`, as `selectors` reads it."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _WatcherView(selectors.BaseSelector):
    """What the standard library's transports read of a loop's selector (`get_key`
    and `get_map`, for their reprs and checks), answered from the core's fd table.
    It selects nothing: the core waits."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def register(self, fileobj, events, data=None):
        raise NotImplementedError("oxloop's loop watches fds itself")

    def unregister(self, fileobj):
        raise NotImplementedError("oxloop's loop watches fds itself")

    def select(self, timeout=None):
        raise NotImplementedError("oxloop's loop waits itself")

    def close(self) -> None:
        self._loop = None

    def get_key(self, fileobj):
        key = self.get_map().get(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def get_map(self):
        return _WatcherMap(self._loop)


class _WatcherMap(dict):
    """`fd -> SelectorKey` for one fd at a time (built on lookup, never listed)."""

    def __init__(self, loop) -> None:
        super().__init__()
        self._loop = loop

    def get(self, fileobj, default=None):
        if self._loop is None or self._loop.is_closed():
            return default
        fd = _fd_of(fileobj)
        reader, writer = self._loop._fd_handles(fd)
        mask = (selectors.EVENT_READ if reader else 0) | (selectors.EVENT_WRITE if writer else 0)
        if not mask:
            return default
        return selectors.SelectorKey(fileobj, fd, mask, (reader, writer))


# Signals. A handler added with `Loop.add_signal_handler` is installed through Python's
# `signal` module, as asyncio's own loop does, so that `signal.getsignal()` shows it and
# code that saves and restores handlers with `signal.signal()` puts it back. As on
# asyncio's loop and uvloop, a loop learns of a signal two ways: while it runs on the
# main thread, `signal.set_wakeup_fd` points at a socket it watches, so every signal
# Python catches wakes it and names itself there, whichever Python handler is installed
# at the moment (uvicorn replaces handlers while it serves and still expects the loop's
# to run); and the Python-level handler, `_deliver_signal`, notes the signal on every
# loop that watches it, which also reaches a loop that is not listening on its socket
# (not running, or running on another thread). The two are merged, so a signal that
# came both ways runs the loop's handler once.

# signal number -> the loops that watch it, in the order they started.
_signal_watchers: dict[int, list[weakref.ref]] = {}
# signal number -> the handler Python had before the first loop watched it.
_handlers_before: dict[int, object] = {}


def _deliver_signal(signum: int, frame) -> None:
    """The Python-level handler of every signal an `oxloop.Loop` handles: notes it on
    each loop that watches `signum`."""
    for ref in list(_signal_watchers.get(signum, ())):
        loop = ref()
        if loop is not None:
            loop._signal_noted(signum)


def _run_python_signal_handlers() -> None:
    """Nothing: calling a Python function lets the interpreter run the Python-level
    signal handlers that are pending (`_deliver_signal` among them)."""


def _watch_signal(loop: Loop, sig: int) -> None:
    """Installs `_deliver_signal` for `sig` (if no loop did yet) and lists `loop`."""
    watchers = _signal_watchers.get(sig)
    if watchers is None:
        before = signal.getsignal(sig)
        signal.signal(sig, _deliver_signal)
        # SA_RESTART, as asyncio sets it: fewer EINTRs in the program's other calls.
        signal.siginterrupt(sig, False)
        _handlers_before[sig] = before
        watchers = _signal_watchers[sig] = []
    elif signal.getsignal(sig) is not _deliver_signal:
        # Replaced meanwhile by other code (which has kept the handle): ours again.
        signal.signal(sig, _deliver_signal)
        signal.siginterrupt(sig, False)
    if not any(ref() is loop for ref in watchers):
        watchers.append(weakref.ref(loop))


def _unwatch_signal(loop: Loop, sig: int) -> None:
    """Unlists `loop`; when no loop watches `sig` any more, puts back the handler Python
    had before, unless other code has installed its own handler since."""
    watchers = _signal_watchers.get(sig)
    if watchers is None:
        return
    watchers[:] = [ref for ref in watchers if ref() is not None and ref() is not loop]
    if watchers:
        return
    del _signal_watchers[sig]
    before = _handlers_before.pop(sig, None)
    if signal.getsignal(sig) is not _deliver_signal:
        return
    if before is None:  # installed outside Python: the nearest Python can restore
        before = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
    try:
        signal.signal(sig, before)
    except (OSError, ValueError, TypeError):
        signal.signal(sig, signal.SIG_DFL)


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Loop(_oxloop.LoopCore, unix_events.SelectorEventLoop):
    """An asyncio event loop (`asyncio.AbstractEventLoop`) driven by the oxloop core.

    Use it as any asyncio loop: `oxloop.run(main())`, `asyncio.Runner(loop_factory=
    oxloop.new_event_loop)`, or `oxloop.install()` for code that asks the policy.
    """

    def __init__(self) -> None:
        # pidfd -> pid of each child whose exit the loop still waits for.
        self._child_pidfds: dict[int, int] = {}
        # The socket pair Python's signal wake-up writes to (made with the first signal
        # handler), and the wake-up fd to put back when a run ends.
        self._signal_sockets: tuple[socket.socket, socket.socket] | None = None
        self._wakeup_fd_before: int | None = None
        # Signals `_deliver_signal` noted and the loop has not handled yet.
        self._noted_signals: set[int] = set()
        unix_events.SelectorEventLoop.__init__(self, _WatcherView(self))
        self._clock_changed()

    # The clock. The core reckons timers on the monotonic clock, which is what `time()`
    # reads. A subclass that overrides `time`, or code that sets `loop.time` (a test's
    # mock clock), makes the loop reckon deadlines from that `time()` instead, as
    # asyncio's loop always does: see `LoopCore._set_own_clock`.
    def __setattr__(self, name: str, value) -> None:
        object.__setattr__(self, name, value)
        if name == "time":
            self._clock_changed()

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        if name == "time":
            self._clock_changed()

    def _clock_changed(self) -> None:
        own = "time" in self.__dict__ or type(self).time is not _oxloop.LoopCore.time
        self._set_own_clock(own)

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    # The standard library's self-pipe: the core has its own wake-up.
    def _make_self_pipe(self) -> None:
        pass

    def _close_self_pipe(self) -> None:
        pass

    def _process_self_data(self, data) -> None:
        pass

    def _run_once(self) -> None:
        """One iteration, for code that drives a stopped loop by hand (as some test
        helpers do): runs the callbacks that are ready, and those a wait without
        blocking makes ready, then returns. Unlike the standard library's, it does
        not block until the next timer."""
        if self.is_running():
            raise RuntimeError("oxloop's loop runs its iterations itself while it runs")
        self.call_soon(self.stop)
        self.run_forever()

    # Running.
    def run_forever(self) -> None:
        """Runs until `stop()` is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._listen_for_signals()
            self._run_forever_core(self.slow_callback_duration if self._debug else None)
        finally:
            self._stop_listening_for_signals()
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    def run_once(self, timeout: float | None = None) -> None:
        """Runs exactly one cycle: waits at most `timeout` seconds for I/O (`None`:
        until something happens; never past the earliest timer, and not at all when
        callbacks are ready), then runs the fd callbacks, due timers and ready
        callbacks of that cycle, as one iteration of `run_forever` does.

        While it runs, this loop is the running loop (`asyncio.get_running_loop()`),
        so asyncio code inside works; the running loop of a host that calls it (a
        source's dispatch, another loop's callback) is put back afterwards. A
        `stop()` made before or during the cycle is used up by it. For driving the
        loop from another loop, with `fileno()` and `next_timeout()`: see
        docs/python-sources.md."""
        self._check_closed()
        if self.is_running():
            if self._thread_id == threading.get_ident():
                raise RuntimeError(
                    "This event loop is already running (run_once was called from one of "
                    "its own callbacks)"
                )
            raise RuntimeError("This event loop is running in another thread")
        outer_loop = events._get_running_loop()
        old_hooks = sys.get_asyncgen_hooks()
        self._set_coroutine_origin_tracking(self._debug)
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._listen_for_signals()
            self._run_once_core(timeout, self.slow_callback_duration if self._debug else None)
        finally:
            self._stop_listening_for_signals()
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(outer_loop)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    def is_running(self) -> bool:
        """Whether `run_forever` is running."""
        return self._core_running()

    def close(self) -> None:
        """Closes the loop: removes its event sources (`oxloop.sources`, each one's
        `close()` called), drops pending callbacks, shuts the default executor down
        (without waiting) and frees the core's fds. A running loop cannot be closed."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        sources.close_sources(self)
        super().close()
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        self._close_core()
        self._forget_children()
        if self._signal_sockets is not None:
            for sock in self._signal_sockets:
                sock.close()
            self._signal_sockets = None

    def _forget_children(self) -> None:
        """Closes the pidfds of children still running when the loop closes; a
        thread reaps each of them when it exits, so none is left a zombie."""
        pidfds, self._child_pidfds = self._child_pidfds, {}
        for pidfd, pid in pidfds.items():
            os.close(pidfd)
            threading.Thread(target=_reap_quietly, args=(pid,), daemon=True).start()

    def set_debug(self, enabled: bool) -> None:
        """asyncio's debug mode: thread checks, handle sources, slow-callback warnings."""
        super().set_debug(enabled)
        self._set_core_debug(bool(enabled), self.slow_callback_duration)

    @property
    def slow_callback_duration(self) -> float:
        """In debug mode, callbacks that run longer than this (seconds) are logged."""
        return self.__dict__.get("_slow_callback_duration", 0.1)

    @slow_callback_duration.setter
    def slow_callback_duration(self, seconds: float) -> None:
        self._slow_callback_duration = float(seconds)
        self._set_core_debug(self.get_debug(), self._slow_callback_duration)

    # fds: accept any object with fileno(), as the standard library does.
    def _add_reader(self, fd, callback, *args):
        return _oxloop.LoopCore._add_reader(self, _fd_of(fd), callback, *args)

    def _add_writer(self, fd, callback, *args):
        return _oxloop.LoopCore._add_writer(self, _fd_of(fd), callback, *args)

    def _remove_reader(self, fd) -> bool:
        return _oxloop.LoopCore._remove_reader(self, _fd_of(fd))

    def _remove_writer(self, fd) -> bool:
        return _oxloop.LoopCore._remove_writer(self, _fd_of(fd))

    # Accepting. asyncio's own `_accept_connection` goes on calling `accept()` after an
    # `EMFILE` (or `ENFILE`, `ENOBUFS`, `ENOMEM`) for the rest of its backlog: with a
    # backlog of 4,096 it reported the error and scheduled a retry 4,096 times per
    # attempt. This one stops at the first: one report and one retry, a second later.
    def _accept_connection(
        self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *timeouts
    ):
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                self.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    }
                )
                self._remove_reader(sock.fileno())
                self.call_later(
                    constants.ACCEPT_RETRY_DELAY,
                    self._start_serving,
                    protocol_factory,
                    sock,
                    sslcontext,
                    server,
                    backlog,
                    *timeouts,
                )
                return
            conn.setblocking(False)
            self.create_task(
                self._accept_connection2(
                    protocol_factory, conn, {"peername": addr}, sslcontext, server, *timeouts
                )
            )

    # Transports: the native stream transport for TCP and Unix sockets, with or
    # without TLS (the standard library's TLS protocol runs on top of it).
    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        self._ensure_fd_no_transport(sock)
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        **timeouts,
    ):
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname, **timeouts
        )
        SocketTransport(self, rawsock, ssl_protocol, None, extra, server)
        return ssl_protocol._app_transport

    async def _sendfile_native(self, transp, file, offset, count):
        """`loop.sendfile` on an oxloop transport: `sendfile(2)` from the core, in order
        with the transport's other writes."""
        if not isinstance(transp, SocketTransport):
            raise exceptions.SendfileNotAvailableError(f"not supported for {transp!r}")
        try:
            fileno = file.fileno()
            size = os.fstat(fileno).st_size
        except (AttributeError, io.UnsupportedOperation, OSError) as exc:
            raise exceptions.SendfileNotAvailableError("not a regular file") from exc
        if not stat.S_ISREG(os.fstat(fileno).st_mode):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        count = max(0, size - offset) if not count else min(count, max(0, size - offset))
        if count == 0:
            return 0
        done = self.create_future()
        transp._send_file(fileno, offset, count, done)
        try:
            await done
        except exceptions.CancelledError:
            # The core cannot take back the part of the file it has not sent yet: the
            # connection is aborted so that the rest never goes out after the
            # cancellation (the peer sees the file cut short, as on asyncio's loop).
            transp.abort()
            raise
        file.seek(offset + count)
        return count

    # Tasks.
    def create_task(self, coro, *, name=None, context=None, **kwargs):
        """Wraps `coro` in a task (or the task factory's object), as in Python 3.14:
        further keyword arguments (such as `eager_start`) go to the task or factory."""
        self._check_closed()
        if context is not None:
            kwargs["context"] = context
        if self._task_factory is None:
            task = tasks.Task(coro, loop=self, name=name, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        if _PY314:
            if name is not None:
                kwargs["name"] = name
            return self._task_factory(self, coro, **kwargs)
        task = self._task_factory(self, coro, **kwargs)
        if name is not None:
            task.set_name(name)
        return task

    # DNS: numeric addresses need no resolver and no thread.
    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """`socket.getaddrinfo` without blocking the loop; numeric hosts and ports are
        answered at once, names in the default executor."""
        try:
            return socket.getaddrinfo(
                host,
                port,
                family,
                type,
                proto,
                flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
        except (socket.gaierror, UnicodeError):
            pass
        return await super().getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )

    # Signals: through Python's `signal` module (see `_deliver_signal` above).
    def add_signal_handler(self, sig, callback, *args) -> None:
        """Runs `callback(*args)` whenever signal `sig` arrives (main thread only).

        As on asyncio's loop, Python's `signal.getsignal(sig)` then reports a handler
        (oxloop's), and a handler saved and restored with `signal.signal` keeps working."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if not _is_main_thread():
            raise RuntimeError("set_wakeup_fd only works in main thread of the main interpreter")
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise RuntimeError(f"sig {sig:d} cannot be caught")
        if self._signal_sockets is None:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._signal_sockets = (reader, writer)
            self._add_reader(reader.fileno(), self._drain_signal_wakeups)
        handle = _oxloop.Handle(callback, args, self, None)
        try:
            _watch_signal(self, sig)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None
        old = self._signal_handlers.get(sig)
        if old is not None:
            old.cancel()
        self._signal_handlers[sig] = handle
        if self.is_running():
            self._listen_for_signals()

    def remove_signal_handler(self, sig) -> bool:
        """Removes the handler of `sig`; whether there was one. When no loop handles
        `sig` any more, Python's handler from before the first one is put back."""
        self._check_signal(sig)
        handle = self._signal_handlers.pop(sig, None)
        if handle is None:
            return False
        handle.cancel()
        _unwatch_signal(self, sig)
        return True

    def _signal_noted(self, sig: int) -> None:
        """`_deliver_signal` saw `sig` (on the main thread, possibly while this loop runs
        on another). A loop listening on its wake-up socket also finds it there; any
        other is told through a callback."""
        if self.is_closed():
            return
        self._noted_signals.add(sig)
        if self._wakeup_fd_before is None:
            self.call_soon_threadsafe(self._handle_signals, b"")

    def _drain_signal_wakeups(self) -> None:
        """Reads the signals Python's wake-up wrote to the loop's socket and queues
        their handlers."""
        _run_python_signal_handlers()
        reader = self._signal_sockets[0]
        data = b""
        try:
            while chunk := reader.recv(4096):
                data += chunk
        except (BlockingIOError, InterruptedError):
            pass
        self._handle_signals(data)

    def _handle_signals(self, data: bytes) -> None:
        """Queues the handlers of the signals named in `data` (from the wake-up socket)
        and of those `_deliver_signal` noted, each signal once."""
        noted, self._noted_signals = self._noted_signals, set()
        for sig in data:
            if sig:  # a 0 byte is no signal
                noted.discard(sig)
                self._queue_signal_handler(sig)
        for sig in noted:
            self._queue_signal_handler(sig)

    def _queue_signal_handler(self, sig: int) -> None:
        handle = self._signal_handlers.get(sig)
        if handle is not None and not handle.cancelled() and not self.is_closed():
            self._call_handle_soon(handle)

    def _listen_for_signals(self) -> None:
        """While the loop runs on the main thread and has a signal handler, Python's
        signal wake-up writes to its socket, so a signal ends the loop's wait at once."""
        if self._signal_sockets is None or self._wakeup_fd_before is not None:
            return
        if not _is_main_thread():
            return
        self._wakeup_fd_before = signal.set_wakeup_fd(
            self._signal_sockets[1].fileno(), warn_on_full_buffer=False
        )

    def _stop_listening_for_signals(self) -> None:
        if self._wakeup_fd_before is None:
            return
        before, self._wakeup_fd_before = self._wakeup_fd_before, None
        if _is_main_thread():
            signal.set_wakeup_fd(before)
        # Signals that came while the loop listened and that it has not read yet: their
        # handlers run in the next run.
        self._drain_signal_wakeups()

    # Subprocesses: reaped through a pidfd watched by the loop, no watcher thread.
    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        self._watch_child(transp.get_pid(), transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _watch_child(self, pid: int, transp) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            # No pidfd (a kernel before 5.3): one thread waits for this child.
            threading.Thread(
                target=self._wait_child_in_thread, args=(pid, transp), daemon=True
            ).start()
            return

        def reap() -> None:
            self._remove_reader(pidfd)
            del self._child_pidfds[pidfd]
            os.close(pidfd)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                returncode = 255  # reaped by someone else: asyncio reports 255
            else:
                returncode = os.waitstatus_to_exitcode(status)
            transp._process_exited(returncode)

        self._child_pidfds[pidfd] = pid
        self._add_reader(pidfd, reap)

    def _wait_child_in_thread(self, pid: int, transp) -> None:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            returncode = 255
        else:
            returncode = os.waitstatus_to_exitcode(status)
        if not self.is_closed():
            self.call_soon_threadsafe(transp._process_exited, returncode)


def _reap_quietly(pid: int) -> None:
    """Waits for child `pid` to exit (its loop is closed: nobody hears of it)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class EventLoopPolicy(unix_events.DefaultEventLoopPolicy):
    """The asyncio policy whose loops are `oxloop.Loop` (for code that asks the policy;
    new code passes `loop_factory=oxloop.new_event_loop`).

    It is the standard library's Unix policy with another loop factory, so code that
    sets or asks for a child watcher (`asyncio.set_child_watcher`, before Python
    3.14) keeps working; oxloop's loops reap their children through a pidfd and do
    not use the watcher."""

    _loop_factory = Loop
