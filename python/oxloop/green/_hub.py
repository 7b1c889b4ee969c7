"""The green loop API and tasks: `EventLoop`, `Handler`, `current`, `Task`, `spawn`,
`sleep`, and the bridge to asyncio (`run`, `wait`).

One greenlet of the thread, the hub, runs the thread's `oxloop.Loop`; green tasks are
greenlets that switch to the hub to wait, and loop callbacks switch back into them.
The hub is whichever greenlet runs the loop: the one `EventLoop` starts when a task
first waits, or the greenlet in which asyncio runs the same loop
(`loop.run_until_complete`), so asyncio tasks and green tasks share one loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque

from greenlet import getcurrent, greenlet

from .._loop import Loop

__all__ = [
    "EventLoop",
    "Handler",
    "LoopExit",
    "Task",
    "TaskExit",
    "current",
    "run",
    "sleep",
    "spawn",
    "wait",
]

_local = threading.local()
_task_numbers = itertools.count(1)


class TaskExit(BaseException):
    """Raised inside a task by `Task.kill()`; a task that ends with it ended normally."""


class LoopExit(RuntimeError):
    """The loop stopped while a greenlet outside it waited for something."""


class _LoopEnded:
    """What the hub greenlet returns when its loop stops (never a wake-up value)."""


_LOOP_ENDED = _LoopEnded()


class Handler:
    """A scheduled callback, fd watcher or signal handler of an `EventLoop`;
    `cancel()` stops it (a no-op once it has run or was cancelled)."""

    __slots__ = ("_evloop", "_callback", "_args", "_kwargs", "_handle", "_active", "_key")

    def __init__(self, evloop: EventLoop, callback, args, kwargs, key=None) -> None:
        self._evloop = evloop
        self._callback = callback
        self._args = args
        self._kwargs = kwargs
        self._handle = None
        self._active = True
        self._key = key
        evloop._work += 1

    def __repr__(self) -> str:
        state = "active" if self._active else "done"
        return f"<Handler {self._callback!r} {state}>"

    def _retire(self) -> None:
        if self._active:
            self._active = False
            evloop = self._evloop
            evloop._work -= 1
            if evloop._work == 0 and evloop._stop_when_idle:
                evloop.loop.call_soon(evloop._stop_if_idle)

    def _run_once(self) -> None:
        """Runs a one-shot callback (call_soon, call_later, call_at)."""
        if not self._active:
            return
        try:
            self._callback(*self._args, **self._kwargs)
        finally:
            self._retire()

    def _run_again(self, *_ignored) -> None:
        """Runs a repeating callback (fd watchers, signal handlers)."""
        if self._active:
            self._callback(*self._args, **self._kwargs)

    def cancel(self) -> None:
        """Cancels the callback: it will not run (again)."""
        if not self._active:
            return
        self._retire()
        key = self._key
        if key is None:
            self._handle.cancel()
        else:
            self._evloop._forget(key, self)


class _ThreadHandler(Handler):
    """The handler of `call_from_thread`: not counted as the loop's work (it is
    made on another thread), so retiring it only marks it done."""

    __slots__ = ()

    def _retire(self) -> None:
        self._active = False


class EventLoop:
    """The green view of the thread's `oxloop.Loop`: evergreen's loop API on the
    loop that asyncio uses too. One per thread: `EventLoop.current()`, or
    `current.loop`.

    `EventLoop(loop)` adopts an `oxloop.Loop` (by default the thread's running or
    current asyncio loop if it is an oxloop loop, else a new one that becomes the
    thread's asyncio loop). Every method but `call_from_thread` must be called on the
    loop's thread.
    """

    def __init__(self, loop: Loop | None = None) -> None:
        if getattr(_local, "evloop", None) is not None:
            raise RuntimeError("this thread already has a green EventLoop")
        owned = False
        if loop is None:
            loop = _thread_oxloop()
        if loop is None:
            loop = Loop()
            asyncio.set_event_loop(loop)
            owned = True
        if not isinstance(loop, Loop):
            raise TypeError(f"an oxloop.Loop is needed, not {loop!r}")
        #: The `oxloop.Loop` this loop runs on (asyncio's view of the same loop).
        self.loop = loop
        self._owns_loop = owned
        self._thread = threading.get_ident()
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        self._main = root
        self._hub: greenlet | None = None  # the greenlet that runs the loop now
        self._own_hub: greenlet | None = None  # the hub greenlet started here
        self._hub_in_loop = False  # whether that greenlet runs the loop now
        self._hub_caller = None  # the greenlet it returns to when the loop stops
        self._work = 0  # live tasks and active handlers: run() ends at 0
        self._stop_when_idle = False
        self._readers: dict[int, Handler] = {}
        self._writers: dict[int, Handler] = {}
        self._signals: dict[int, list[Handler]] = {}
        self._pending: deque = deque()  # tasks started but not yet begun
        self._start_scheduled = False
        self._idle: list = []  # runner greenlets waiting for tasks
        self._ready: deque = deque()  # tasks that yielded with sleep(0)
        self._ready_scheduled = False
        # fd -> the reader a green socket leaves installed (`_io._SocketWatch`)
        self._socket_readers: dict = {}
        loop._green_evloop = self
        _local.evloop = self

    def __repr__(self) -> str:
        return f"<green EventLoop on {self.loop!r}>"

    @classmethod
    def current(cls) -> EventLoop:
        """The loop of the calling thread, created on first use."""
        evloop = getattr(_local, "evloop", None)
        if evloop is None:
            evloop = cls()
        return evloop

    # Scheduling: each call returns a Handler with cancel().
    def time(self) -> float:
        """The loop's clock (monotonic seconds), as `oxloop.Loop.time()`."""
        return self.loop.time()

    def call_soon(self, callback, *args, **kw) -> Handler:
        """Runs `callback(*args, **kw)` in the next iteration."""
        h = Handler(self, callback, args, kw)
        h._handle = self.loop.call_soon(h._run_once)
        return h

    def call_from_thread(self, callback, *args, **kw) -> Handler:
        """`call_soon` from any thread: the only thread-safe method. The handler's
        `cancel()` must be called on the loop's thread."""
        h = _ThreadHandler.__new__(_ThreadHandler)
        h._evloop, h._callback, h._args, h._kwargs = self, callback, args, kw
        h._active, h._key = True, None
        # Counted as work only once it reaches the loop's thread.
        h._handle = self.loop.call_soon_threadsafe(self._run_from_thread, h)
        return h

    def _run_from_thread(self, h: Handler) -> None:
        if h._active:
            h._active = False
            h._callback(*h._args, **h._kwargs)

    def call_later(self, delay: float, callback, *args, **kw) -> Handler:
        """Runs `callback(*args, **kw)` after `delay` seconds (at once if ≤ 0)."""
        if delay <= 0:
            return self.call_soon(callback, *args, **kw)
        h = Handler(self, callback, args, kw)
        h._handle = self.loop.call_later(delay, h._run_once)
        return h

    def call_at(self, when: float, callback, *args, **kw) -> Handler:
        """Runs `callback(*args, **kw)` at loop time `when`."""
        h = Handler(self, callback, args, kw)
        h._handle = self.loop.call_at(when, h._run_once)
        return h

    # fd watchers: one reader and one writer per fd.
    def add_reader(self, fd, callback, *args, **kw) -> Handler:
        """Runs `callback(*args, **kw)` whenever `fd` is readable; a second reader on
        the same fd is a `RuntimeError`."""
        return self._add_watcher(fd, callback, args, kw, write=False)

    def add_writer(self, fd, callback, *args, **kw) -> Handler:
        """Runs `callback(*args, **kw)` whenever `fd` is writable; a second writer on
        the same fd is a `RuntimeError`."""
        return self._add_watcher(fd, callback, args, kw, write=True)

    def _add_watcher(self, fd, callback, args, kw, write: bool) -> Handler:
        fd = _fileno(fd)
        handles = self.loop._fd_handles(fd)
        watch = self._socket_readers.get(fd)
        idle = watch is not None and not watch.handle.cancelled() and watch.waiting is None
        if not write and idle:
            del self._socket_readers[fd]  # the idle watcher a green socket left
            self.loop._remove_reader(fd)
            handles = (None, handles[1])
        if handles[1 if write else 0] is not None:
            kind = "writer" if write else "reader"
            raise RuntimeError(f"fd {fd} already has a {kind}")
        h = Handler(self, callback, args, kw, key=("w" if write else "r", fd))
        if write:
            self.loop._add_writer(fd, h._run_again)
            self._writers[fd] = h
        else:
            self.loop._add_reader(fd, h._run_again)
            self._readers[fd] = h
        return h

    def remove_reader(self, fd) -> bool:
        """Stops watching `fd` for reading; whether there was a reader."""
        h = self._readers.get(_fileno(fd))
        if h is None:
            return self.loop._remove_reader(_fileno(fd))
        h.cancel()
        return True

    def remove_writer(self, fd) -> bool:
        """Stops watching `fd` for writing; whether there was a writer."""
        h = self._writers.get(_fileno(fd))
        if h is None:
            return self.loop._remove_writer(_fileno(fd))
        h.cancel()
        return True

    # Signals: several handlers per signal.
    def add_signal_handler(self, signum: int, callback, *args, **kw) -> Handler:
        """Runs `callback(*args, **kw)` whenever signal `signum` arrives (main thread).
        Several handlers may watch one signal; cancelling one removes only it."""
        handlers = self._signals.get(signum)
        if handlers is None:
            self.loop.add_signal_handler(signum, self._dispatch_signal, signum)
            handlers = self._signals[signum] = []
        h = Handler(self, callback, args, kw, key=("s", signum))
        handlers.append(h)
        return h

    def remove_signal_handler(self, signum: int) -> bool:
        """Removes every handler of `signum`; whether there was one."""
        handlers = self._signals.get(signum)
        if not handlers:
            return False
        for h in list(handlers):
            h.cancel()
        return True

    def _dispatch_signal(self, signum: int) -> None:
        for h in list(self._signals.get(signum, ())):
            h._run_again()

    def _forget(self, key, h: Handler) -> None:
        kind, what = key
        if kind == "s":
            handlers = self._signals.get(what)
            if handlers is not None and h in handlers:
                handlers.remove(h)
                if not handlers:
                    del self._signals[what]
                    if not self.loop.is_closed():
                        self.loop.remove_signal_handler(what)
            return
        table = self._readers if kind == "r" else self._writers
        if table.get(what) is h:
            del table[what]
            if not self.loop.is_closed():
                if kind == "r":
                    self.loop._remove_reader(what)
                else:
                    self.loop._remove_writer(what)

    # Running.
    def switch(self):
        """Switches to the loop's greenlet, starting the loop if it is not running;
        returns what the greenlet that switches back passes."""
        return self._wait()

    def run(self) -> None:
        """Runs the loop until nothing is scheduled: no live task, no pending
        callback, fd watcher or signal handler made through this API (asyncio's own
        tasks are not counted). Called from outside the loop (the main greenlet)."""
        self._stop_when_idle = True
        try:
            if self._work == 0:
                return
            self._run_loop()
        finally:
            self._stop_when_idle = False

    def run_forever(self) -> None:
        """Runs the loop until `stop()`."""
        self._run_loop()

    def _run_loop(self) -> None:
        hub = self._hub
        if hub is not None and not hub.dead and self.loop.is_running():
            if hub is getcurrent():
                raise RuntimeError("the loop is already running in this greenlet")
            while hub.switch() is not _LOOP_ENDED:
                pass
            return
        if self.loop.is_running():
            raise RuntimeError("the loop is already running")
        hub = self._start_hub()
        while self._hub_in_loop and not hub.dead:
            hub.switch()

    def stop(self) -> None:
        """Stops the loop: `run`/`run_forever` return after this iteration."""
        self.loop.stop()

    def _stop_if_idle(self) -> None:
        """`run()`'s end: checked a turn after the last work ended, so work added in
        the meantime keeps it going."""
        if self._work == 0 and self._stop_when_idle:
            self.loop.stop()

    def destroy(self) -> None:
        """Stops the loop, closes it if this object created it, and clears the
        thread's current loop (a new `EventLoop` may then be made on this thread)."""
        hub = self._own_hub
        if hub is not None and not hub.dead and hub is not getcurrent():
            self._finish_hub(hub)
            self._hub_caller = None
            hub.parent = getcurrent()
            hub.throw()  # GreenletExit: the parked hub ends
        self._own_hub = None
        idle, self._idle = self._idle, []
        for runner in idle:
            runner.parent = getcurrent()
            runner.throw()  # GreenletExit: the runner ends
        if self._owns_loop and not self.loop.is_closed():
            if asyncio.events._get_running_loop() is None:
                asyncio.set_event_loop(None)
            self.loop.close()
        self.loop.__dict__.pop("_green_evloop", None)
        if getattr(_local, "evloop", None) is self:
            _local.evloop = None

    # Tasks run on reused runner greenlets.
    def _schedule_start(self, task) -> None:
        self._work += 1
        self._pending.append(task)
        if not self._start_scheduled:
            self._start_scheduled = True
            self.loop.call_soon(self._start_pending)

    def _start_pending(self) -> None:
        """Runs the started tasks on runner greenlets (in the hub)."""
        self._start_scheduled = False
        hub = self._hub = getcurrent()
        pending, idle = self._pending, self._idle
        while pending:
            runner = idle.pop() if idle else _Runner(self._drain, hub)
            runner.switch()  # back when it parks idle or its task waits

    def _start_now(self, task) -> None:
        """Begins `task` at once, from the greenlet running the loop's callbacks
        (the web server's, for a request), which gets control back when the task
        ends or waits: a response needing no wait is then ready in the same
        callback."""
        self._work += 1
        self._pending.append(task)
        hub = self._hub = getcurrent()
        pending, idle = self._pending, self._idle
        while pending:
            runner = idle.pop() if idle else _Runner(self._drain, hub)
            runner.switch()

    def _drain(self) -> None:
        """A runner greenlet's body: begins pending tasks one after another, then
        parks among the idle runners until there are more."""
        me = getcurrent()
        pending = self._pending
        while True:
            began = 0
            while pending:
                if began == _BATCH:  # let the loop have a turn
                    if not self._start_scheduled:
                        self._start_scheduled = True
                        self.loop.call_soon(self._start_pending)
                    break
                began += 1
                task = pending.popleft()
                me.task = task
                task._runner = me
                if me.gr_context is not None:
                    me.gr_context = None  # each task begins with a fresh context
                task._run()
            me.task = None
            hub = self._hub
            if hub is None or hub.dead or len(self._idle) >= _MAX_IDLE_RUNNERS:
                if hub is not None and not hub.dead and me.parent is not hub:
                    me.parent = hub
                return
            self._idle.append(me)
            hub.switch()

    def _run_ready(self) -> None:
        """Resumes the tasks that yielded with `sleep(0)` since the last turn."""
        self._ready_scheduled = False
        ready, self._ready = self._ready, deque()
        for runner in ready:
            runner.switch()

    # The hub: one greenlet, reused for each run of the loop it starts.
    def _start_hub(self) -> greenlet:
        hub = self._own_hub
        if hub is None or hub.dead:
            hub = self._own_hub = greenlet(self._hub_main)
        self._hub = hub
        self._hub_in_loop = True
        self._hub_caller = getcurrent()
        return hub

    def _hub_main(self):
        while True:
            try:
                self.loop.run_forever()
            finally:
                self._hub_in_loop = False
                if self._hub is getcurrent():
                    self._hub = None
            # Parked until the loop is wanted again (greenlets are costly to create).
            caller, self._hub_caller = self._hub_caller, None
            if caller is None or caller.dead:
                return _LOOP_ENDED
            caller.switch(_LOOP_ENDED)

    def _wait(self):
        """Switches from the calling greenlet to the hub until a callback switches
        back; returns the value it passes (or raises what it throws). If no greenlet
        runs the loop, a new hub runs it until this greenlet is woken, then stops it,
        so that between the waits of the main greenlet the loop is free (asyncio's
        `run_until_complete` may run it)."""
        hub = self._hub
        if hub is not None and not hub.dead and self.loop.is_running():
            if hub is getcurrent():
                raise RuntimeError(
                    "a green call would block the loop's own greenlet (from asyncio "
                    "code, use `await oxloop.green.run(fn)`)"
                )
            return hub.switch()
        if self.loop.is_running():
            raise RuntimeError(
                "the loop runs in a greenlet that is not green-aware; start green work "
                "from it with `oxloop.green.run` or `spawn`"
            )
        hub = self._start_hub()
        try:
            value = hub.switch()
        except BaseException:
            # Thrown in from a callback (a Timeout, a kill): leave the loop free too.
            self._finish_hub(hub)
            raise
        if value is _LOOP_ENDED:
            raise LoopExit("the loop stopped while this greenlet waited")
        # Woken from inside the loop: let the hub finish this iteration and stop.
        self._finish_hub(hub)
        return value

    def _finish_hub(self, hub: greenlet) -> None:
        if self._hub_in_loop and not hub.dead:
            self.loop.stop()
            while self._hub_in_loop and not hub.dead:
                hub.switch()

    def _report(self, message: str, exc: BaseException, task=None) -> None:
        context = {"message": message, "exception": exc}
        if task is not None:
            context["task"] = task
        self.loop.call_exception_handler(context)


def _thread_oxloop() -> Loop | None:
    """The thread's running asyncio loop, or its set loop, if it is an oxloop loop."""
    loop = asyncio.events._get_running_loop()
    if loop is None:
        policy = asyncio.events.get_event_loop_policy()
        local = getattr(policy, "_local", None)
        loop = getattr(local, "_loop", None)
    if isinstance(loop, Loop) and not loop.is_closed():
        return loop
    return None


def _fileno(fd) -> int:
    return fd if isinstance(fd, int) else fd.fileno()


def _evloop() -> EventLoop:
    """The calling thread's green loop (created on first use)."""
    evloop = getattr(_local, "evloop", None)
    if evloop is None:
        evloop = EventLoop()
    return evloop


def _evloop_of(loop: Loop) -> EventLoop:
    """The green loop over `loop` (adopted on first use)."""
    evloop = loop.__dict__.get("_green_evloop")
    if evloop is None:
        evloop = getattr(_local, "evloop", None)
        if evloop is not None and evloop.loop is not loop:
            raise RuntimeError("this thread's green EventLoop runs on another oxloop loop")
        evloop = EventLoop(loop)
    return evloop


class _Current:
    """`current.loop` (the thread's `EventLoop`) and `current.task` (the running
    task, or the greenlet that is not one, such as the main greenlet)."""

    @property
    def loop(self) -> EventLoop:
        """The calling thread's green `EventLoop` (created on first use)."""
        return _evloop()

    @property
    def task(self):
        """The running `Task`, or the running greenlet if it is not a task."""
        return _current_task()


current = _Current()


class _Waiter:
    """One wait of one greenlet: `wake(value)` resumes it once, and does nothing if
    the wait already ended (timed out, killed)."""

    __slots__ = ("glet", "active")

    def __init__(self, glet) -> None:
        self.glet = glet
        self.active = True

    def wake(self, value=True) -> None:
        if self.active:
            self.active = False
            self.glet.switch(value)

    def fail(self, exc: BaseException) -> None:
        if self.active:
            self.active = False
            self.glet.throw(exc)


def _park(waiters: deque, timeout: float | None) -> bool:
    """Waits in `waiters` until woken (True) or `timeout` seconds pass (False)."""
    evloop = _evloop()
    w = _Waiter(getcurrent())
    waiters.append(w)
    timer = None
    if timeout is not None:
        timer = evloop.loop.call_later(max(timeout, 0.0), w.wake, False)
    try:
        return evloop._wait()
    finally:
        if w.active:
            w.active = False
        if timer is not None:
            timer.cancel()
        try:
            waiters.remove(w)
        except ValueError:
            pass


def _wake_one(waiters: deque, loop) -> None:
    """Schedules the first still-waiting greenlet of `waiters` to resume."""
    while waiters:
        w = waiters.popleft()
        if w.active:
            loop.call_soon(w.wake, True)
            return


class _Runner(greenlet):
    """A greenlet that runs green tasks one after another (greenlets are reused:
    creating one costs far more than switching to it). `task` is the task it runs."""

    __slots__ = ("task",)


_MAX_IDLE_RUNNERS = 256
_BATCH = 1024  # tasks a runner starts in a row before the loop gets a turn


class Task:
    """A green task: `target(*args, **kwargs)` run on a greenlet of the thread's loop,
    once `start()`ed. It ends normally on `TaskExit` (what `kill()` raises in it); any
    other exception is reported through the loop's exception handler and the other
    tasks go on."""

    __slots__ = (
        "_evloop",
        "_target",
        "_args",
        "_kwargs",
        "_name",
        "_started",
        "_done",
        "_result",
        "_exception",
        "_joiners",
        "_kill_first",
        "_done_callbacks",
        "_runner",
        "__weakref__",
    )

    def __init__(self, target=None, args=(), kwargs=None, name=None) -> None:
        self._evloop = getattr(_local, "evloop", None) or _evloop()
        self._target = target
        self._args = args
        self._kwargs = kwargs if kwargs is not None else {}
        self._name = name
        self._started = False
        self._done = False
        self._result = None
        self._exception = None
        self._joiners = None
        self._kill_first = None
        self._done_callbacks = None
        self._runner = None

    @property
    def name(self) -> str:
        """The task's name ("Task-N" unless given)."""
        if self._name is None:
            self._name = f"Task-{next(_task_numbers)}"
        return self._name

    def __repr__(self) -> str:
        state = "done" if self._done else ("running" if self._started else "new")
        return f"<Task {self.name} {state}>"

    def start(self) -> Task:
        """Schedules the task to run; returns it."""
        if self._started:
            raise RuntimeError("a task can be started only once")
        self._started = True
        self._evloop._schedule_start(self)
        return self

    def _run(self) -> None:
        """Runs the target in the calling runner greenlet; never raises but for
        what must end the runner (`GreenletExit`)."""
        kill_first = self._kill_first
        try:
            if kill_first is not None:
                raise kill_first
            self._result = self._target(*self._args, **self._kwargs)
        except TaskExit:
            pass
        except Exception as exc:
            self._exception = exc
            if not self._done_callbacks:
                self._evloop._report(f"exception in green task {self.name}", exc, self)
        except BaseException as exc:
            self._exception = exc
            self._finish()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                self._evloop.loop.call_soon(_throw_main, self._evloop, exc)
                return
            raise
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._target = self._args = self._kwargs = None
        evloop = self._evloop
        joiners = self._joiners
        if joiners:
            loop = evloop.loop
            for w in joiners:
                if w.active:
                    loop.call_soon(w.wake, True)
            self._joiners = None
        callbacks = self._done_callbacks
        if callbacks:
            self._done_callbacks = None
            for callback in callbacks:
                evloop.loop.call_soon(callback, self)
        evloop._work -= 1
        if evloop._work == 0 and evloop._stop_when_idle:
            evloop.loop.call_soon(evloop._stop_if_idle)

    def join(self, timeout: float | None = None) -> bool:
        """Waits until the task ends (or `timeout` seconds pass); whether it ended."""
        if self._done:
            return True
        if not self._started:
            raise RuntimeError("the task was not started")
        runner = self._runner
        if runner is not None and runner.task is self and runner is getcurrent():
            raise RuntimeError("a task cannot join itself")
        if self._joiners is None:
            self._joiners = deque()
        _park(self._joiners, timeout)
        return self._done

    def kill(self, typ: type[BaseException] | BaseException = TaskExit) -> None:
        """Raises `typ` (`TaskExit` by default) inside the task, where it waits (at
        once if it has not begun); `join()` waits for it to end. Killing the running
        task raises in it at once."""
        if self._done:
            return
        exc = typ() if isinstance(typ, type) else typ
        runner = self._runner
        if runner is None:  # not begun: it raises as soon as it begins
            self._kill_first = exc
            if not self._started:
                self.start()
        elif runner is getcurrent():
            raise exc
        else:
            self._evloop.loop.call_soon(self._throw_in, exc)

    def _throw_in(self, exc: BaseException) -> None:
        runner = self._runner
        if not self._done and runner is not None and runner.task is self:
            runner.throw(exc)

    def is_alive(self) -> bool:
        """Whether the task was started and has not ended."""
        return self._started and not self._done

    def done(self) -> bool:
        """Whether the task has ended."""
        return self._done

    def result(self):
        """What the target returned (None before the end); re-raises its exception."""
        if self._exception is not None:
            raise self._exception
        return self._result

    @property
    def exception(self) -> BaseException | None:
        """The exception the task ended with (None if none or not ended)."""
        return self._exception

    def add_done_callback(self, callback) -> None:
        """Calls `callback(task)` in the loop once the task ends (at once if it has);
        a task with a done callback leaves reporting its exception to it."""
        if self._done:
            self._evloop.loop.call_soon(callback, self)
            return
        if self._done_callbacks is None:
            self._done_callbacks = []
        self._done_callbacks.append(callback)


def _throw_main(evloop: EventLoop, exc: BaseException) -> None:
    main = evloop._main
    if main is getcurrent():
        raise exc
    main.throw(exc)


def _current_task():
    """The running task, or the greenlet that is not running one (main)."""
    glet = getcurrent()
    return getattr(glet, "task", None) or glet


def spawn(fn, *args, **kwargs) -> Task:
    """Starts `fn(*args, **kwargs)` in a new green task; returns the task."""
    task = Task(fn, args, kwargs)
    task._started = True
    task._evloop._schedule_start(task)
    return task


def sleep(seconds: float = 0) -> None:
    """Lets the other tasks run for `seconds` (0: one turn of the loop)."""
    try:
        evloop = _local.evloop
    except AttributeError:
        evloop = None
    if evloop is None:
        evloop = _evloop()
    cur = getcurrent()
    if type(cur) is _Runner:  # a task: the hub runs the loop
        if seconds <= 0:
            # Tasks yielding in one iteration share one scheduled callback.
            evloop._ready.append(cur)
            if not evloop._ready_scheduled:
                evloop._ready_scheduled = True
                evloop.loop.call_soon(evloop._run_ready)
            try:
                evloop._hub.switch()
            except BaseException:
                try:
                    evloop._ready.remove(cur)
                except ValueError:
                    pass
                raise
            return
        handle = evloop.loop.call_later(seconds, cur.switch)
        try:
            evloop._hub.switch()
        except BaseException:
            handle.cancel()
            raise
        return
    if seconds <= 0:
        handle = evloop.loop.call_soon(cur.switch)
    else:
        handle = evloop.loop.call_later(seconds, cur.switch)
    try:
        evloop._wait()
    except BaseException:
        handle.cancel()
        raise


# The two models in one thread.
async def run(fn, *args, **kwargs):
    """From asyncio code on an oxloop loop: runs blocking-style `fn(*args, **kwargs)`
    in a green task on the same loop and returns (or raises) what it did. Cancelling
    the awaiting coroutine kills the task."""
    loop = asyncio.get_running_loop()
    evloop = _evloop_of(loop)
    future = loop.create_future()
    task = Task(fn, args, kwargs)

    def finished(task: Task) -> None:
        if future.done():
            return
        if task._exception is not None:
            future.set_exception(task._exception)
        else:
            future.set_result(task._result)

    task.add_done_callback(finished)
    evloop._hub = getcurrent()
    task.start()
    try:
        return await future
    except asyncio.CancelledError:
        task.kill()
        raise


def wait(awaitable):
    """From a green task (or the main greenlet): waits for an asyncio awaitable (a
    coroutine, task or future) on the same loop and returns its result. Killing the
    waiting task cancels it."""
    evloop = _evloop()
    future = asyncio.ensure_future(awaitable, loop=evloop.loop)
    if not future.done():
        w = _Waiter(getcurrent())
        future.add_done_callback(lambda _f: w.wake(True))
        try:
            evloop._wait()
        except BaseException:
            w.active = False
            future.cancel()
            raise
    return future.result()
