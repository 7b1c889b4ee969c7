"""Wires: coroutines that run, then name the coroutine to run next (the aiowire model).

```python
import asyncio
from oxloop.wire import Call, EventLoop

prog = (Call(asyncio.sleep, 0.1) >> Call(print, "beep")) * 4

async def main():
    async with EventLoop(timeout=5) as ev:
        ev.start(prog)          # runs when the block ends, until no wire is left

oxloop.run(main())
```

A *wire* is anything called with the `EventLoop` that returns `None` (done) or the next
wire, directly or through an awaitable: an `async def f(ev)`, a plain `def f(ev)`, or
a `Wire` built with the combinators below. `ev.start(w)` runs a wire and the wires it
hands on as one asyncio task, concurrently with every other task of the running loop,
so wires mix freely with plain asyncio code (on `oxloop.Loop` or any asyncio loop).

| expression | runs |
|---|---|
| `Wire(f, *args, **kw)` | `f(ev, *args, **kw)`, awaited if needed; its result is the next wire |
| `Call(f, *args, **kw)` | `f(*args, **kw)` (sync or async), result ignored; then done |
| `a >> b` (`Sequence(a, b)`) | `a` and every wire it hands on, to the end; then `b` |
| `a * n`, `Repeat(a, n)` | `a` to the end, `n` times in a row |
| `Forever(a)` | `a` to the end, again and again, until cancelled or it fails |
| `Poller({fd: wire})` | the mapped wire each time the fd (or socket) is ready |

Where this differs from aiowire, and why:

- Composed wires keep no state while they run, so one wire (`a * 3`, a `Poller` once
  stopped) can be started any number of times; aiowire's `Repeat` counted down in place.
- `a >> b >> c` runs strictly one after another: `a >> b` finishes `a`'s whole chain
  before `b`. In aiowire, `(a >> b) >> c` ran `b` and `c` at the same time.
- An `UnhandledException` cancels every other wire before it leaves the `async with`
  block (aiowire left them running).
- `Poller` needs no extra package: plain fds, sockets and objects with `fileno()` are
  watched by the running loop (`add_reader`/`add_writer`), keyed by their fd (aiowire's
  Poller never fired for a socket object key). pyzmq sockets work too, through their
  edge-triggered `FD` and `EVENTS`. An fd's wire runs one at a time: the fd is not
  watched while its wire runs, so a wire that has not yet read its input is not started
  again and again.
- `timeout` is a deadline for the whole run counted from entering the block.
- `Forever` and `Repeat` give way to the loop between two rounds, so a wire that never
  awaits cannot starve the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = [
    "POLLIN",
    "POLLOUT",
    "Call",
    "EventLoop",
    "Forever",
    "Poller",
    "Repeat",
    "Sequence",
    "UnhandledException",
    "Wire",
]

#: A `Poller` flag: start the wire when the fd is readable (zmq.POLLIN's value).
POLLIN = 1
#: A `Poller` flag: start the wire when the fd is writable (zmq.POLLOUT's value).
POLLOUT = 2

WireLike = Callable[["EventLoop"], Any]
"""What `EventLoop.start` accepts: a callable of the `EventLoop` whose result (awaited
if it is awaitable) is `None` or the next wire."""

Handler = Callable[["EventLoop", BaseException], Awaitable[None] | None]
"""`handler(ev, exc)`: told of a wire's exception or bad return value."""

# The wire a task is running now and the handler of its chain (for error messages and
# for the wires a Poller starts).
_current_wire: contextvars.ContextVar[Any] = contextvars.ContextVar("oxloop_wire_current")
_current_handler: contextvars.ContextVar[Handler | None] = contextvars.ContextVar(
    "oxloop_wire_handler", default=None
)


class UnhandledException(Exception):
    """Raised out of `async with EventLoop()` when a wire failed and no handler took
    care of it (the default handler raises it). `__cause__` is the wire's exception."""


