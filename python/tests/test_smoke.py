"""The smallest end-to-end check: oxloop.run drives a sleep, a future and a TCP echo."""

import asyncio

import oxloop


async def _sleep_future_echo() -> tuple[str, bytes, type]:
    await asyncio.sleep(0.01)

    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_soon(future.set_result, "done")
    result = await future

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello oxloop\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
    return result, line, type(loop)


def test_sleep_future_and_tcp_echo() -> None:
    result, line, loop_type = oxloop.run(asyncio.wait_for(_sleep_future_echo(), timeout=10))
    assert result == "done"
    assert line == b"hello oxloop\n"
    assert loop_type is oxloop.Loop
