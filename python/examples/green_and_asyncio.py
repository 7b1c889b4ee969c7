"""asyncio and green tasks on one loop, in one thread.

An asyncio server (`asyncio.start_server`) answers; blocking-style green clients
(plain socket calls) talk to it, started from the asyncio side with
`await oxloop.green.run(...)`; a green task in turn waits for an asyncio coroutine
with `oxloop.green.wait(...)`.

    python green_and_asyncio.py
"""

import asyncio

import oxloop
from oxloop import green


async def handle(reader, writer):
    while line := await reader.readline():
        writer.write(b"asyncio says " + line)
        await writer.drain()
    writer.close()


def green_client(port, n):
    with green.create_connection(("127.0.0.1", port)) as conn, conn.makefile("rb") as lines:
        conn.sendall(b"hello %d\n" % n)
        reply = lines.readline().decode().strip()
    later = green.wait(asyncio.sleep(0.01, result="and waited for asyncio"))
    return f"{reply} {later}"


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    replies = await asyncio.gather(*(green.run(green_client, port, n) for n in range(3)))
    for reply in replies:
        print(reply)
    server.close()
    await server.wait_closed()
    print("loop:", type(asyncio.get_running_loop()).__module__)


if __name__ == "__main__":
    oxloop.run(main())
