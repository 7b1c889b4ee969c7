"""oxloop.web: ASGI and WSGI applications served by oxloop's HTTP/1.1 server.

HTTP itself (parsing, limits, keep-alive, pipelining, writing responses) is done in
Rust by oxloop-http on the loop's core; Python sees only the application call.

```python
import oxloop.web

oxloop.web.serve_asgi(app, host="127.0.0.1", port=8000)   # until SIGTERM or SIGINT
oxloop.web.serve_wsgi(app, host="127.0.0.1", port=8000, threads=8)
oxloop.web.serve_wsgi(app, port=8000, green=True)   # green tasks, patched stdlib
```

Inside a running oxloop loop, `await start_asgi(app, ...)` / `await start_wsgi(app, ...)`
return a `Server` whose `shutdown()` stops it gracefully.

Server settings (keyword arguments of every function here): `max_head_bytes` (16 KiB;
larger heads get 431), `max_body_bytes` (8 MiB; 413), `head_timeout`, `body_timeout`
(10 s each; 408), `idle_timeout` (60 s), `max_connections` (10,000), `access_log`
(one line per request on stderr), `reuse_port` (`SO_REUSEPORT`, for several processes
on one port), `server_name` (the `Server` header); for ASGI also
`ws_max_message_bytes` (16 MiB; a larger WebSocket message closes the connection with
1009), `ws_ping_interval` (20 s between the server's pings on an open WebSocket) and
`ws_ping_timeout` (20 s for the pong, else the connection is closed with 1011); `None`
turns either off.

ASGI applications get `http`, `websocket` (RFC 6455: the server answers pings, checks
frames, reassembles fragments and runs the close handshake) and `lifespan` scopes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from . import _oxloop
from ._loop import Loop

__all__ = [
    "FileWrapper",
    "Server",
    "serve_asgi",
    "serve_wsgi",
    "start_asgi",
    "start_wsgi",
]

logger = logging.getLogger("oxloop.web")

_LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}


class FileWrapper:
    """`wsgi.file_wrapper`: a file-like object as a response body. A regular file with
    `fileno()` is sent with `sendfile(2)` from its current position; anything else is
    read in blocks of `blksize` bytes."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class _Lifespan:
    """The ASGI lifespan protocol around a server's life (`mode`: auto, on, off)."""

    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        if not self.supported:
            return
        loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = loop.create_future()
        self.stopped = loop.create_future()
        scope = {"type": "lifespan", "asgi": dict(_LIFESPAN_ASGI), "state": self.state}
        self.task = loop.create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        await asyncio.wait([self.started, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not self.started.done() or self.started.cancelled():
            # The application ended (or failed) without answering the startup.
            if self.mode == "on":
                raise RuntimeError("the ASGI application does not support lifespan")
            self.supported = False
            return
        failure = self.started.result()
        if failure is not None:
            raise RuntimeError(f"ASGI lifespan startup failed: {failure}")

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait([self.stopped, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.stopped.done() and not self.stopped.cancelled() and self.stopped.result():
            logger.error("ASGI lifespan shutdown failed: %s", self.stopped.result())

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            if self.mode == "on" or self.started.done():
                logger.error("Exception in ASGI lifespan", exc_info=exc)
            else:
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
        finally:
            for fut in (self.started, self.stopped):
                if not fut.done():
                    fut.cancel()

    async def _receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self.started.set_result(message.get("message", "") or "failed")
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self.stopped.set_result(message.get("message", "") or "failed")
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")


class Server:
    """A running server of `start_asgi` or `start_wsgi`."""

    def __init__(self, native: Any, lifespan: _Lifespan | None = None) -> None:
        self._native = native
        self._lifespan = lifespan

    @property
    def address(self) -> tuple[str, int]:
        """`(host, port)` listened on."""
        return self._native.address

    def connections(self) -> int:
        """Connections open now."""
        return self._native.connections()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stops listening, lets the requests in progress finish (for up to `timeout`
        seconds), then runs the ASGI lifespan shutdown."""
        loop = asyncio.get_running_loop()
        drained = loop.create_future()

        def done() -> None:
            if not drained.done():
                drained.set_result(None)

        self._native.shutdown(done)
        try:
            await asyncio.wait_for(drained, timeout)
        except asyncio.TimeoutError:
            logger.warning(
                "%d connection(s) still open after %.1f s; closing",
                self._native.connections(),
                timeout,
            )
        if self._lifespan is not None:
            await self._lifespan.shutdown()


def _running_oxloop() -> Loop:
    loop = asyncio.get_running_loop()
    if not isinstance(loop, Loop):
        raise TypeError(f"oxloop.web needs a running oxloop.Loop, not {type(loop).__name__}")
    return loop


async def start_asgi(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    root_path: str = "",
    lifespan: str = "auto",
    **settings: Any,
) -> Server:
    """Serves the ASGI 3 application `app` (`http` and `websocket` scopes) on the
    running oxloop loop: runs the lifespan startup (`lifespan`: "auto", "on" or
    "off"), then listens. A graceful `shutdown()` closes WebSockets with 1001."""
    loop = _running_oxloop()
    life = _Lifespan(app, lifespan)
    await life.startup()
    state = life.state if life.supported else None
    try:
        native = _oxloop._serve_asgi(
            loop, app, host, port, logger.error, root_path, state, settings
        )
    except BaseException:
        # Not serving after all (the address is taken, a setting is wrong): the
        # application's startup is undone as a shutdown would undo it.
        await life.shutdown()
        raise
    return Server(native, life)


async def start_wsgi(
    app: Callable[..., Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    threads: int = 8,
    green: bool = False,
    root_path: str = "",
    multiprocess: bool = False,
    **settings: Any,
) -> Server:
    """Serves the WSGI (PEP 3333) application `app` on the running oxloop loop, the
    application running on `threads` threads, or with `green=True` in one green task
    per request on the loop's thread (`oxloop.green`; blocking calls must be green
    ones, or patched with `oxloop.green.patch_all()`, which this does not do). With
    `threads=0` the application is called on the loop's own thread as each request
    arrives, as bjoern calls it: no hand-over to a thread, but an application that
    blocks holds up every connection; the request body is read whole (up to
    `max_body_bytes`) before the call, and a streamed response is never held back."""
    if threads < 0:
        raise ValueError(f"threads must be 0 or more, not {threads}")
    loop = _running_oxloop()
    runner = None
    if green:
        from .green._serving import wsgi_runner

        runner = wsgi_runner(loop)
    base = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": threads > 1 and not green,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
    native = _oxloop._serve_wsgi(
        loop, app, host, port, threads, logger.error, root_path, FileWrapper, base, settings, runner
    )
    return Server(native)


async def _serve_until_signal(start: Any, graceful_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    server = await start
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = server.address
    logger.info("serving on http://%s:%d", host, port)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    logger.info("shutting down")
    await server.shutdown(graceful_timeout)


def _run(start: Any, graceful_timeout: float) -> None:
    from . import run

    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    run(_serve_until_signal(start, graceful_timeout))


def serve_asgi(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    root_path: str = "",
    lifespan: str = "auto",
    graceful_timeout: float = 30.0,
    **settings: Any,
) -> None:
    """Serves the ASGI application `app` on a new oxloop loop until SIGTERM or SIGINT,
    then shuts down gracefully (requests in progress get `graceful_timeout` seconds)."""
    _run(
        start_asgi(app, host, port, root_path=root_path, lifespan=lifespan, **settings),
        graceful_timeout,
    )


def serve_wsgi(
    app: Callable[..., Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    threads: int = 8,
    green: bool = False,
    root_path: str = "",
    graceful_timeout: float = 30.0,
    **settings: Any,
) -> None:
    """Serves the WSGI application `app` on a new oxloop loop until SIGTERM or SIGINT,
    then shuts down gracefully (requests in progress get `graceful_timeout` seconds).
    With `green=True` each request runs in a green task on the loop's thread, after
    `oxloop.green.patch_all()` (call it before importing the application, so that
    names it copies from `socket`, `time` and the like are the green ones)."""
    if green:
        from . import green as green_tasks

        green_tasks.patch_all()
    _run(
        start_wsgi(app, host, port, threads=threads, green=green, root_path=root_path, **settings),
        graceful_timeout,
    )
