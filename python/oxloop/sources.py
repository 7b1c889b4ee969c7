"""Event sources: one interface for anything that can wake a loop, and other event
loops hooked into an oxloop loop as sources.

A `Source` says what it waits for — fds, each watched for reading and/or writing, and
optionally a deadline — and what to do when one of them fires (`dispatch`). Added to
a loop with `add_source(loop, source)`, it is driven by the loop's own fd watchers and
one loop timer: no thread and no polling. Its life: added, dispatched any number of
times, removed (`source.remove()`, `remove_source`, or the loop's `close()`), at which
point its `close()` is called, once.

```python
import sched, oxloop
from oxloop.sources import SchedSource, add_source

loop = oxloop.new_event_loop()
scheduler = sched.scheduler()
add_source(loop, SchedSource(scheduler))       # sched's events now run on the loop
scheduler.enter(0.1, 0, loop.stop)
loop.run_forever()
loop.close()                                   # closes the source too
```

Ready-made sources for foreign loops: `SchedSource` (the standard library's
`sched.scheduler`), `AsyncioSource` (a second, stock asyncio selector loop),
`TkSource` (Tkinter's event loop) and `OxloopSource` (another oxloop loop, through its
`fileno()`/`next_timeout()`/`run_once()`). The other way round, an oxloop loop inside a
foreign loop, needs no source: see `Loop.fileno`, `Loop.next_timeout` and
`Loop.run_once`, and docs/python-sources.md.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import math
import os
import selectors
from asyncio import events
from collections.abc import Iterable
from typing import Any

__all__ = [
    "READ",
    "WRITE",
    "AsyncioSource",
    "OxloopSource",
    "SchedSource",
    "Source",
    "TkSource",
    "add_source",
    "close_sources",
    "remove_source",
]

#: A source's fd is watched for reading (`selectors.EVENT_READ`).
READ = selectors.EVENT_READ
#: A source's fd is watched for writing (`selectors.EVENT_WRITE`).
WRITE = selectors.EVENT_WRITE

# The attribute of a loop that holds its sources: {id(source): _Registration}.
_SOURCES_ATTR = "_event_sources"


class Source:
    """Something a loop waits for and dispatches. Subclass it and override `fds`,
    `deadline`, `dispatch` and, for clean-up, `close`.

    - `fds()` and `deadline()` are asked when the source is added, after each of its
      dispatches, and when `update()` is called (a change made outside a dispatch).
    - `dispatch(fd, events)` runs on the loop's thread, as a loop callback: once per
      ready fd and direction (`events` is `READ` or `WRITE`; an fd ready both ways is
      dispatched twice, readers first), or with `fd=None, events=0` when the deadline
      has passed. fds are level-triggered: a dispatch that leaves the fd ready gets
      another one in the next cycle. An exception goes to the loop's exception
      handler and the source stays (`KeyboardInterrupt`, `SystemExit` leave the loop).
    - `close()` is called once, when the source is removed; its fds are unwatched and
      its timer cancelled before.
    """

    #: The loop the source is added to (`None` when it is not added).
    loop: Any = None

    def fds(self) -> Iterable[tuple[Any, int]]:
        """The fds to watch now: `(fd, events)` pairs, `events` being `READ`, `WRITE`
        or `READ | WRITE`; `fd` an int or an object with `fileno()`. Default: none."""
        return ()

    def deadline(self) -> float | None:
        """When the source wants a dispatch with `fd=None`, in seconds of the loop's
        clock (`loop.time()`); `None` for no deadline (the default). A time already
        past means "in the next cycle"."""
        return None

    def dispatch(self, fd: int | None, events: int) -> None:
        """Handles one event: `fd` is ready for `events`, or (`fd=None`) the deadline
        has passed."""
        raise NotImplementedError

    def close(self) -> None:
        """Called once when the source is removed from its loop. Default: nothing."""

    def update(self) -> None:
        """Reads `fds()` and `deadline()` again: call it (on the loop's thread) when
        they changed outside a dispatch. Does nothing when the source is not added."""
        registration = _registration_of(self)
        if registration is not None:
            registration.sync(raise_errors=True)

    def remove(self) -> bool:
        """Removes the source from its loop (see `remove_source`); whether it was added."""
        if self.loop is None:
            return False
        return remove_source(self.loop, self)


def add_source(loop: asyncio.AbstractEventLoop, source: Source) -> Source:
    """Adds `source` to `loop` (an `oxloop.Loop`, or any asyncio loop with fd
    watchers): its fds are watched and its deadline set from now on. Returns it.

    Raises `TypeError` for an object that is not a `Source`, `RuntimeError` for a
    closed loop or a source already added (to this loop or another), `ValueError` for
    an invalid fd or events value, or an fd watched already (by another source or by
    `add_reader`/`add_writer`), and `OSError` for an fd the kernel refuses (closed,
    say). Nothing stays watched when it raises.
    """
    if not isinstance(source, Source):
        raise TypeError(f"add_source() wants an oxloop.sources.Source, got {source!r}")
    if loop.is_closed():
        raise RuntimeError("Event loop is closed")
    if _registration_of(source) is not None:
        where = "this loop" if source.loop is loop else f"another loop ({source.loop!r})"
        raise RuntimeError(f"{source!r} is already added to {where}")
    registration = _Registration(loop, source)
    _sources_of(loop)[id(source)] = registration
    source.__dict__["_registration"] = registration
    source.loop = loop
    try:
        registration.sync(raise_errors=True)
    except BaseException:
        registration.forget()
        raise
    return source


def remove_source(loop: asyncio.AbstractEventLoop, source: Source) -> bool:
    """Removes `source` from `loop`: unwatches its fds, cancels its timer, then calls
    its `close()`. Returns whether it was added to `loop`. Safe inside the source's
    own dispatch."""
    registration = _sources_of(loop).get(id(source))
    if registration is None or registration.source is not source:
        return False
    registration.forget()
    source.close()
    return True


def close_sources(loop: asyncio.AbstractEventLoop) -> None:
    """Removes every source of `loop`, newest first, calling each one's `close()`;
    an exception from one goes to the loop's exception handler and the others are
    still closed. `oxloop.Loop.close()` calls it; call it yourself before closing
    another asyncio loop that has sources."""
    for registration in reversed(list(_sources_of(loop).values())):
        source = registration.source
        registration.forget()
        try:
            source.close()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            loop.call_exception_handler(
                {
                    "message": f"Exception in close() of source {source!r}",
                    "exception": exc,
                    "source": source,
                }
            )


def _sources_of(loop) -> dict[int, _Registration]:
    sources = loop.__dict__.get(_SOURCES_ATTR)
    if sources is None:
        sources = loop.__dict__[_SOURCES_ATTR] = {}
    return sources


def _registration_of(source: Source) -> _Registration | None:
    return source.__dict__.get("_registration")


def _fd_number(fd) -> int:
    if isinstance(fd, bool):
        raise ValueError(f"invalid fd {fd!r}")
    if not isinstance(fd, int):
        try:
            fd = fd.fileno()
        except (AttributeError, OSError, ValueError) as exc:
            raise ValueError(f"invalid fd {fd!r} (no usable fileno())") from exc
        if not isinstance(fd, int):
            raise ValueError(f"invalid fd {fd!r}")
    if fd < 0:
        raise ValueError(f"invalid fd {fd}")
    return fd


class _Registration:
    """The loop's record of one added source: what is watched, and the timer."""

    def __init__(self, loop, source: Source) -> None:
        self.loop = loop
        self.source = source
        self.watched: dict[int, int] = {}  # fd -> READ | WRITE
        self.timer = None
        self.when: float | None = None
        self.active = True

    def wanted(self) -> dict[int, int]:
        """`fds()`, checked: fd -> events."""
        wanted: dict[int, int] = {}
        for item in self.source.fds():
            try:
                fd, events_mask = item
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.source!r}: fds() must give (fd, events) pairs, got {item!r}"
                ) from None
            try:
                fd = _fd_number(fd)
            except ValueError as exc:
                raise ValueError(f"{self.source!r}: {exc}") from None
            if (
                isinstance(events_mask, bool)
                or not isinstance(events_mask, int)
                or events_mask not in (READ, WRITE, READ | WRITE)
            ):
                raise ValueError(
                    f"{self.source!r}: invalid events {events_mask!r} for fd {fd} "
                    "(READ, WRITE or READ | WRITE)"
                )
            wanted[fd] = wanted.get(fd, 0) | events_mask
        return wanted

    def sync(self, raise_errors: bool) -> None:
        """Makes the watched fds and the timer what the source asks for. On an error,
        raises it (`raise_errors`) or reports it and removes the source."""
        try:
            self.sync_fds(self.wanted())
            self.sync_deadline(self.source.deadline())
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if raise_errors:
                raise
            self.loop.call_exception_handler(
                {
                    "message": f"Source {self.source!r} removed: its fds() or deadline() failed",
                    "exception": exc,
                    "source": self.source,
                }
            )
            if self.active:
                remove_source(self.loop, self.source)

    def sync_fds(self, wanted: dict[int, int]) -> None:
        loop = self.loop
        taken = {
            fd: other
            for other in _sources_of(loop).values()
            if other is not self
            for fd in other.watched
        }
        for fd in wanted:
            if fd in self.watched:
                continue
            if fd in taken:
                raise ValueError(
                    f"{self.source!r}: fd {fd} is already watched by source {taken[fd].source!r}"
                )
            if _watched_by_loop(loop, fd):
                raise ValueError(
                    f"{self.source!r}: fd {fd} is already watched by the loop "
                    "(add_reader/add_writer or a transport)"
                )
        for fd, old in list(self.watched.items()):
            new = wanted.get(fd, 0)
            if old & READ and not new & READ:
                loop.remove_reader(fd)
            if old & WRITE and not new & WRITE:
                loop.remove_writer(fd)
            if new:
                self.watched[fd] = old & new
            else:
                del self.watched[fd]
        for fd, new in wanted.items():
            old = self.watched.get(fd, 0)
            try:
                if new & READ and not old & READ:
                    loop.add_reader(fd, self.on_ready, fd, READ)
                    old |= READ
                    self.watched[fd] = old
                if new & WRITE and not old & WRITE:
                    loop.add_writer(fd, self.on_ready, fd, WRITE)
                    self.watched[fd] = old | WRITE
            except OSError as exc:
                raise OSError(
                    exc.errno, f"{self.source!r}: fd {fd} cannot be watched: {exc.strerror}"
                ) from exc

    def sync_deadline(self, when: float | None) -> None:
        if when is not None:
            when = float(when)
            if math.isnan(when):
                raise ValueError(f"{self.source!r}: deadline() returned NaN")
        if when == self.when and (when is None or self.timer is not None):
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.when = when
        if when is not None:
            self.timer = self.loop.call_at(when, self.on_deadline)

    def on_ready(self, fd: int, events_mask: int) -> None:
        self.dispatch(fd, events_mask)

    def on_deadline(self) -> None:
        self.timer = None
        self.when = None
        self.dispatch(None, 0)

    def dispatch(self, fd: int | None, events_mask: int) -> None:
        if not self.active:
            return
        try:
            self.source.dispatch(fd, events_mask)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.loop.call_exception_handler(
                {
                    "message": f"Exception in dispatch of source {self.source!r}",
                    "exception": exc,
                    "source": self.source,
                }
            )
        finally:
            if self.active:
                self.sync(raise_errors=False)

    def forget(self) -> None:
        """Unwatches everything and detaches the source (its `close()` is the caller's)."""
        self.active = False
        loop = self.loop
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for fd, watched in self.watched.items():
            if not loop.is_closed():
                if watched & READ:
                    loop.remove_reader(fd)
                if watched & WRITE:
                    loop.remove_writer(fd)
        self.watched = {}
        _sources_of(loop).pop(id(self.source), None)
        self.source.__dict__.pop("_registration", None)
        self.source.loop = None


