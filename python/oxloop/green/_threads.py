"""Green-aware replacements for `threading`'s locks and `threading.local`, put in by
`patch_thread()`.

Threads stay real threads here (unlike gevent's `patch_thread`, which turns them into
greenlets): oxloop's own executor (the green DNS functions, `run_in_executor`,
`asyncio.to_thread`) needs them, and the loop lets other threads have the GIL while it
waits. So the locks must work between threads and between tasks at once. A `Lock` is
a real lock underneath: an uncontended `acquire` is one C call; a contended one in a
green task parks the task and switches to the loop, and every `release` (from a task or
from another thread) schedules the parked tasks to try again; a thread that is not in
a task blocks on the real lock as before. `threading.Condition`, `Event`, `Semaphore`,
`Barrier` and `queue.Queue` are built on `threading.Lock`/`RLock` in Python, so once
those are replaced they are green-aware too.
"""

from __future__ import annotations

import _thread
import asyncio.events as _asyncio_events
import threading as _threading
import time as _time
import weakref as _weakref

from greenlet import getcurrent

from ._hub import _current_task, _local, _Runner, _Waiter

__all__ = ["Lock", "RLock", "local"]

_allocate_real_lock = _thread.allocate_lock
_orig_join = _threading.Thread.join


def _green_loop():
    """The green loop a blocking call may park the caller on: the calling greenlet is
    a task, or the main greenlet of a thread whose green loop is not running now but
    has tasks that could run meanwhile; otherwise None (the loop's own greenlet, a
    thread without green tasks), and the caller blocks for real."""
    evloop = getattr(_local, "evloop", None)
    if evloop is None:
        return None
    cur = getcurrent()
    if type(cur) is _Runner:
        return evloop
    loop = evloop.loop
    if evloop._work <= 0 or loop.is_running() or loop.is_closed():
        return None
    if _asyncio_events._get_running_loop() is not None:
        return None  # another asyncio loop runs in this greenlet
    return evloop


def _wake(entry) -> None:
    """Schedules the parked task of `entry` (`(evloop, waiter)`) to try again."""
    evloop, waiter = entry
    if not waiter.active:
        return
    loop = evloop.loop
    try:
        if getattr(_local, "evloop", None) is evloop:
            loop.call_soon(waiter.wake, True)
        else:
            loop.call_soon_threadsafe(waiter.wake, True)
    except RuntimeError:  # the loop was closed meanwhile
        pass


