"""oxloop: a complete asyncio event loop driven by the oxloop core (Rust).

```python
import asyncio, oxloop

oxloop.run(main())                                        # like asyncio.run
with asyncio.Runner(loop_factory=oxloop.new_event_loop) as runner:
    runner.run(main())
oxloop.install()   # the asyncio policy hands out oxloop loops (older code)
```
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._loop import EventLoopPolicy, Loop

__all__ = ["EventLoopPolicy", "Loop", "install", "new_event_loop", "run"]
__version__ = "0.1.0"

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """A new `oxloop.Loop` (use as `loop_factory`)."""
    return Loop()


def install() -> None:
    """Makes asyncio's policy hand out oxloop loops (`asyncio.new_event_loop()`,
    `asyncio.run()` before Python 3.12's `loop_factory`)."""
    with warnings.catch_warnings():
        # Policies are deprecated from Python 3.14 on; installing one still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Runs `main` on a new oxloop loop and closes it, as `asyncio.run` does."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_310(main, debug)


def _run_310(main: Coroutine[Any, Any, _T], debug: bool | None) -> _T:
    """`asyncio.run` for Python 3.10, which has no `Runner`."""
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("oxloop.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            for task in pending:
                if not task.cancelled() and task.exception() is not None:
                    loop.call_exception_handler(
                        {
                            "message": "unhandled exception during oxloop.run() shutdown",
                            "exception": task.exception(),
                            "task": task,
                        }
                    )
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
