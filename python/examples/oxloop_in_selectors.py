"""An oxloop loop driven by a hand-written `selectors` loop.

The host owns the program's main loop: it waits on its own fds and on the oxloop
loop's `fileno()`, for at most `next_timeout()` seconds, and gives the oxloop loop one
cycle (`run_once(0)`) whenever that fd is readable or the timeout has passed. asyncio
code (a task, a TCP echo over loopback, `asyncio.sleep`) runs on the oxloop loop
meanwhile, and the host's own fd is served by the host.
"""

import asyncio
import selectors
import socket

import oxloop


async def echo_once(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    answer = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return answer


async def main(done: list) -> None:
    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print("oxloop: echo", (await echo_once(port)).decode().strip())
    await asyncio.sleep(0.02)
    print("oxloop: slept on an oxloop timer")
    server.close()
    await server.wait_closed()
    done.append(True)


def host() -> None:
    loop = oxloop.new_event_loop()
    selector = selectors.DefaultSelector()
    selector.register(loop.fileno(), selectors.EVENT_READ, "oxloop")
    # The host's own fd: a socket pair it serves itself.
    mine, other = socket.socketpair()
    selector.register(mine, selectors.EVENT_READ, "host")
    other.send(b"host data")

    done: list = []
    loop.create_task(main(done))
    cycles = 0
    while not done:
        for key, _ in selector.select(loop.next_timeout()):
            if key.data == "host":
                print("host: read", mine.recv(100).decode())
        loop.run_once(0)  # one cycle: fds ready, timers due, callbacks ready
        cycles += 1
    # A busy host would have run thousands of cycles during the 20 ms sleep.
    print("host: done in", "under 100" if cycles < 100 else f"{cycles}", "cycles (no busy polling)")

    selector.close()
    mine.close()
    other.close()
    loop.close()


if __name__ == "__main__":
    host()
