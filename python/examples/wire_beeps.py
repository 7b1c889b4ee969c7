"""aiowire's second program: four beeps a tenth of a second apart, as one expression.

    python wire_beeps.py

Only the import differs from aiowire's text, plus an `async def main()` to hold the
`async with` block.
"""

import asyncio

import oxloop
from oxloop.wire import Call, EventLoop

prog = (Call(asyncio.sleep, 0.1) >> Call(print, "beep\a")) * 4


async def main():
    async with EventLoop() as ev:
        ev.start(prog)


if __name__ == "__main__":
    oxloop.run(main())
