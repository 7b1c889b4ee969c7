"""aiowire's first program, as its documentation writes it, on oxloop.wire.

    python wire_show_event.py

Two `show_event` wires share the global `event` counter: each run bumps it, sleeps
`event * 0.15` s, prints it and, while it is below 5, hands on `show_event` again. The
one-second timeout of the `EventLoop` cancels the wire still sleeping when it passes.

Only the import differs from aiowire's text, plus what that text leaves out to be a
program: the imports it uses, `global event`, and an `async def main()` to hold the
`async with` block.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Optional

import oxloop
from oxloop.wire import EventLoop

event = 0


async def show_event(ev) -> Optional[Callable[[EventLoop], Awaitable]]:  # noqa: UP045
    global event
    print("Running...")
    event += 1
    await asyncio.sleep(event * 0.15)
    print(f"Event {event}")
    if event < 5:
        return show_event


async def main():
    async with EventLoop(timeout=1) as event:
        event.start(show_event)
        event.start(show_event)


if __name__ == "__main__":
    oxloop.run(main())
