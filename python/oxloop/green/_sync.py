"""Tools for green tasks: `Channel`, `Event`, `Semaphore`, `BoundedSemaphore`, `Lock`,
`RLock`, `Condition`, `Queue`/`LifoQueue`/`PriorityQueue`, `Timeout`, and a task
pool executor with green futures.

A waiting task parks in a queue of waiters and switches to the hub; the task that
changes the state schedules the first waiter's wake-up, and the woken task checks the
state again (so a timeout or a kill never loses a wake-up meant for another).
"""

from __future__ import annotations

import heapq
import queue as _queue
from collections import deque
from concurrent.futures import CancelledError

from greenlet import getcurrent

from ._hub import Task, _current_task, _evloop, _park, _Waiter, _wake_one

__all__ = [
    "BoundedSemaphore",
    "Channel",
    "Condition",
    "Empty",
    "Event",
    "Full",
    "Future",
    "LifoQueue",
    "Lock",
    "PriorityQueue",
    "Queue",
    "RLock",
    "Semaphore",
    "TaskPoolExecutor",
    "Timeout",
]

Empty = _queue.Empty
Full = _queue.Full


class Event:
    """A flag that tasks wait for: `set()`, `clear()`, `is_set()`, `wait(timeout)`."""

    def __init__(self) -> None:
        self._flag = False
        self._waiters: deque = deque()

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def set(self) -> None:
        """Sets the flag and wakes every waiting task."""
        self._flag = True
        if self._waiters:
            loop = _evloop().loop
            waiters, self._waiters = self._waiters, deque()
            for w in waiters:
                if w.active:
                    loop.call_soon(w.wake, True)

    def clear(self) -> None:
        """Clears the flag."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until the flag is set (or `timeout` seconds pass); returns the flag."""
        if not self._flag:
            _park(self._waiters, timeout)
        return self._flag


class Channel:
    """A rendezvous between tasks: `send(value)` waits until a task `receive()`s it;
    `send_exception(exc)` makes the receiver raise `exc` instead."""

    def __init__(self) -> None:
        self._items: deque = deque()  # (is_exception, value, sender waiter)
        self._receivers: deque = deque()

    def __len__(self) -> int:
        return len(self._items)

    def send(self, value) -> None:
        """Hands `value` to a receiver, waiting until one takes it."""
        self._put(False, value)

    def send_exception(self, exc: BaseException) -> None:
        """Makes a receiver raise `exc`, waiting until one does."""
        self._put(True, exc)

    def _put(self, is_exception: bool, value) -> None:
        evloop = _evloop()
        w = _Waiter(getcurrent())
        item = [is_exception, value, w]
        self._items.append(item)
        _wake_one(self._receivers, evloop.loop)
        try:
            evloop._wait()
        finally:
            if w.active:  # not taken (killed or timed out while waiting): withdraw it
                w.active = False
                try:
                    self._items.remove(item)
                except ValueError:
                    pass

    def receive(self, timeout: float | None = None):
        """Waits for a value sent by another task and returns it (or raises the
        exception sent); `TimeoutError` after `timeout` seconds."""
        while not self._items:
            if not _park(self._receivers, timeout) and not self._items:
                raise TimeoutError("no value was sent in time")
        is_exception, value, sender = self._items.popleft()
        if sender.active:
            _evloop().loop.call_soon(sender.wake, True)
        if is_exception:
            raise value
        return value


class Semaphore:
    """A counter of permits: `acquire()` takes one (waiting while none is left),
    `release()` gives one back. Usable as a context manager."""

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("a semaphore's value cannot be negative")
        self._value = value
        self._waiters: deque = deque()

    def locked(self) -> bool:
        """Whether no permit is left."""
        return self._value <= 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Takes a permit; whether it got one (False when not `blocking` or timed out)."""
        while self._value <= 0:
            if not blocking:
                return False
            if not _park(self._waiters, timeout) and self._value <= 0:
                return False
        self._value -= 1
        return True

    def release(self) -> None:
        """Gives a permit back and wakes a waiting task."""
        self._value += 1
        if self._waiters:
            _wake_one(self._waiters, _evloop().loop)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class BoundedSemaphore(Semaphore):
    """A `Semaphore` that refuses to be released more often than acquired."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial = value

    def release(self) -> None:
        """Gives a permit back; `ValueError` if that exceeds the initial value."""
        if self._value >= self._initial:
            raise ValueError("BoundedSemaphore released too many times")
        super().release()


class Lock(BoundedSemaphore):
    """A mutual-exclusion lock (a bounded semaphore of one)."""

    def __init__(self) -> None:
        super().__init__(1)