def _watched_by_loop(loop, fd: int) -> bool:
    """Whether `loop` already watches `fd` through add_reader/add_writer."""
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return False
    try:
        return selector.get_map().get(fd) is not None
    except (KeyError, ValueError, RuntimeError):
        return False


def _update_from_anywhere(source: Source) -> None:
    """`source.update()` on the source's loop: at once when called from that loop's
    callbacks, else through `call_soon_threadsafe`."""
    loop = source.loop
    if loop is None or loop.is_closed():
        return
    if events._get_running_loop() is loop:
        source.update()
    else:
        loop.call_soon_threadsafe(source.update)


# ---------------------------------------------------------------- sched ------------------


class SchedSource(Source):
    """The standard library's `sched.scheduler` as a source: its earliest event is the
    source's deadline, and a dispatch runs what is due (`run(blocking=False)`).

    Events entered from outside a dispatch (from loop callbacks or other threads) move
    the deadline at once: the source wraps the scheduler's `enterabs` (which `enter`
    calls) while it is added. Any `timefunc` works; its times are translated to the
    loop's clock. `close()` puts `enterabs` back and leaves the queue as it is.
    """

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        scheduler_enterabs = scheduler.enterabs

        def enterabs(*args: Any, **kwargs: Any):
            event = scheduler_enterabs(*args, **kwargs)
            _update_from_anywhere(self)
            return event

        self._enterabs = enterabs
        scheduler.enterabs = enterabs

    def __repr__(self) -> str:
        return f"<SchedSource {self.scheduler!r}>"

    def deadline(self) -> float | None:
        queue = self.scheduler.queue
        if not queue or self.loop is None:
            return None
        return self.loop.time() + max(0.0, queue[0].time - self.scheduler.timefunc())

    def dispatch(self, fd: int | None, events: int) -> None:
        self.scheduler.run(blocking=False)

    def close(self) -> None:
        if self.scheduler.__dict__.get("enterabs") is self._enterabs:
            del self.scheduler.enterabs


