"""WSGI and ASGI serving: oxloop against granian and uvicorn (uvloop + httptools), wrk.

    python python/bench/web_bench.py [--duration 5] [--connections 100] [--threads 1]

Two applications, a 13-byte "hello" and a 4 KiB JSON document (`json.dumps` of the
same dict on every request), served by one process each: oxloop WSGI and ASGI (`python
-m oxloop.serve`; WSGI also with `--threads 0`, the app called on the loop's thread,
and with `--green`, the app in green tasks on the loop's thread), granian WSGI and
ASGI (one worker, one runtime thread, HTTP/1 only), bjoern (WSGI, C on libev) and
uvicorn with uvloop and httptools; each both with keep-alive (one request in flight
per connection) and pipelined (`--pipeline` requests in flight, 16 by default). Each
server runs alone, pinned to CPU 0; wrk (keep-alive, `--connections` connections) runs
pinned to CPU 1. Prints requests/s (the median of `--rounds` rounds, each running
every server in turn, so that a burst of load from elsewhere on the machine hits one
sample of each rather than all of one server's) and oxloop's ratios; beside each,
requests per CPU-second of the server (its processes' and threads' user and system
time while wrk ran, from /proc): on a machine shared with other work, a server that
waits for its core still shows what a request costs it. Before each round, each
application is called directly on the same core, with no server (the best of eight
quarter-second slices, and the best of the rounds is kept), and the ratios carry a
ceiling: the ratio of requests/s that a server costing nothing, using its whole core,
would reach against that peer (where the application is most of a request, no server
can do better). A server that is not installed is skipped with a note: install the
peers into the benchmark's venv only, e.g.

    python -m venv .venv/bench
    .venv/bench/bin/pip install ./python granian uvicorn uvloop httptools bjoern

(bjoern builds from source against libev: `apt-get install libev-dev` first.)
    .venv/bench/bin/python python/bench/web_bench.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

APPS = r"""
import json

DOC = {"items": [{"id": i, "name": "item %d" % i, "tags": ["a", "b"], "price": i * 1.5}
                 for i in range(62)]}
assert 4000 <= len(json.dumps(DOC)) <= 4150, len(json.dumps(DOC))
HELLO = b"Hello, world!"


def wsgi_hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def wsgi_json(environ, start_response):
    body = json.dumps(DOC).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi_hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": HELLO})


