"""An asyncio echo server and a client on oxloop's loop: `python echo.py`.

The server echoes each line back in upper case; the client sends three lines, prints
the answers and closes. Everything is plain asyncio code: only `oxloop.run` differs.
"""

import asyncio

import oxloop


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        reader, writer = await asyncio.open_connection(host, port)
        for word in ("hello", "from", "oxloop"):
            writer.write(f"{word}\n".encode())
            print((await reader.readline()).decode().strip())
        writer.close()
        await writer.wait_closed()
    print(f"loop: {type(asyncio.get_running_loop()).__module__}")


if __name__ == "__main__":
    oxloop.run(main())
