#!/usr/bin/env python3
"""Server CPU per echoed message of several servers or builds, interleaved.

Each round starts every server in turn (`oxloop-bench serve KIND --cpu 0`), loads it
for a few seconds (`oxloop-bench load --cpu 1`) and reads the server's user + system
time from /proc; one line per round, then the medians and the median of each
server's ratio to the first within a round. Interleaving rounds makes the servers of
one round see about the same load from the rest of the machine, so the ratios hold
better than the times do. Built for comparing builds of one server: copy each build's
`oxloop-bench` binary aside and name it with its kind.

usage: crates/oxloop-bench/compare_cpu.py [--rounds N] [--depth D] [--size B]
           [--connections C] [--duration S] BINARY:KIND BINARY:KIND ...
e.g.   crates/oxloop-bench/compare_cpu.py target/release/oxloop-bench:raw-epoll \\
           /tmp/before:oxloop-uring target/release/oxloop-bench:oxloop-uring
"""

import argparse
import os
import re
import statistics
import subprocess
import threading


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(binary: str, kind: str, args: argparse.Namespace) -> float:
    """Nanoseconds of server CPU per message for one server under one load."""
    server = subprocess.Popen(
        [binary, "serve", kind, "127.0.0.1:0", "--cpu", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        if not line.startswith("listening on "):
            raise SystemExit(f"{binary} serve {kind}: {line!r}")
        # Whatever else the server prints is read, so that it never blocks on the pipe.
        threading.Thread(target=server.stdout.read, daemon=True).start()
        load = subprocess.run(
            [binary, "load", line.split()[-1]]
            + ["--connections", str(args.connections), "--size", str(args.size)]
            + ["--depth", str(args.depth), "--duration", str(args.duration)]
            + ["--cpu", "1"],
            capture_output=True,
            text=True,
            check=True,
        )
        cpu = server_cpu_seconds(server.pid)
    finally:
        server.kill()
        server.wait()
    found = re.search(r"messages=(\d+)", load.stdout)
    if not found or "all bytes verified" not in load.stdout:
        raise SystemExit(f"{binary} load against {kind}: {load.stdout}{load.stderr}")
    return cpu / int(found.group(1)) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("servers", nargs="+", metavar="BINARY:KIND")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=float, default=3)
    args = parser.parse_args()
    servers = [s.rsplit(":", 1) for s in args.servers]
    runs: list[list[float]] = [[] for _ in servers]
    for _ in range(args.rounds):
        for i, (binary, kind) in enumerate(servers):
            runs[i].append(one_run(binary, kind, args))
        ns = " ".join(f"{r[-1]:.0f}" for r in runs)
        ratios = " ".join(f"{r[-1] / runs[0][-1]:.2f}" for r in runs[1:])
        print(f"ns/message: {ns}   ratio to the first: {ratios}", flush=True)
    for (binary, kind), r in zip(servers, runs):
        ratio = statistics.median(a / b for a, b in zip(r, runs[0]))
        print(
            f"{binary}:{kind}: median {statistics.median(r):.0f} ns/message "
            f"({min(r):.0f}-{max(r):.0f}), median ratio to the first {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
