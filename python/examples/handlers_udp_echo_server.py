"""My Event Loop's UDP echo server, on oxloop.handlers.

    python handlers_udp_echo_server.py [PORT [COUNT]]

Sends every datagram back to where it came from, on 127.0.0.1:PORT (default 6666;
0 picks a free port). With COUNT it stops after echoing COUNT datagrams.
"""

import sys

from oxloop.handlers import EventLoop, UDPServerHandler

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6666
count = int(sys.argv[2]) if len(sys.argv) > 2 else None
echoed = 0


class UDPEcho(UDPServerHandler):
    def recv_callback(self, addr, datagram):
        global echoed
        self.sendto(addr, datagram)
        echoed += 1
        if count is not None and echoed >= count:
            self.destroy()


server = UDPEcho(("127.0.0.1", port))
print(f"listening on port {server.address[1]}", flush=True)
EventLoop().loop()
print(f"echoed {echoed} datagrams")