def _name(w: Any) -> str:
    """A short readable name of a wire."""
    if isinstance(w, Wire):
        return repr(w)
    name = getattr(w, "__qualname__", None) or getattr(w, "__name__", None)
    return name if name else repr(w)


def _next_wire(w: Any, result: Any) -> WireLike | None:
    """Checks what wire `w` returned: `None` or another wire."""
    if result is None or callable(result):
        return result
    raise TypeError(
        f"wire {_name(w)} returned {result!r}: a wire returns None (done) or the next wire"
    )


async def _step(w: WireLike, ev: EventLoop) -> WireLike | None:
    """Runs one step of a wire: calls it and awaits its result if needed."""
    result = w(ev)
    if inspect.isawaitable(result):
        result = await result
    return _next_wire(w, result)


async def _run_chain(w: WireLike | None, ev: EventLoop) -> None:
    """Runs `w` and every wire it hands on, in this task, to the end."""
    while w is not None:
        w = await _step(w, ev)


class Wire:
    """A wire made of `fn(ev, *args, **kw)` (sync or async); its result is the next
    wire. `Wire(f)` of an `async def f(ev)` behaves as `f` itself, with the operators."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(fn):
            raise TypeError(f"Wire() needs a callable, got {fn!r}")
        self._fn = fn
        self._args = args
        self._kwargs = kwargs

    async def __call__(self, ev: EventLoop) -> WireLike | None:
        result = self._fn(ev, *self._args, **self._kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def __rshift__(self, other: WireLike) -> Sequence:
        return Sequence(self, other)

    def __rrshift__(self, other: WireLike) -> Sequence:
        return Sequence(other, self)

    def __mul__(self, times: int) -> Repeat:
        return Repeat(self, times)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Wire({_name(self._fn)}{_args_repr(self._args, self._kwargs)})"


def _args_repr(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return "".join(", " + p for p in parts)


def _check_wire(w: Any, what: str) -> WireLike:
    if not callable(w):
        raise TypeError(f"{what} needs a wire (a callable of the EventLoop), got {w!r}")
    return w


class Call(Wire):
    """A wire that calls `fn(*args, **kw)` (without the loop; sync or async), ignores
    what it returns, and is done."""

    async def __call__(self, ev: EventLoop) -> None:
        result = self._fn(*self._args, **self._kwargs)
        if inspect.isawaitable(result):
            await result
        return None

    def __repr__(self) -> str:
        return f"Call({_name(self._fn)}{_args_repr(self._args, self._kwargs)})"


class Sequence(Wire):
    """`first >> then`: runs `first` and every wire it hands on to the end, then hands
    on `then`."""

    def __init__(self, first: WireLike, then: WireLike) -> None:
        self._first = _check_wire(first, ">>")
        self._then = _check_wire(then, ">>")

    async def __call__(self, ev: EventLoop) -> WireLike:
        await _run_chain(self._first, ev)
        return self._then

    def __repr__(self) -> str:
        return f"({_name(self._first)} >> {_name(self._then)})"


class Repeat(Wire):
    """`Repeat(w, n)` (or `w * n`): runs `w` to the end `n` times in a row."""

    def __init__(self, wire: WireLike, times: int) -> None:
        self._wire = _check_wire(wire, "Repeat")
        if isinstance(times, bool) or not isinstance(times, int):
            raise TypeError(f"a wire repeats a whole number of times, not {times!r}")
        if times < 0:
            raise ValueError(f"a wire cannot repeat {times} times")
        self._times = times

    async def __call__(self, ev: EventLoop) -> None:
        for i in range(self._times):
            if i:
                await asyncio.sleep(0)  # give way between two rounds
            await _run_chain(self._wire, ev)
        return None

    def __repr__(self) -> str:
        return f"({_name(self._wire)} * {self._times})"


class Forever(Wire):
    """`Forever(w)`: runs `w` to the end, again and again, until cancelled or it fails."""

    def __init__(self, wire: WireLike) -> None:
        self._wire = _check_wire(wire, "Forever")

    async def __call__(self, ev: EventLoop) -> None:
        while True:
            await _run_chain(self._wire, ev)
            await asyncio.sleep(0)  # give way between two rounds

    def __repr__(self) -> str:
        return f"Forever({_name(self._wire)})"


def _default_handler(ev: EventLoop, exc: BaseException) -> None:
    """The default handler: every failure is fatal to the run."""
    wire = _current_wire.get(None)
    where = f"wire {_name(wire)}" if wire is not None else "a wire"
    raise UnhandledException(f"{where} failed: {exc!r}") from exc


class EventLoop:
    """Runs wires concurrently on the running asyncio loop.

    ```python
    async with EventLoop(timeout=1) as ev:
        ev.start(wire)
    ```

    Leaving the block normally runs until no wire is left or `timeout` seconds after
    entering the block have passed (`timed_out` says which), then cancels the wires
    still running. An exception in the block, or a wire failure that its handler
    raised (by default `UnhandledException`), cancels every wire and leaves the block
    with that exception. An `EventLoop` runs once; make a new one for another run.
    """

    def __init__(self, timeout: float | None = None) -> None:
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self.timeout = timeout
        #: Whether the run ended because the timeout passed.
        self.timed_out = False
        self._state = "new"  # new -> open -> closing -> closed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<oxloop.wire.EventLoop {self._state} wires={len(self._tasks)}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop the wires run on."""
        if self._loop is None:
            raise RuntimeError("the EventLoop is not entered yet (use `async with`)")
        return self._loop

    async def __aenter__(self) -> EventLoop:
        if self._state != "new":
            raise RuntimeError("an EventLoop runs once; make a new one")
        self._loop = asyncio.get_running_loop()
        if self.timeout is not None:
            self._deadline = self._loop.time() + self.timeout
        self._state = "open"
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            if exc_type is None:
                await self._run()
        finally:
            self._state = "closing"
            await self._cancel_all()
            self._state = "closed"
        if exc_type is None and self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        return False

    def start(self, w: WireLike, handler: Handler | None = None) -> asyncio.Task[None]:
        """Calls `w(ev)` and runs the result concurrently: each wire it hands on runs
        in its place, until one returns `None`. An exception, or a return value that
        is neither `None` nor a wire, goes to `handler(ev, exc)` (default: raise
        `UnhandledException` out of the `async with`). Returns the chain's task."""
        if self._state == "new":
            raise RuntimeError("start() before the EventLoop is entered (use `async with`)")
        if self._state != "open":
            raise RuntimeError("start() on a finished EventLoop; make a new one")
        _check_wire(w, "start()")
        try:
            first: Any = w(self)
            error: BaseException | None = None
        except Exception as exc:
            first, error = None, exc
        task = self.loop.create_task(self._drive(w, first, error, handler))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def _drive(
        self, w: WireLike, first: Any, error: BaseException | None, handler: Handler | None
    ) -> None:
        """The task of one chain: finishes the first step, then runs what it hands on."""
        _current_handler.set(handler)
        _current_wire.set(w)
        try:
            if error is not None:
                raise error
            if inspect.isawaitable(first):
                first = await first
            nxt = _next_wire(w, first)
            while nxt is not None:
                _current_wire.set(nxt)
                nxt = await _step(nxt, self)
        except Exception as exc:
            await self._report(handler, exc)

    async def _report(self, handler: Handler | None, exc: BaseException) -> None:
        """Gives a failure to the handler; a failure of the handler ends the run."""
        try:
            result = (handler or _default_handler)(self, exc)
            if inspect.isawaitable(result):
                await result
        except Exception as failure:
            self._fail(failure)

    def _fail(self, failure: BaseException) -> None:
        if self._failure is None:
            self._failure = failure
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._wake_run()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._wake_run()

    def _wake_run(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _run(self) -> None:
        loop = self.loop
        while self._tasks and self._failure is None:
            remaining = None if self._deadline is None else self._deadline - loop.time()
            if remaining is not None and remaining <= 0:
                self.timed_out = True
                return
            self._wake = loop.create_future()
            await asyncio.wait([self._wake], timeout=remaining)
            self._wake = None

    async def _cancel_all(self) -> None:
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Awaiting tasks that were already done does not yield to the loop, so
            # their done callbacks may not have run: forget them here.
            self._tasks.difference_update(tasks)


class _Entry:
    """One fd of a Poller: what to watch, the wire to start, and its state."""

    __slots__ = ("target", "fd", "wire", "flags", "zmq", "busy", "watch")

    def __init__(self, target: Any, fd: int, wire: WireLike, flags: int, zmq: Any) -> None:
        self.target = target
        self.fd = fd
        self.wire = wire
        self.flags = flags
        self.zmq = zmq  # the zmq module when target is a zmq socket, else None
        self.busy = False  # its wire is running
        # For a zmq.asyncio socket: the task awaiting its poll() (the socket watches
        # its own FD with the loop, so the Poller must not replace that watcher).
        self.watch: asyncio.Task[None] | None = None

    def zmq_flags(self) -> int:
        return (self.zmq.POLLIN if self.flags & POLLIN else 0) | (
            self.zmq.POLLOUT if self.flags & POLLOUT else 0
        )


def _zmq_of(target: Any) -> Any:
    """The zmq module when `target` is a pyzmq socket (only if zmq is imported)."""
    zmq = sys.modules.get("zmq")
    if zmq is not None and isinstance(target, zmq.Socket):
        return zmq
    return None


def _is_zmq_asyncio(target: Any) -> bool:
    zmq_asyncio = sys.modules.get("zmq.asyncio")
    return zmq_asyncio is not None and isinstance(target, zmq_asyncio.Socket)


def _fd_of(target: Any) -> int:
    if isinstance(target, int) and not isinstance(target, bool):
        fd = target
    else:
        fileno = getattr(target, "fileno", None)
        if fileno is None:
            raise TypeError(
                f"a Poller watches fds, sockets or objects with fileno(), not {target!r}"
            )
        fd = int(fileno())
    if fd < 0:
        raise ValueError(f"invalid fd {fd} (of {target!r}; closed?)")
    return fd


class Poller(Wire):
    """A wire that starts a wire each time an fd is ready:
    `Poller({fd_or_socket: wire, ...}, default_flags=POLLIN)`.

    Keys are fds, sockets, objects with `fileno()` or pyzmq sockets. The Poller runs
    until `shutdown()`; while it runs, each ready fd starts its wire (with the handler
    of the chain that runs the Poller), and the fd is watched again when that wire's
    chain ends. `register`/`unregister` work before and while it runs.
    """

    def __init__(
        self, wires: Mapping[Any, WireLike] | None = None, default_flags: int = POLLIN
    ) -> None:
        self._check_flags(default_flags)
        self.default_flags = default_flags
        self._entries: dict[int, _Entry] = {}
        self._ev: EventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._handler: Handler | None = None
        for target, wire in (wires or {}).items():
            self.register(target, wire)

    @staticmethod
    def _check_flags(flags: int) -> None:
        if not isinstance(flags, int) or not flags or flags & ~(POLLIN | POLLOUT):
            raise ValueError(
                f"Poller flags are POLLIN, POLLOUT or both (oxloop.wire's, equal to "
                f"zmq's), not {flags!r}"
            )

    def __repr__(self) -> str:
        return f"Poller({len(self._entries)} fds)"

    def register(self, target: Any, wire: WireLike, flags: int | None = None) -> None:
        """Starts `wire` whenever `target` is ready for `flags` (default: the Poller's
        `default_flags`). An fd can be registered once."""
        _check_wire(wire, "Poller.register")
        flags = self.default_flags if flags is None else flags
        self._check_flags(flags)
        zmq = _zmq_of(target)
        fd = int(target.getsockopt(zmq.FD)) if zmq is not None else _fd_of(target)
        if fd in self._entries:
            raise ValueError(
                f"fd {fd} ({target!r}) is already registered in this Poller; unregister it first"
            )
        entry = _Entry(target, fd, wire, flags, zmq)
        self._entries[fd] = entry
        if self._ev is not None:
            self._arm(entry)

    def unregister(self, target: Any) -> None:
        """Stops watching `target` (the object or fd it was registered with)."""
        zmq = _zmq_of(target)
        fd = int(target.getsockopt(zmq.FD)) if zmq is not None else _fd_of(target)
        entry = self._entries.pop(fd, None)
        if entry is None:
            raise KeyError(f"{target!r} is not registered in this Poller")
        if self._ev is not None:
            self._disarm(entry)

    def shutdown(self) -> None:
        """Stops the Poller: its wire returns (wires it started run on)."""
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def __call__(self, ev: EventLoop) -> None:
        if self._ev is not None:
            raise RuntimeError("this Poller is already running")
        self._ev = ev
        self._handler = _current_handler.get()
        self._stopped = ev.loop.create_future()
        try:
            for entry in list(self._entries.values()):
                self._arm(entry)
            await self._stopped
        finally:
            for entry in self._entries.values():
                self._disarm(entry)
                entry.busy = False
            self._ev = None
            self._stopped = None
        return None

    # Watching.
    def _arm(self, entry: _Entry) -> None:
        loop = self._loop()
        if entry.zmq is not None and _is_zmq_asyncio(entry.target):
            entry.watch = loop.create_task(self._zmq_asyncio_watch(entry))
            return
        if entry.zmq is not None:
            loop.add_reader(entry.fd, self._zmq_ready, entry)
            # Edge-triggered: events may be pending without a new edge on the FD.
            loop.call_soon(self._zmq_ready, entry)
            return
        if entry.flags & POLLIN:
            loop.add_reader(entry.fd, self._ready, entry)
        if entry.flags & POLLOUT:
            loop.add_writer(entry.fd, self._ready, entry)

    def _disarm(self, entry: _Entry) -> None:
        loop = self._loop()
        if entry.zmq is not None and _is_zmq_asyncio(entry.target):
            if entry.watch is not None:
                entry.watch.cancel()
                entry.watch = None
            return
        if entry.zmq is not None or entry.flags & POLLIN:
            loop.remove_reader(entry.fd)
        if entry.zmq is None and entry.flags & POLLOUT:
            loop.remove_writer(entry.fd)

    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self._ev is not None
        return self._ev.loop

    def _zmq_ready(self, entry: _Entry) -> None:
        """pyzmq's protocol: the FD only says "look at EVENTS"; reading EVENTS clears it."""
        if entry.busy or self._entries.get(entry.fd) is not entry or self._ev is None:
            return
        if entry.target.getsockopt(entry.zmq.EVENTS) & entry.zmq_flags():
            self._ready(entry)

    async def _zmq_asyncio_watch(self, entry: _Entry) -> None:
        """A zmq.asyncio socket: its own `poll()` says when it is ready."""
        await entry.target.poll(flags=entry.zmq_flags())
        entry.watch = None
        self._ready(entry)

    def _ready(self, entry: _Entry) -> None:
        ev = self._ev
        if entry.busy or ev is None or self._entries.get(entry.fd) is not entry:
            return
        if ev._state != "open":
            self._disarm(entry)
            return
        entry.busy = True
        self._disarm(entry)
        task = ev.start(entry.wire, self._handler)
        task.add_done_callback(lambda _task: self._wire_done(entry))

    def _wire_done(self, entry: _Entry) -> None:
        entry.busy = False
        if self._ev is not None and self._entries.get(entry.fd) is entry:
            self._arm(entry)