class Lock:
    """`threading.Lock` that parks a green task instead of blocking its thread."""

    __slots__ = ("_lock", "_parked", "__weakref__")

    def __init__(self) -> None:
        self._lock = _allocate_real_lock()
        self._parked: list = []  # (evloop, _Waiter) of the tasks waiting for it

    def __repr__(self) -> str:
        state = "locked" if self._lock.locked() else "unlocked"
        return f"<{state} oxloop.green lock at {id(self):#x}>"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Takes the lock; waits (at most `timeout` seconds, unless -1) if
        `blocking`; whether it was taken."""
        if self._lock.acquire(False):
            return True
        if not blocking:
            if timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            return False
        if timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number")
        evloop = _green_loop()
        if evloop is None:
            return self._lock.acquire(True, timeout)
        loop = evloop.loop
        deadline = None if timeout == -1 else loop.time() + timeout
        while True:
            waiter = _Waiter(getcurrent())
            entry = (evloop, waiter)
            self._parked.append(entry)
            try:
                # Again after parking: a thread may have released it in between.
                if self._lock.acquire(False):
                    return True
                timer = None
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return False
                    timer = loop.call_later(remaining, waiter.wake, False)
                try:
                    evloop._wait()
                finally:
                    if timer is not None:
                        timer.cancel()
            finally:
                waiter.active = False
                try:
                    self._parked.remove(entry)
                except ValueError:
                    pass

    def release(self) -> None:
        """Releases the lock (from any task or thread) and lets the parked tasks try
        to take it."""
        self._lock.release()
        if self._parked:
            for entry in list(self._parked):
                _wake(entry)

    def locked(self) -> bool:
        """Whether the lock is held."""
        return self._lock.locked()

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._parked = []

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


class RLock:
    """`threading.RLock` over the green-aware `Lock`, owned by the greenlet (a task,
    or a thread's own greenlet) that took it."""

    __slots__ = ("_block", "_owner", "_count", "__weakref__")

    def __init__(self) -> None:
        self._block = Lock()
        self._owner = None
        self._count = 0

    def __repr__(self) -> str:
        return f"<oxloop.green RLock owner={self._owner!r} count={self._count}>"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Takes the lock (again, if the caller holds it); whether it was taken."""
        me = getcurrent()
        if self._owner is me:
            self._count += 1
            return True
        if not self._block.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    def release(self) -> None:
        """Releases one level; the lock is free after as many releases as takes."""
        if self._owner is not getcurrent():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._block.release()

    def locked(self) -> bool:
        """Whether the lock is held."""
        return self._block.locked()

    def _is_owned(self) -> bool:
        return self._owner is getcurrent()

    def _release_save(self):
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._block.release()
        return state

    def _acquire_restore(self, state) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


_MISSING = object()


def _lookup(cls, name: str):
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return _MISSING


def _is_data_descriptor(attr) -> bool:
    kind = type(attr)
    return hasattr(kind, "__set__") or hasattr(kind, "__delete__")


class local:  # noqa: N801 - the standard library's name
    """`threading.local` with one set of attributes per green task (and per thread
    outside tasks). A subclass's `__init__` runs again for each task that first
    touches the object, with the arguments given at creation."""

    __slots__ = ("_local__dicts", "_local__args", "__weakref__")

    def __new__(cls, *args, **kw):
        if (args or kw) and cls.__init__ is object.__init__:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        object.__setattr__(self, "_local__dicts", _weakref.WeakKeyDictionary())
        object.__setattr__(self, "_local__args", (args, kw))
        return self

    def __getattribute__(self, name: str):
        if name in ("_local__dicts", "_local__args", "__class__"):
            return object.__getattribute__(self, name)
        d = _local_dict(self)
        if name == "__dict__":
            return d
        cls = type(self)
        attr = _lookup(cls, name)
        if attr is not _MISSING and _is_data_descriptor(attr):
            return attr.__get__(self, cls)
        if name in d:
            return d[name]
        if attr is not _MISSING:
            get = getattr(type(attr), "__get__", None)
            return attr if get is None else get(attr, self, cls)
        raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name == "__dict__":
            raise AttributeError("'__dict__' of a local is read-only")
        attr = _lookup(type(self), name)
        if attr is not _MISSING and hasattr(type(attr), "__set__"):
            attr.__set__(self, value)
            return
        _local_dict(self)[name] = value

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError("'__dict__' of a local is read-only")
        attr = _lookup(type(self), name)
        if attr is not _MISSING and hasattr(type(attr), "__delete__"):
            attr.__delete__(self)
            return
        try:
            del _local_dict(self)[name]
        except KeyError:
            raise AttributeError(name) from None


def _local_dict(obj: local) -> dict:
    """The calling task's (or greenlet's) attributes of `obj`, made (and the
    subclass's `__init__` run) on first use."""
    dicts = object.__getattribute__(obj, "_local__dicts")
    key = _current_task()
    d = dicts.get(key)
    if d is None:
        d = dicts[key] = {}
        init = type(obj).__init__
        if init is not object.__init__:
            args, kw = object.__getattribute__(obj, "_local__args")
            init(obj, *args, **kw)
    return d


def join(self, timeout: float | None = None) -> None:
    """`threading.Thread.join` that lets the other tasks run while it waits, when
    called in a green task (polling the thread, up to every 50 ms)."""
    if _green_loop() is None or not self.is_alive():
        _orig_join(self, timeout)
        return
    if not self._started.is_set():
        raise RuntimeError("cannot join thread before it is started")
    if self is _threading.current_thread():
        raise RuntimeError("cannot join current thread")
    from ._hub import sleep

    deadline = None if timeout is None else _time.monotonic() + timeout
    pause = 0.001
    while self.is_alive():
        if deadline is not None:
            remaining = deadline - _time.monotonic()
            if remaining <= 0:
                return
            pause = min(pause, remaining)
        sleep(pause)
        pause = min(pause * 2, 0.05)
    _orig_join(self, 0)


def process_request(self, request, client_address) -> None:
    """`socketserver.ThreadingMixIn.process_request` that handles the request in a
    green task instead of a new thread."""
    from ._hub import spawn

    spawn(self.process_request_thread, request, client_address)