# ---------------------------------------------------------------- asyncio ----------------


class AsyncioSource(Source):
    """A second, stock asyncio selector loop (`asyncio.SelectorEventLoop`) inside an
    oxloop loop: the source watches the fds registered in its selector and takes its
    next timer as deadline; each dispatch runs exactly one iteration of it without
    blocking (`step()`).

    The foreign loop stays an ordinary asyncio loop: its tasks see it as their running
    loop while it steps. Work given to it from outside its own callbacks reaches it
    through `call_soon_threadsafe` or `asyncio.run_coroutine_threadsafe` (they write to
    its self-pipe, which is one of the watched fds); after a plain `call_soon`,
    `call_later` or `add_reader` on it from outside, call `source.update()`.
    `close()` closes the foreign loop (unless `close_loop=False`): end it by removing
    the source (or closing the oxloop loop), not by closing it while it is hooked, which
    would close fds the oxloop loop still watches.
    """

    def __init__(self, foreign: asyncio.AbstractEventLoop, *, close_loop: bool = True) -> None:
        if hasattr(foreign, "run_once"):
            raise TypeError(
                f"{foreign!r} is an oxloop loop: hook it with OxloopSource (through its fileno())"
            )
        if not isinstance(foreign, asyncio.selector_events.BaseSelectorEventLoop):
            raise TypeError(f"AsyncioSource wants an asyncio selector event loop, got {foreign!r}")
        if foreign.is_closed():
            raise RuntimeError(f"{foreign!r} is closed")
        if foreign.is_running():
            raise RuntimeError(f"{foreign!r} is running")
        self.foreign = foreign
        self.close_loop = close_loop

    def __repr__(self) -> str:
        return f"<AsyncioSource {self.foreign!r}>"

    def fds(self) -> Iterable[tuple[int, int]]:
        if self.foreign.is_closed():
            return []
        return [(key.fd, key.events) for key in self.foreign._selector.get_map().values()]

    def deadline(self) -> float | None:
        foreign = self.foreign
        if foreign.is_closed() or self.loop is None:
            return None
        # What the foreign loop's own iteration (`_run_once`) would wait for.
        if foreign._ready or foreign._stopping:
            return self.loop.time()
        scheduled = foreign._scheduled
        if not scheduled:
            return None
        head = scheduled[0]
        if head._cancelled:
            live = [h._when for h in scheduled if not h._cancelled]
            if not live:
                return None
            when = min(live)
        else:
            when = head._when
        return self.loop.time() + max(0.0, when - foreign.time())

    def dispatch(self, fd: int | None, events: int) -> None:
        self.step()

    def step(self) -> None:
        """Runs one iteration of the foreign loop without blocking, as its running
        loop; the running loop of the caller is put back afterwards."""
        foreign = self.foreign
        if foreign.is_closed():
            return
        outer = events._get_running_loop()
        events._set_running_loop(None)
        try:
            # asyncio's idiom for one iteration: a ready callback (so the selector is
            # polled without blocking) that stops the loop at the end of it.
            foreign.call_soon(foreign.stop)
            foreign.run_forever()
        finally:
            events._set_running_loop(outer)

    def close(self) -> None:
        if self.close_loop and not self.foreign.is_closed() and not self.foreign.is_running():
            self.foreign.close()


