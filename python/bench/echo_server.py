"""An echo server for the benchmarks: `python echo_server.py LOOP API [--exit-after N]`.

LOOP is oxloop, uvloop or asyncio; API is `protocol` (an asyncio.Protocol echoing in
data_received), `buffered` (an asyncio.BufferedProtocol) or `streams`
(asyncio.start_server with reader.read / writer.write). Prints "listening on
HOST:PORT", then serves until N connections have closed (default: for ever).
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Echo(asyncio.Protocol):
    def __init__(self, done) -> None:
        self.done = done

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self.done()


class BufferedEcho(asyncio.BufferedProtocol):
    def __init__(self, done) -> None:
        self.done = done
        self.buffer = bytearray(256 * 1024)
        self.view = memoryview(self.buffer)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int):
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(self.view[:nbytes])

    def connection_lost(self, exc) -> None:
        self.done()


async def serve(api: str, exit_after: int | None) -> None:
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    closed = 0

    def done() -> None:
        nonlocal closed
        closed += 1
        if exit_after is not None and closed >= exit_after and not finished.done():
            finished.set_result(None)

    if api == "streams":

        async def handle(reader, writer):
            try:
                while data := await reader.read(256 * 1024):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()
                done()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
    else:
        cls = Echo if api == "protocol" else BufferedEcho
        server = await loop.create_server(lambda: cls(done), "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    await finished
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=["oxloop", "uvloop", "asyncio"])
    parser.add_argument("api", choices=["protocol", "buffered", "streams"])
    parser.add_argument("--exit-after", type=int)
    args = parser.parse_args()
    loop = new_loop(args.loop)
    try:
        loop.run_until_complete(serve(args.api, args.exit_after))
    finally:
        loop.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
