"""My Event Loop's TCP echo client, on oxloop.handlers.

    python handlers_tcp_echo_client.py [PORT [COUNT]]

Connects to 127.0.0.1:PORT (default 6666) without blocking; while nobody listens it
tries again every 0.2 s (`Timeout.restart()`). Once connected it sends COUNT lines
(default 5), each after the echo of the one before, prints the echoes and closes.
"""

import sys

from oxloop.handlers import EventLoop, TCPClientHandler, Timeout

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6666
count = int(sys.argv[2]) if len(sys.argv) > 2 else 5


class EchoClient(TCPClientHandler):
    def __init__(self, addr):
        super().__init__(addr)
        self.sent = 0
        self.received = b""

    def connection_callback(self, ok):
        if ok:
            self.log_info("connected")
            self.send_next()
        else:
            self.log_info("no server yet; trying again")
            retry.restart()

    def send_next(self):
        self.sent += 1
        self.send(f"message {self.sent}\n".encode())

    def recv_callback(self, data):
        self.received += data
        while b"\n" in self.received:
            line, self.received = self.received.split(b"\n", 1)
            print("echo:", line.decode(), flush=True)
            if self.sent < count:
                self.send_next()
            else:
                self.destroy()


def connect(timeout):
    EchoClient(("127.0.0.1", port))


retry = Timeout.new("connect", 0.2, connect)
EventLoop().loop()
