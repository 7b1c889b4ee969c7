"""A green echo server: one task per connection, written as blocking code.

Each connection is served by its own green task with plain `accept`, `recv` and
`sendall` calls; they switch to the oxloop loop instead of blocking, so many
connections run at once in one thread. Three green clients talk to it here.

    python green_echo_server.py
"""

from oxloop import green


def serve(conn):
    with conn, conn.makefile("rb") as lines:
        for line in lines:  # fast line-buffered reading
            conn.sendall(line.upper())


def accept_forever(server):
    while True:
        conn, _ = server.accept()
        green.spawn(serve, conn)


def client(address, word):
    with green.create_connection(address) as conn, conn.makefile("rb") as lines:
        conn.sendall(word.encode() + b"\n")
        return lines.readline().decode().strip()


def main():
    server = green.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(100)
    acceptor = green.spawn(accept_forever, server)
    clients = [green.spawn(client, server.getsockname(), w) for w in ("green", "echo", "server")]
    for task in clients:
        task.join()
        print(task.result())
    acceptor.kill()
    acceptor.join()
    server.close()
    print("done")


if __name__ == "__main__":
    main()
