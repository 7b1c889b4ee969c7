"""A WebSocket chat room served by oxloop: `python websocket_chat.py`.

The room is a plain ASGI application: every text message a member sends goes to every
member, with the sender's name (`?name=` in the URL). Run as it is, the program serves
the room and two `websockets` clients on one oxloop loop, has them talk, and shuts the
server down (the last member is told, with close code 1001). With `--serve [PORT]` it
only serves, until Ctrl-C: try it with `python -m websockets ws://127.0.0.1:8000/?name=you`.
"""

import sys
from urllib.parse import parse_qs

import oxloop
import oxloop.web

members: dict[str, object] = {}  # name -> the member's `send`


async def broadcast(text: str) -> None:
    for send in list(members.values()):
        try:
            await send({"type": "websocket.send", "text": text})
        except OSError:
            pass  # that member just left


async def chat_room(scope, receive, send) -> None:
    """The ASGI application: one call per member."""
    if scope["type"] != "websocket":  # lifespan and plain HTTP are not needed here
        return
    query = parse_qs(scope["query_string"].decode())
    name = query.get("name", ["anonymous"])[0]
    assert (await receive())["type"] == "websocket.connect"
    if name in members:
        await send({"type": "websocket.close", "code": 4000, "reason": "name taken"})
        return
    await send({"type": "websocket.accept"})
    members[name] = send
    await broadcast(f"{name} joined ({len(members)} online)")
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text"):
                await broadcast(f"{name}: {message['text']}")
    finally:
        del members[name]
        await broadcast(f"{name} left")


async def demo() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    server = await oxloop.web.start_asgi(chat_room, port=0, lifespan="off")
    host, port = server.address
    url = f"ws://{host}:{port}/"
    bob = await connect(url + "?name=bob")
    print(await bob.recv())
    async with connect(url + "?name=alice") as alice:
        print(await bob.recv())
        await alice.send("hello from alice")
        print(await bob.recv())
        await bob.send("hi alice")
        print(await bob.recv())
        for _ in range(2):  # her own join and message
            await alice.recv()
        print("alice got:", await alice.recv())
    print(await bob.recv())
    await server.shutdown(timeout=5)
    try:
        await bob.recv()
    except ConnectionClosed as closed:
        print(f"bob was told: {closed.rcvd.code} {closed.rcvd.reason}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
        oxloop.web.serve_asgi(chat_room, port=port, lifespan="off")
    else:
        oxloop.run(demo())