# ---------------------------------------------------------------- another oxloop loop ----


class OxloopSource(Source):
    """Another `oxloop.Loop` stepped by this one: the source watches its `fileno()`,
    takes its `next_timeout()` as deadline, and each dispatch runs one cycle of it
    (`run_once(0)`). Both loops run on the same thread, one cycle at a time.
    `close()` closes the inner loop (unless `close_loop=False`)."""

    def __init__(self, inner, *, close_loop: bool = True) -> None:
        if not hasattr(inner, "run_once") or not hasattr(inner, "next_timeout"):
            raise TypeError(f"OxloopSource wants an oxloop.Loop, got {inner!r}")
        if inner.is_closed():
            raise RuntimeError(f"{inner!r} is closed")
        self.inner = inner
        self.close_loop = close_loop

    def __repr__(self) -> str:
        return f"<OxloopSource {self.inner!r}>"

    def fds(self) -> Iterable[tuple[int, int]]:
        if self.inner.is_closed():
            return []
        return [(self.inner.fileno(), READ)]

    def deadline(self) -> float | None:
        if self.inner.is_closed() or self.loop is None:
            return None
        timeout = self.inner.next_timeout()
        return None if timeout is None else self.loop.time() + timeout

    def dispatch(self, fd: int | None, events: int) -> None:
        if not self.inner.is_closed():
            self.inner.run_once(0)

    def close(self) -> None:
        if self.close_loop and not self.inner.is_closed() and not self.inner.is_running():
            self.inner.close()


