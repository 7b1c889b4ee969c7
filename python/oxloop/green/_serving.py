"""Green tasks for `oxloop.web`'s WSGI server (`serve_wsgi(..., green=True)`).

The server (Rust) starts one green task per request through `start_now`, which runs
it at once until it ends or first waits; when the task
must wait for the connection (the request body has not arrived, or the client has not
taken the response yet), the server makes a `RequestWait`, calls its `wait()` in the
task, and calls its `wake()` from the loop once the state changed.
"""

from __future__ import annotations

from greenlet import getcurrent

from .._loop import Loop
from ._hub import Task, _evloop, _evloop_of

__all__ = ["RequestWait", "start_now", "wsgi_runner"]

_WAITING, _WOKEN, _OVER = 0, 1, 2


class RequestWait:
    """One wait of a request's task: `wait()` switches to the loop until `wake()`
    resumes it. A `wake()` after the wait ended (the task was killed) does nothing."""

    __slots__ = ("_glet", "_evloop", "_state")

    def __init__(self) -> None:
        self._glet = getcurrent()
        self._evloop = _evloop()
        self._state = _WAITING

    def wait(self) -> None:
        """Switches to the loop until woken (raises what a kill throws in)."""
        try:
            self._evloop._wait()
        finally:
            self._state = _OVER

    def wake(self) -> None:
        """Schedules the waiting task to resume (called on the loop's thread)."""
        if self._state == _WAITING:
            self._state = _WOKEN
            self._evloop.loop.call_soon(self._resume)

    def _resume(self) -> None:
        if self._state == _WOKEN:
            self._state = _OVER
            self._glet.switch()


def start_now(fn) -> Task:
    """Starts `fn()` in a new green task and runs it at once (called on the loop's
    thread, from the greenlet running the loop), until it ends or waits."""
    task = Task(fn)
    task._started = True
    task._evloop._start_now(task)
    return task


def wsgi_runner(loop: Loop) -> tuple:
    """`(start_now, RequestWait)` for `_serve_wsgi` on the running `loop`: adopts it
    as the thread's green loop."""
    _evloop_of(loop)
    return start_now, RequestWait