class RLock:
    """A lock that the task holding it may acquire again (released as often)."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._owner = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Takes the lock (again, if this task holds it); whether it got it."""
        me = _current_task()
        if self._owner is me:
            self._count += 1
            return True
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    def release(self) -> None:
        """Releases one level; `RuntimeError` if this task does not hold it."""
        if self._owner is not _current_task():
            raise RuntimeError("cannot release an RLock this task does not hold")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            self._lock.release()

    def _is_owned(self) -> bool:
        return self._owner is _current_task()

    def _release_save(self):
        state = (self._owner, self._count)
        self._owner, self._count = None, 0
        self._lock.release()
        return state

    def _acquire_restore(self, state) -> None:
        self._lock.acquire()
        self._owner, self._count = state

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Condition:
    """A condition variable over a lock (an `RLock` by default): `wait`, `wait_for`,
    `notify`, `notify_all`, with the lock held."""

    def __init__(self, lock=None) -> None:
        self._lock = lock if lock is not None else RLock()
        self._waiters: deque = deque()

    def acquire(self, *args) -> bool:
        """Acquires the underlying lock."""
        return self._lock.acquire(*args)

    def release(self) -> None:
        """Releases the underlying lock."""
        self._lock.release()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _release_save(self):
        if hasattr(self._lock, "_release_save"):
            return self._lock._release_save()
        self._lock.release()
        return None

    def _acquire_restore(self, state) -> None:
        if hasattr(self._lock, "_acquire_restore"):
            self._lock._acquire_restore(state)
        else:
            self._lock.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        """Releases the lock, waits for a `notify` (or `timeout`), takes the lock
        again; whether it was notified."""
        w = _Waiter(getcurrent())
        self._waiters.append(w)
        state = self._release_save()
        evloop = _evloop()
        timer = None
        if timeout is not None:
            timer = evloop.loop.call_later(max(timeout, 0.0), w.wake, False)
        try:
            notified = evloop._wait()
        finally:
            w.active = False
            if timer is not None:
                timer.cancel()
            try:
                self._waiters.remove(w)
            except ValueError:
                pass
            self._acquire_restore(state)
        return bool(notified)

    def wait_for(self, predicate, timeout: float | None = None):
        """Waits until `predicate()` is true (or `timeout`); returns its last value."""
        evloop = _evloop()
        deadline = None if timeout is None else evloop.time() + timeout
        result = predicate()
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - evloop.time()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to `n` waiting tasks."""
        loop = _evloop().loop
        while n > 0 and self._waiters:
            w = self._waiters.popleft()
            if w.active:
                loop.call_soon(w.wake, True)
                n -= 1

    def notify_all(self) -> None:
        """Wakes every waiting task."""
        self.notify(len(self._waiters))


class Queue:
    """A FIFO queue between tasks, as `queue.Queue` (`put`, `get`, `*_nowait`,
    `qsize`, `empty`, `full`, `task_done`, `join`); `maxsize` 0 means unbounded."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._init()
        self._getters: deque = deque()
        self._putters: deque = deque()
        self._unfinished = 0
        self._all_done = Event()
        self._all_done.set()

    def _init(self) -> None:
        self._items = deque()

    def _put(self, item) -> None:
        self._items.append(item)

    def _get(self):
        return self._items.popleft()

    def qsize(self) -> int:
        """How many items wait in the queue."""
        return len(self._items)

    def empty(self) -> bool:
        """Whether the queue is empty."""
        return not self._items

    def full(self) -> bool:
        """Whether the queue holds `maxsize` items."""
        return 0 < self.maxsize <= len(self._items)

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        """Adds `item`, waiting while the queue is full; `queue.Full` when it may not."""
        while self.full():
            if not block:
                raise Full
            if not _park(self._putters, timeout) and self.full():
                raise Full
        self._put(item)
        self._unfinished += 1
        self._all_done.clear()
        if self._getters:
            _wake_one(self._getters, _evloop().loop)

    def put_nowait(self, item) -> None:
        """`put` without waiting."""
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None):
        """Takes the next item, waiting while the queue is empty; `queue.Empty` when
        it may not."""
        while not self._items:
            if not block:
                raise Empty
            if not _park(self._getters, timeout) and not self._items:
                raise Empty
        item = self._get()
        if self._putters:
            _wake_one(self._putters, _evloop().loop)
        return item

    def get_nowait(self):
        """`get` without waiting."""
        return self.get(False)

    def task_done(self) -> None:
        """Marks one item taken by `get` as processed."""
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0:
            self._all_done.set()

    def join(self, timeout: float | None = None) -> bool:
        """Waits until every item put has been marked `task_done`."""
        return self._all_done.wait(timeout)


