"""Several event loops in one: a `sched.scheduler` and a stock asyncio loop hooked
into an oxloop loop as sources (`oxloop.sources`), all on one thread, with no thread
and no polling. Closing the oxloop loop closes the hooked ones."""

import asyncio
import sched
import time

import oxloop
from oxloop.sources import AsyncioSource, SchedSource, add_source


def main() -> None:
    loop = oxloop.new_event_loop()

    # The standard library's scheduler: its events run when they are due.
    scheduler = sched.scheduler(time.monotonic)
    add_source(loop, SchedSource(scheduler))

    # A second asyncio loop (the standard library's own), stepped by the oxloop loop.
    foreign = asyncio.SelectorEventLoop()
    add_source(loop, AsyncioSource(foreign))

    async def on_foreign() -> str:
        await asyncio.sleep(0.02)
        return f"asyncio task ran on {type(asyncio.get_running_loop()).__name__}"

    future = asyncio.run_coroutine_threadsafe(on_foreign(), foreign)

    async def on_oxloop() -> None:
        done = loop.create_future()
        scheduler.enter(0.01, 0, lambda: print("sched event ran"))
        scheduler.enter(0.03, 0, done.set_result, (None,))
        print(await asyncio.wrap_future(future))
        await done
        print(f"oxloop task ran on {type(asyncio.get_running_loop()).__name__}")

    loop.run_until_complete(on_oxloop())
    loop.close()
    print("closed:", "asyncio loop" if foreign.is_closed() else "nothing")


if __name__ == "__main__":
    main()
