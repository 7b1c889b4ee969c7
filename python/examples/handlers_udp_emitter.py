"""My Event Loop's UDP emitter, on oxloop.handlers: a UDP client on the server class.

    python handlers_udp_emitter.py [PORT [COUNT]]

Sends a numbered ping to 127.0.0.1:PORT (default 6666) on a timer whose period changes
each time (`Timeout.reset()`), prints the replies, and stops after COUNT replies
(default 5): destroying the handler cancels the timer it owns.
"""

import sys

from oxloop.handlers import EventLoop, UDPServerHandler

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6666
count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
server = ("127.0.0.1", port)


class Emitter(UDPServerHandler):
    def __init__(self):
        super().__init__(None, "emitter")  # no address: a client, bound on first send
        self.sent = 0
        self.replies = 0
        self.timeout("emit", 0, self.emit)

    def emit(self, timeout):
        self.sent += 1
        self.sendto(server, f"ping {self.sent}".encode())
        timeout.reset(0.02 * (self.sent % 3 + 1))

    def recv_callback(self, addr, datagram):
        print("reply:", datagram.decode(), flush=True)
        self.replies += 1
        if self.replies >= count:
            self.destroy()


Emitter()
EventLoop().loop()
