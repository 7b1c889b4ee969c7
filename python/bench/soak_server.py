"""The Python target of `oxloop soak`: `python soak_server.py TIMEOUT_MS`.

An asyncio.Protocol echo server on the oxloop loop, guarded the way `oxloop soak`'s
Rust protocol server is: write-buffer water marks of 64 KiB / 16 KiB, reading paused
while writing is paused, a connection cut (aborted) when it sends nothing for the
timeout after connecting or when, while writing is paused, its peer takes none of the
buffer for the timeout. A connection whose first bytes are b"OXPANIC!" makes
data_received raise after echoing them (the loop's exception handler counts it).

Prints "listening on HOST:PORT", serves until SIGTERM, then prints one line
"counts {JSON}" with what happened to the connections.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import oxloop

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
PANIC_MAGIC = b"OXPANIC!"

counts = {
    "accepted": 0,
    "open": 0,
    "closed_clean": 0,
    "closed_with_error": 0,
    "idle_cuts": 0,
    "stall_cuts": 0,
    "panics_raised": 0,
    "panics_reported": 0,
    "max_write_buffer": 0,
    "bytes_echoed": 0,
}


class SoakEcho(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.first = b""
        self.idle = None
        self.stall = None

    def connection_made(self, transport) -> None:
        counts["accepted"] += 1
        counts["open"] += 1
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.idle = asyncio.get_running_loop().call_later(self.timeout, self.idle_cut)

    def idle_cut(self) -> None:
        counts["idle_cuts"] += 1
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.transport.write(data)
        counts["bytes_echoed"] += len(data)
        size = self.transport.get_write_buffer_size()
        counts["max_write_buffer"] = max(counts["max_write_buffer"], size)
        if len(self.first) < len(PANIC_MAGIC):
            self.first += data[: len(PANIC_MAGIC) - len(self.first)]
            if self.first == PANIC_MAGIC:
                counts["panics_raised"] += 1
                raise RuntimeError("soak: protocol panic")

    def pause_writing(self) -> None:
        self.transport.pause_reading()
        self.arm_stall_check()

    def arm_stall_check(self) -> None:
        size_then = self.transport.get_write_buffer_size()

        def check() -> None:
            self.stall = None
            if self.transport.is_closing() or self.transport.get_write_buffer_size() <= LOW_WATER:
                return
            if self.transport.get_write_buffer_size() >= size_then:
                counts["stall_cuts"] += 1
                self.transport.abort()
            else:
                self.arm_stall_check()

        self.stall = asyncio.get_running_loop().call_later(self.timeout, check)

    def resume_writing(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        for handle in (self.idle, self.stall):
            if handle is not None:
                handle.cancel()
        counts["open"] -= 1
        counts["closed_clean" if exc is None else "closed_with_error"] += 1


async def main(timeout: float) -> None:
    loop = asyncio.get_running_loop()

    def on_exception(loop, context) -> None:
        exc = context.get("exception")
        if exc is not None and str(exc).startswith("soak:"):
            counts["panics_reported"] += 1
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_exception)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(lambda: SoakEcho(timeout), "127.0.0.1", 0, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    await stop
    server.close()
    await server.wait_closed()
    print("counts " + json.dumps(counts), flush=True)


if __name__ == "__main__":
    oxloop.run(main(int(sys.argv[1]) / 1000))
