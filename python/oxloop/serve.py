"""`python -m oxloop.serve module:app`: serves an ASGI or WSGI application.

```sh
python -m oxloop.serve myapp:app --interface wsgi --host 127.0.0.1 --port 8000 --workers 2
python -m oxloop.serve myapp:app --interface asgi
python -m oxloop.serve myapp:app --interface wsgi --green
```

With `--workers N` (N > 1) this process supervises N worker processes that listen on
the same port (`SO_REUSEPORT`): SIGTERM or SIGINT is passed on to them (each finishes
its requests in progress, for up to `--graceful-timeout` seconds), and a worker that
dies otherwise is started again.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

logger = logging.getLogger("oxloop.serve")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m oxloop.serve", description="Serve an ASGI or WSGI application."
    )
    p.add_argument("app", help="the application, as module:attribute")
    p.add_argument(
        "--interface",
        choices=("auto", "asgi", "wsgi"),
        default="auto",
        help="auto: ASGI when the application is a coroutine function (default)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="processes (SO_REUSEPORT)")
    p.add_argument(
        "--threads",
        type=int,
        default=8,
        help="WSGI worker threads per process; 0: the application runs on the loop's own "
        "thread (fastest, but an application that blocks holds up every connection)",
    )
    p.add_argument(
        "--green",
        action="store_true",
        help="WSGI: one green task per request on the loop's thread, after "
        "oxloop.green.patch_all() (instead of threads)",
    )
    p.add_argument("--root-path", default="", help="ASGI root_path / WSGI SCRIPT_NAME")
    p.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--app-dir", default=".", help="put this directory on sys.path first")
    p.add_argument("--graceful-timeout", type=float, default=30.0)
    p.add_argument("--access-log", action="store_true", help="one line per request")
    p.add_argument("--max-head-bytes", type=int, default=16 * 1024)
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument("--head-timeout", type=float, default=10.0)
    p.add_argument("--body-timeout", type=float, default=10.0)
    p.add_argument("--idle-timeout", type=float, default=60.0)
    p.add_argument("--max-connections", type=int, default=10_000)
    p.add_argument(
        "--ws-max-message-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="ASGI WebSocket: larger messages close the connection with 1009",
    )
    p.add_argument(
        "--ws-ping-interval",
        type=_seconds_or_none,
        default=20.0,
        help="ASGI WebSocket: seconds between the server's pings ('none': no pings)",
    )
    p.add_argument(
        "--ws-ping-timeout",
        type=_seconds_or_none,
        default=20.0,
        help="ASGI WebSocket: seconds a ping waits for its pong before the connection "
        "is closed with 1011 ('none': no limit)",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    return p


def _seconds_or_none(text: str) -> float | None:
    """A command-line duration: seconds, or 'none'."""
    return None if text.lower() == "none" else float(text)


def load_app(spec: str, app_dir: str = ".") -> Any:
    """The object named by `module:attribute` (attribute defaults to `app`)."""
    if app_dir is not None:
        sys.path.insert(0, os.path.abspath(app_dir))
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in (attr or "app").split("."):
        obj = getattr(obj, part)
    return obj


def is_asgi(app: Any) -> bool:
    """Whether `app` looks like an ASGI application (a coroutine function)."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - instances with async __call__
    return inspect.iscoroutinefunction(call)


def _serve_one(args: argparse.Namespace) -> None:
    from . import web

    if args.green:
        # Before the application is imported, so that names it copies are patched.
        from . import green

        green.patch_all()
    app = load_app(args.app, args.app_dir)
    settings: dict[str, Any] = {
        "max_head_bytes": args.max_head_bytes,
        "max_body_bytes": args.max_body_bytes,
        "head_timeout": args.head_timeout,
        "body_timeout": args.body_timeout,
        "idle_timeout": args.idle_timeout,
        "max_connections": args.max_connections,
        "access_log": args.access_log,
        "reuse_port": args.reuse_port,
    }
    interface = args.interface
    if interface == "auto":
        interface = "asgi" if is_asgi(app) else "wsgi"
    if interface == "asgi" and args.green:
        raise SystemExit("--green is for WSGI applications")
    if interface == "asgi":
        web.serve_asgi(
            app,
            args.host,
            args.port,
            root_path=args.root_path,
            lifespan=args.lifespan,
            graceful_timeout=args.graceful_timeout,
            ws_max_message_bytes=args.ws_max_message_bytes,
            ws_ping_interval=args.ws_ping_interval,
            ws_ping_timeout=args.ws_ping_timeout,
            **settings,
        )
    else:
        web.serve_wsgi(
            app,
            args.host,
            args.port,
            threads=args.threads,
            green=args.green,
            root_path=args.root_path,
            graceful_timeout=args.graceful_timeout,
            multiprocess=args.reuse_port,
            **settings,
        )


def _supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """Runs `args.workers` worker processes and restarts those that die."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.port == 0:
        logger.error("--workers needs a fixed --port")
        return 2
    command = [sys.executable, "-m", "oxloop.serve", *argv, "--workers", "1", "--reuse-port"]
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    workers: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(args.workers):
        workers.append(subprocess.Popen(command))
    logger.info("supervising %d workers on port %d", args.workers, args.port)
    restarts: list[float] = []
    gave_up = False
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(workers):
            code = proc.poll()
            if code is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 10]
            if len(restarts) >= 5 * args.workers:
                logger.error("workers keep dying; giving up")
                gave_up = True
                stop(signal.SIGTERM, None)
                break
            restarts.append(now)
            logger.warning("worker %d exited with %s; starting another", proc.pid, code)
            workers[i] = subprocess.Popen(command)
    deadline = time.monotonic() + args.graceful_timeout + 5
    for proc in workers:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 1 if gave_up else 0


def main(argv: list[str] | None = None) -> int:
    """The command line: serve until SIGTERM or SIGINT."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.workers > 1:
        return _supervise(args, argv)
    _serve_one(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
