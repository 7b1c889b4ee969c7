"""oxloop.green against gevent, in one run:

1. spawn + join of 100,000 empty tasks,
2. 500,000 `sleep(0)` switches between 10 tasks,
3. a green echo server's CPU per message: the server in its own process, the load
   (64-byte ping-pong over several connections) from another process; the server's
   user + system CPU (from /proc) divided by the messages echoed,
4. the same ping-pong between two green tasks over a socket pair in one process (CPU
   per round trip): the library's own cost, without the other process's wake-ups.

1 and 2 are timed in CPU seconds of the process (`time.process_time`), which a shared
machine's load disturbs less than wall time; a rate is the inverse of that time.

    python python/bench/green_bench.py [--messages 100000] [--connections 10] [--rounds 2]

gevent is the peer: install it into the benchmark's venv (`pip install gevent`); it is
skipped with a note when missing. Use a release build of oxloop (`maturin develop
--release`). Not part of the tests.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import time

SPAWNS = 100_000
SWITCH_TASKS = 10
SWITCHES_PER_TASK = 50_000


def _nothing():
    pass


def _switcher(sleep, n):
    for _ in range(n):
        sleep(0)


def bench_oxloop():
    from oxloop import green

    t0 = time.process_time()
    tasks = [green.spawn(_nothing) for _ in range(SPAWNS)]
    for task in tasks:
        task.join()
    spawn = time.process_time() - t0
    del tasks
    t0 = time.process_time()
    tasks = [green.spawn(_switcher, green.sleep, SWITCHES_PER_TASK) for _ in range(SWITCH_TASKS)]
    for task in tasks:
        task.join()
    switch = time.process_time() - t0
    return spawn, switch


def bench_gevent():
    import gevent

    t0 = time.process_time()
    tasks = [gevent.spawn(_nothing) for _ in range(SPAWNS)]
    for task in tasks:
        task.join()
    spawn = time.process_time() - t0
    del tasks
    t0 = time.process_time()
    tasks = [gevent.spawn(_switcher, gevent.sleep, SWITCHES_PER_TASK) for _ in range(SWITCH_TASKS)]
    for task in tasks:
        task.join()
    switch = time.process_time() - t0
    return spawn, switch


PINGPONGS = 100_000


def pingpong(kind: str) -> float:
    """CPU seconds per round trip between two tasks over a Unix socket pair."""
    if kind == "oxloop":
        from oxloop import green

        spawn, socketpair = green.spawn, green.socketpair
    else:
        import gevent
        import gevent.socket

        spawn, socketpair = gevent.spawn, gevent.socket.socketpair
    a, b = socketpair()

    def echo():
        while True:
            data = b.recv(65536)
            if not data:
                break
            b.sendall(data)

    def client():
        message = b"x" * 64
        for _ in range(PINGPONGS):
            a.sendall(message)
            a.recv(65536)
        a.close()

    t0 = time.process_time()
    server, talker = spawn(echo), spawn(client)
    talker.join()
    server.join()
    return (time.process_time() - t0) / PINGPONGS


# The echo server (run as a child process: `serve oxloop|gevent`).
def serve(kind: str) -> None:
    if kind == "oxloop":
        from oxloop import green as lib

        sock_mod, spawn = lib, lib.spawn
    else:
        import gevent
        from gevent import socket as sock_mod

        spawn = gevent.spawn

    def echo(conn):
        recv, sendall = conn.recv, conn.sendall
        while True:
            data = recv(65536)
            if not data:
                break
            sendall(data)
        conn.close()

    server = sock_mod.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        spawn(echo, conn)


# The load (run as a child process: `load PORT CONNECTIONS MESSAGES`).
def load(port: int, connections: int, messages: int) -> None:
    payload = b"x" * 64
    sel = selectors.DefaultSelector()
    left = [messages]
    conns = []
    for _ in range(connections):
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setblocking(False)
        conns.append(c)
        sel.register(c, selectors.EVENT_READ, [0])
        c.send(payload)
        left[0] -= 1
    pending = connections
    while pending:
        for key, _ in sel.select():
            c, got = key.fileobj, key.data
            got[0] += len(c.recv(65536))
            if got[0] >= 64:
                got[0] -= 64
                if left[0] > 0:
                    left[0] -= 1
                    c.send(payload)
                else:
                    sel.unregister(c)
                    pending -= 1
    for c in conns:
        c.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echo_cpu_per_message(kind: str, connections: int, messages: int) -> float:
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", kind], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        # Warm up, then measure.
        subprocess.run(
            [sys.executable, __file__, "load", str(port), str(connections), "2000"], check=True
        )
        before = _cpu_seconds(server.pid)
        subprocess.run(
            [sys.executable, __file__, "load", str(port), str(connections), str(messages)],
            check=True,
        )
        after = _cpu_seconds(server.pid)
    finally:
        server.kill()
        server.wait()
    return (after - before) / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    try:
        import gevent  # noqa: F401

        peers = ["oxloop", "gevent"]
    except ImportError:
        print("note: gevent is not installed here (pip install gevent): oxloop alone")
        peers = ["oxloop"]

    results: dict[str, dict[str, float]] = {p: {} for p in peers}
    for _ in range(args.rounds):
        for peer in peers:
            # Each in a fresh interpreter, so neither inherits the other's state.
            out = subprocess.run(
                [sys.executable, __file__, "tasks", peer], capture_output=True, text=True
            )
            if out.returncode:
                raise SystemExit(out.stderr)
            spawn, switch = map(float, out.stdout.split())
            best = results[peer]
            best["spawn"] = min(best.get("spawn", spawn), spawn)
            best["switch"] = min(best.get("switch", switch), switch)
            cpu = echo_cpu_per_message(peer, args.connections, args.messages)
            best["echo"] = min(best.get("echo", cpu), cpu)
            out = subprocess.run(
                [sys.executable, __file__, "pingpong", peer], capture_output=True, text=True
            )
            if out.returncode:
                raise SystemExit(out.stderr)
            cpu = float(out.stdout)
            best["pingpong"] = min(best.get("pingpong", cpu), cpu)

    print(f"{'':32} " + " ".join(f"{p:>12}" for p in peers) + "   oxloop vs gevent")
    rows = [
        ("spawn+join 100,000 (CPU ms)", "spawn", 1e3, "rate"),
        (f"sleep(0) x {SWITCH_TASKS * SWITCHES_PER_TASK:,} (CPU ms)", "switch", 1e3, "rate"),
        ("echo server CPU / message (µs)", "echo", 1e6, "cpu"),
        ("in-process ping-pong (µs CPU)", "pingpong", 1e6, "cpu"),
    ]
    for label, key, scale, kind in rows:
        cells = " ".join(f"{results[p][key] * scale:12.2f}" for p in peers)
        ratio = ""
        if "gevent" in results:
            r = results["gevent"][key] / results["oxloop"][key]
            ratio = f"{r:.2f}x gevent's rate" if kind == "rate" else f"{1 / r:.2f}x gevent's CPU"
        print(f"{label:32} {cells}   {ratio}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        load(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "pingpong":
        print(pingpong(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "tasks":
        spawn_s, switch_s = bench_oxloop() if sys.argv[2] == "oxloop" else bench_gevent()
        print(spawn_s, switch_s)
    else:
        main()
