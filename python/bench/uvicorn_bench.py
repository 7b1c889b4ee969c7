"""uvicorn serving a "hello" ASGI app on oxloop, uvloop and asyncio, measured with wrk.

    python python/bench/uvicorn_bench.py [--duration 5] [--connections 100] [--loops ...]

Each server runs alone, pinned to CPU 0, with uvicorn's httptools parser (h11 when
httptools is absent); wrk runs pinned to CPU 1. Prints requests/s and the server's CPU
time per request for each loop, and oxloop's ratios. The app, uvicorn and wrk are the
same for every loop: only the event loop differs. Needs wrk and uvicorn; a loop that is
not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

SERVER = r"""
import asyncio, sys
import uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})

kind, port, http = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "oxloop":
    import oxloop
    factory = oxloop.new_event_loop
elif kind == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
else:
    factory = asyncio.new_event_loop
config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http=http,
                        log_level="warning", access_log=False, lifespan="off")
server = uvicorn.Server(config)
loop = factory()
asyncio.set_event_loop(loop)
print("ready", flush=True)
loop.run_until_complete(server.serve())
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, port: int, http: str, duration: int, connections: int):
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-c", SERVER, kind, str(port), http],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if server.stdout.readline().strip() != "ready":
            return None, server.stderr.read().strip().splitlines()[-1:]
        for _ in range(100):  # until uvicorn listens
            probe = subprocess.run(
                ["wrk", "-t1", "-c1", "-d1s", f"http://127.0.0.1:{port}/"],
                capture_output=True,
                text=True,
            )
            if "Requests/sec" in probe.stdout:
                break
            time.sleep(0.1)
        before = cpu_seconds(server.pid)
        out = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu = cpu_seconds(server.pid) - before
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
        if re.search(r"Non-2xx|Socket errors", out):
            return None, [f"wrk reported errors: {out}"]
        return (rate, cpu / max(total, 1)), None
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--loops", default="oxloop,uvloop,asyncio")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (Debian: apt-get install wrk)")
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    print(
        f"uvicorn hello, {http}, wrk -c{args.connections} for {args.duration} s; "
        "server on CPU 0, wrk on CPU 1"
    )
    results = {}
    for kind in args.loops.split(","):
        got, err = measure(kind, args.port, http, args.duration, args.connections)
        if got is None:
            print(f"{kind:8} skipped: {' '.join(err)}")
            continue
        results[kind] = got
        rate, cpu = got
        print(f"{kind:8} {rate:10.0f} requests/s   {cpu * 1e6:7.1f} µs of server CPU per request")
    if "oxloop" in results:
        ox_rate, ox_cpu = results["oxloop"]
        for kind, (rate, cpu) in results.items():
            if kind != "oxloop":
                print(
                    f"oxloop vs {kind}: {ox_rate / rate:.2f}x the requests/s, "
                    f"{ox_cpu / cpu:.2f}x the CPU per request"
                )


if __name__ == "__main__":
    main()