# ---------------------------------------------------------------- Tk ---------------------


class TkSource(Source):
    """Tkinter's event loop inside an oxloop loop: the source watches Tk's X server
    connection, and each dispatch handles the Tk events that are pending
    (`dooneevent(DONT_WAIT)`, at most `max_events` per dispatch) instead of Tk's
    `mainloop()`.

    Tk tells nobody when its next timer is due, so the deadline is chosen thus: an
    `after_idle` callback pending means now; an `after(ms, ...)` timer pending means
    `poll_interval` seconds from now (a timer runs up to that late); nothing pending
    means no deadline, so an idle Tk costs nothing. Timers Tk's C code sets without
    `after` (an entry's blinking cursor) are only seen with `poll_always=True`. Where the
    X connection cannot be found (not X11), the source polls every `poll_interval`.

    When the Tk root is destroyed, the source removes itself. `close()` destroys the
    root if it still exists (unless `destroy_root=False`).
    """

    def __init__(
        self,
        root,
        *,
        poll_interval: float = 0.01,
        poll_always: bool = False,
        max_events: int = 1000,
        destroy_root: bool = True,
    ) -> None:
        if not hasattr(root, "tk") or not hasattr(root.tk, "dooneevent"):
            raise TypeError(f"TkSource wants a tkinter.Tk, got {root!r}")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be positive")
        self.root = root
        self.poll_interval = float(poll_interval)
        self.poll_always = poll_always
        self.max_events = max_events
        self.destroy_root = destroy_root
        self.display_fd = x_connection_fd(root)
        self._more = False

    def __repr__(self) -> str:
        return f"<TkSource {self.root!r} fd={self.display_fd}>"

    def _root_exists(self) -> bool:
        try:
            return bool(int(self.root.tk.call("winfo", "exists", ".")))
        except Exception:
            return False

    def fds(self) -> Iterable[tuple[int, int]]:
        if self.display_fd is None:
            return []
        return [(self.display_fd, READ)]

    def deadline(self) -> float | None:
        if self.loop is None:
            return None
        now = self.loop.time()
        if self._more:
            return now
        tk = self.root.tk
        pending = tk.splitlist(tk.call("after", "info"))
        kinds = [tk.splitlist(tk.call("after", "info", after_id))[-1] for after_id in pending]
        if "idle" in kinds:
            return now
        if kinds or self.poll_always or self.display_fd is None:
            return now + self.poll_interval
        return None

    def dispatch(self, fd: int | None, events: int) -> None:
        import _tkinter

        tk = self.root.tk
        handled = 0
        while handled < self.max_events and tk.dooneevent(_tkinter.DONT_WAIT):
            handled += 1
        self._more = handled >= self.max_events
        if not self._root_exists():
            self.destroy_root = False
            self.remove()

    def close(self) -> None:
        if self.destroy_root and self._root_exists():
            self.root.destroy()


def x_connection_fd(root) -> int | None:
    """The fd of the X server connection of Tk root `root`, or `None` when Tk does not
    run on X11 or the fd cannot be found. Asked of Tk and Xlib themselves, through the
    libraries `_tkinter` is linked with (`Tk_MainWindow`, whose first field is the
    display, and `XConnectionNumber`)."""
    try:
        if root.tk.call("tk", "windowingsystem") != "x11":
            return None
        import _tkinter
        import ctypes

        library = ctypes.CDLL(_tkinter.__file__)
        main_window = library.Tk_MainWindow
        main_window.restype = ctypes.c_void_p
        main_window.argtypes = [ctypes.c_void_p]
        connection_number = library.XConnectionNumber
        connection_number.restype = ctypes.c_int
        connection_number.argtypes = [ctypes.c_void_p]
        window = main_window(root.tk.interpaddr())
        if not window:
            return None
        display = ctypes.cast(window, ctypes.POINTER(ctypes.c_void_p))[0]
        if not display:
            return None
        fd = connection_number(display)
        os.fstat(fd)
        return fd
    except (AttributeError, OSError, ImportError):
        return None
    except Exception as exc:  # a TclError, for one
        if exc.__class__.__name__ == "TclError":
            return None
        raise