async def asgi_json(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps(DOC).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


def command(server: str, app: str, port: int, threads: int) -> list[str] | None:
    """The command that serves `app` (hello/json) with `server`, or None if missing."""
    py = sys.executable
    # The WSGI modes of oxloop: a thread pool, the loop's thread, green tasks.
    wsgi_modes = {"oxloop-inline": ["--threads", "0"], "oxloop-green": ["--green"]}
    kind = "wsgi" if server.endswith("wsgi") or server in wsgi_modes else "asgi"
    target = f"bench_apps:{kind}_{app}"
    if server.startswith("oxloop"):
        mode = wsgi_modes.get(server) or (
            ["--threads", str(threads)] if kind == "wsgi" else ["--lifespan", "off"]
        )
        return [py, "-m", "oxloop.serve", target, "--interface", kind, "--port", str(port)] + mode
    if server.startswith("granian"):
        if importlib.util.find_spec("granian") is None:
            return None
        return (
            [py, "-m", "granian", "--interface", kind, "--host", "127.0.0.1", "--port"]
            + [str(port), "--workers", "1", "--runtime-threads", "1", "--http", "1"]
            + ["--no-ws", "--log-level", "warning", target]
        )
    if server == "bjoern":
        if importlib.util.find_spec("bjoern") is None:
            return None
        run = f"import bjoern, bench_apps; bjoern.run(bench_apps.wsgi_{app}, '127.0.0.1', {port})"
        return [py, "-c", run]
    if server == "uvicorn":
        if any(importlib.util.find_spec(m) is None for m in ("uvicorn", "uvloop", "httptools")):
            return None
        return [py, "-m", "uvicorn", target, "--port", str(port), "--loop", "uvloop"] + [
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ]
    raise ValueError(server)


# The application called directly, with no server: how many calls a CPU-second gives.
APP_ALONE = r"""
import sys, time
import bench_apps

kind, app_name = sys.argv[1], sys.argv[2]
app = getattr(bench_apps, f"{kind}_{app_name}")
environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
scope = {"type": "http", "method": "GET", "path": "/", "headers": []}


def start_response(status, headers, exc_info=None):
    return None


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message):
    pass


def call():
    if kind == "wsgi":
        return b"".join(app(environ, start_response))
    coro = app(scope, receive, send)
    try:
        coro.send(None)
    except StopIteration:
        return None
    raise RuntimeError("the application waited")


# The best of eight slices of a quarter of a CPU-second: the ceiling is an upper
# bound, and the machine's speed drifts from slice to slice.
best = 0.0
for _ in range(8):
    calls, start = 0, time.process_time()
    while (spent := time.process_time() - start) < 0.25:
        for _ in range(20):
            call()
        calls += 20
    best = max(best, calls / spent)
print(best)
"""


def app_alone(kind: str, app: str, cwd: str) -> float:
    """Calls per CPU-second of the application alone, on the servers' core (the best
    of eight slices)."""
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", APP_ALONE, kind, app],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=cwd),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# wrk sends `depth` requests back to back on each connection and counts each response.
PIPELINE = """
init = function(args)
    local depth = tonumber(args[1]) or 1
    local r = {}
    for i = 1, depth do r[i] = wrk.format() end
    req = table.concat(r)
end
request = function() return req end
"""


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid`, its threads and its descendants
    (granian runs its worker in a child process), from /proc."""
    ticks = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    children = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(c) for c in children)


def measure(
    cmd: list[str], port: int, duration: int, connections: int, cwd: str, depth: int
) -> tuple[float, float] | None:
    """(requests/s, requests per CPU-second of the server) under wrk, or None."""
    env = dict(os.environ, PYTHONPATH=cwd)
    server = subprocess.Popen(
        ["taskset", "-c", "0", *cmd],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                print("   server failed:", server.stderr.read().decode().strip()[-300:])
                return None
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["wrk", "-t1", "-c10", "-d1s", url], capture_output=True)  # warm-up
        load = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
        if depth > 1:
            load += ["-s", os.path.join(cwd, "pipeline.lua"), url, "--", str(depth)]
        else:
            load.append(url)
        cpu_before = cpu_seconds(server.pid)
        out = subprocess.run(
            load,
            capture_output=True,
            text=True,
        ).stdout
        cpu = cpu_seconds(server.pid) - cpu_before
        rate = requests = None
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                rate = float(line.split()[1])
            if "requests in" in line:
                requests = int(line.split()[0])
            if "Non-2xx" in line or "Socket errors" in line:
                print("   wrk:", line.strip())
        if rate is None or requests is None:
            return None
        return rate, requests / cpu if cpu > 0 else 0.0
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


SERVERS = (
    "oxloop-wsgi",
    "oxloop-inline",
    "oxloop-green",
    "granian-wsgi",
    "bjoern",
    "oxloop-asgi",
    "granian-asgi",
    "uvicorn",
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="oxloop WSGI threads")
    p.add_argument(
        "--pipeline",
        type=int,
        default=16,
        help="requests in flight per connection in the pipelined runs (1: keep-alive only)",
    )
    p.add_argument("--servers", nargs="*", default=list(SERVERS))
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over every server in turn; the median of each is reported",
    )
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = p.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("needs wrk and taskset")
        return 1
    samples: dict[tuple[str, str, str], list[float]] = {}
    cpu_samples: dict[tuple[str, str, str], list[float]] = {}
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "bench_apps.py"), "w") as f:
            f.write(APPS)
        with open(os.path.join(tmp, "pipeline.lua"), "w") as f:
            f.write(PIPELINE)
        modes = [("keep-alive", 1)] + ([("pipelined", args.pipeline)] if args.pipeline > 1 else [])
        # A server that cost nothing would serve this many requests per CPU-second:
        # measured before every round, the best of them kept.
        alone: dict[tuple[str, str], float] = {}
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}")
            for kind in ("wsgi", "asgi"):
                for app in ("hello", "json"):
                    rate = app_alone(kind, app, tmp)
                    alone[(kind, app)] = max(alone.get((kind, app), 0.0), rate)
                    print(f"the {kind} {app} application alone: {rate:10,.0f} calls per CPU-second")
            for mode, depth in modes:
                for app in ("hello", "json"):
                    for server in args.servers:
                        port = free_port()
                        cmd = command(server, app, port, args.threads)
                        key = f"{server:13} {app:5} {mode:10}"
                        if cmd is None:
                            if round_number == 1:
                                print(f"{key}  skipped: not installed in this venv")
                                if server not in skipped:
                                    skipped.append(server)
                            continue
                        result = measure(cmd, port, args.duration, args.connections, tmp, depth)
                        if result is None:
                            continue
                        rate, per_cpu = result
                        samples.setdefault((server, app, mode), []).append(rate)
                        cpu_samples.setdefault((server, app, mode), []).append(per_cpu)
                        print(
                            f"{key}  {rate:10,.0f} requests/s  {per_cpu:10,.0f} per CPU-second",
                            flush=True,
                        )
    rates = {key: statistics.median(values) for key, values in samples.items()}
    per_cpu = {key: statistics.median(values) for key, values in cpu_samples.items()}
    print("\nmedian of the rounds:")
    for (server, app, mode), rate in rates.items():
        print(
            f"{server:13} {app:5} {mode:10}  {rate:10,.0f} requests/s"
            f"  {per_cpu[(server, app, mode)]:10,.0f} per CPU-second"
        )
    print(
        "\nratios: requests/s (requests per CPU-second of the server); the ceiling is the"
        "\nratio of requests/s that a server costing nothing, using its whole core, would"
        "\nreach against the peer (the application's own calls per CPU-second over the"
        "\npeer's requests/s)"
    )
    ratios: list[dict[str, object]] = []
    for mode, _ in modes:
        for app in ("hello", "json"):
            for ours, peer in (
                ("oxloop-wsgi", "granian-wsgi"),
                ("oxloop-wsgi", "bjoern"),
                ("oxloop-inline", "granian-wsgi"),
                ("oxloop-inline", "bjoern"),
                ("oxloop-green", "granian-wsgi"),
                ("oxloop-green", "bjoern"),
                ("oxloop-asgi", "granian-asgi"),
                ("oxloop-asgi", "uvicorn"),
            ):
                if peer == "bjoern" and mode == "pipelined":
                    continue  # bjoern does not answer pipelined requests in turn
                if (ours, app, mode) in rates and (peer, app, mode) in rates:
                    ratio = rates[(ours, app, mode)] / rates[(peer, app, mode)]
                    ours_cpu, peer_cpu = per_cpu[(ours, app, mode)], per_cpu[(peer, app, mode)]
                    cpu_ratio = ours_cpu / peer_cpu if peer_cpu else 0.0
                    kind = "asgi" if ours.endswith("asgi") else "wsgi"
                    ceiling = alone[(kind, app)] / rates[(peer, app, mode)]
                    print(
                        f"{app:5} {mode:10} {ours} vs {peer}: {ratio:.2f}x ({cpu_ratio:.2f}x);"
                        f" ceiling {ceiling:.2f}x"
                    )
                    ratios.append(
                        {
                            "app": app,
                            "mode": mode,
                            "server": ours,
                            "peer": peer,
                            "ratio": ratio,
                            "per_cpu_second_ratio": cpu_ratio,
                            "ceiling": ceiling,
                        }
                    )
    if args.json:
        rows = [
            {
                "server": s,
                "app": a,
                "mode": m,
                "requests_per_s": r,
                "requests_per_cpu_second": per_cpu[(s, a, m)],
                "rounds": samples[(s, a, m)],
            }
            for (s, a, m), r in rates.items()
        ]
        with open(args.json, "w") as f:
            apps = [
                {"interface": kind, "app": app, "calls_per_cpu_second": rate}
                for (kind, app), rate in alone.items()
            ]
            json.dump(
                {"rates": rows, "ratios": ratios, "skipped": skipped, "app_alone": apps},
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
