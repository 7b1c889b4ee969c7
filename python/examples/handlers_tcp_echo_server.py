"""My Event Loop's TCP echo server, on oxloop.handlers.

    python handlers_tcp_echo_server.py [PORT [COUNT]]

Listens on 127.0.0.1:PORT (default 6666; 0 picks a free port) and sends every byte
back. Each connection is closed after 60 s without data (a Timeout owned by its
handler, restarted on every message). With COUNT, the server stops listening once it
has echoed COUNT lines, and `loop()` returns when the last connection closes.
"""

import sys

from oxloop.handlers import Log, TCPListener, TCPServerEventLoop, TCPServerHandler

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6666
count = int(sys.argv[2]) if len(sys.argv) > 2 else None
echoed = 0


class EchoHandler(TCPServerHandler):
    def __init__(self, addr, sock):
        super().__init__(addr, sock)
        self.log_info("connected")
        self.idle = self.timeout("idle", 60, self.idle_callback)

    def idle_callback(self, timeout):
        self.log_info("idle for too long")
        self.destroy()

    def recv_callback(self, data):
        global echoed
        self.idle.restart()
        self.send(data)
        echoed += data.count(b"\n")
        if count is not None and echoed >= count and server.listener.alive():
            server.listener.destroy()  # no new connections

    def shutdown_callback(self):
        self.log_info("closed by the peer")
        self.destroy()


Log.set_level(Log.INFO)
server = TCPServerEventLoop(("127.0.0.1", port), TCPListener, EchoHandler)
print(f"listening on port {server.listener.address[1]}", flush=True)
server.loop()
print(f"echoed {echoed} lines")