class LifoQueue(Queue):
    """A last-in, first-out `Queue`."""

    def _get(self):
        return self._items.pop()


class PriorityQueue(Queue):
    """A `Queue` that hands out the smallest item first."""

    def _init(self) -> None:
        self._items = []

    def _put(self, item) -> None:
        heapq.heappush(self._items, item)

    def _get(self):
        return heapq.heappop(self._items)


class Timeout(BaseException):
    """A deadline around a block of green code::

        with Timeout(2.0):
            data = sock.recv(100)

    If the block is still waiting when `seconds` pass, the `Timeout` itself (or
    `exception`, if given) is raised where it waits; with `exception=False` the block
    is just left. `None` seconds means no deadline."""

    def __init__(self, seconds: float | None = None, exception=None) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self._timer = None

    def __str__(self) -> str:
        return f"{self.seconds} seconds"

    def start(self) -> Timeout:
        """Arms the deadline for the calling task."""
        if self.seconds is not None:
            exc = self if self.exception in (None, False) else self.exception
            if isinstance(exc, type):
                exc = exc()
            glet = getcurrent()
            self._timer = _evloop().loop.call_later(max(self.seconds, 0.0), glet.throw, exc)
        return self

    def cancel(self) -> None:
        """Disarms the deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self):
        return self.start()

    def __exit__(self, typ, value, tb) -> bool:
        self.cancel()
        return value is self and self.exception is False


class Future:
    """The result of a call submitted to a `TaskPoolExecutor`: `result(timeout)` and
    `exception(timeout)` wait greenly; `done()`, `cancel()`, `add_done_callback()`."""

    def __init__(self) -> None:
        self._done = Event()
        self._result = None
        self._exception: BaseException | None = None
        self._cancelled = False
        self._callbacks: list = []
        self._task: Task | None = None

    def done(self) -> bool:
        """Whether the call ended (or was cancelled)."""
        return self._done.is_set()

    def cancelled(self) -> bool:
        """Whether the call was cancelled before it started."""
        return self._cancelled

    def cancel(self) -> bool:
        """Cancels the call if it has not started; whether it did."""
        if self.done() or (self._task is not None and self._task.is_alive()):
            return False
        self._cancelled = True
        self._finish(None, None)
        return True

    def _finish(self, result, exception) -> None:
        self._result, self._exception = result, exception
        self._done.set()
        for callback in self._callbacks:
            callback(self)

    def result(self, timeout: float | None = None):
        """Waits for the call and returns its value (or raises its exception)."""
        if not self._done.wait(timeout):
            raise TimeoutError("the call did not end in time")
        if self._cancelled:
            raise CancelledError()
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Waits for the call and returns its exception (None if it returned)."""
        if not self._done.wait(timeout):
            raise TimeoutError("the call did not end in time")
        return self._exception

    def add_done_callback(self, callback) -> None:
        """Calls `callback(future)` when the call ends (at once if it has)."""
        if self.done():
            callback(self)
        else:
            self._callbacks.append(callback)


class TaskPoolExecutor:
    """Runs submitted calls in green tasks, at most `max_workers` at a time."""

    def __init__(self, max_workers: int = 100) -> None:
        self._slots = Semaphore(max_workers)
        self._tasks: set[Task] = set()
        self._shutdown = False

    def submit(self, fn, *args, **kwargs) -> Future:
        """Schedules `fn(*args, **kwargs)`; returns its `Future`."""
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        future = Future()
        task = Task(self._work, (future, fn, args, kwargs))
        future._task = task
        self._tasks.add(task)
        task.start()
        return future

    def _work(self, future: Future, fn, args, kwargs) -> None:
        try:
            with self._slots:
                if future._cancelled:
                    return
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    future._finish(None, exc)
                else:
                    future._finish(result, None)
        finally:
            self._tasks.discard(_current_task())

    def map(self, fn, *iterables, timeout: float | None = None):
        """`fn` over the items of `iterables`, in parallel tasks; yields the results
        in order."""
        futures = [self.submit(fn, *items) for items in zip(*iterables, strict=False)]
        for future in futures:
            yield future.result(timeout)

    def shutdown(self, wait: bool = True) -> None:
        """Refuses new calls; with `wait`, waits for the submitted ones to end."""
        self._shutdown = True
        if wait:
            for task in list(self._tasks):
                task.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(wait=True)
