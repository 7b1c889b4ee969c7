"""Core loop benchmarks: oxloop against uvloop and the standard library's loop.

    python python/bench/loop_bench.py [--quick] [--loops oxloop,uvloop,asyncio]

Each case runs in a fresh interpreter per loop, one after another in the same run, and
prints the time per loop and oxloop's ratio to each peer (a loop that is not
installed is skipped with a note). The figures are wall-clock times on a machine that
may be shared: compare ratios from one run, not times across runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def new_loop(kind: str):
    if kind == "oxloop":
        import oxloop

        return oxloop.new_event_loop()
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    import asyncio

    return asyncio.new_event_loop()


@case
def call_soon(loop, n):
    """n call_soon callbacks, each scheduled from the previous batch's loop."""
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            loop.stop()

    start = time.perf_counter()
    for _ in range(n):
        loop.call_soon(cb)
    loop.run_forever()
    return time.perf_counter() - start


@case
def call_later_half_cancelled(loop, n):
    """n call_later timers spread over 10 ms, every other one cancelled."""
    fired = 0
    target = n // 2

    def cb():
        nonlocal fired
        fired += 1
        if fired == target:
            loop.stop()

    start = time.perf_counter()
    handles = [loop.call_later((i % 1000) * 1e-5, cb) for i in range(n)]
    for h in handles[1::2]:
        h.cancel()
    loop.run_forever()
    return time.perf_counter() - start


@case
def call_soon_threadsafe_4_threads(loop, n):
    """n call_soon_threadsafe calls, from 4 threads at once."""
    import threading

    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            loop.stop()

    per_thread = n // 4

    def feed():
        for _ in range(per_thread):
            loop.call_soon_threadsafe(cb)

    threads = [threading.Thread(target=feed) for _ in range(4)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    loop.run_forever()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def run_child(kind: str, name: str, n: int, rounds: int) -> float:
    loop = new_loop(kind)
    try:
        return min(CASES[name](loop, n) for _ in range(rounds))
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default="oxloop,uvloop,asyncio")
    parser.add_argument("--quick", action="store_true", help="100,000 instead of 1,000,000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", nargs=3, metavar=("LOOP", "CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, name, n = args.child
        print(run_child(kind, name, int(n), args.rounds))
        return
    n = 100_000 if args.quick else 1_000_000
    loops = args.loops.split(",")
    results: dict[str, dict[str, float]] = {}
    for name in CASES:
        results[name] = {}
        for kind in loops:
            cmd = [sys.executable, __file__, "--rounds", str(args.rounds), "--child", kind, name]
            proc = subprocess.run(cmd + [str(n)], capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{name:32} {kind:8} skipped: {last}")
                continue
            results[name][kind] = float(proc.stdout)
        line = f"{name:32} " + "  ".join(f"{k} {v * 1e3:8.1f} ms" for k, v in results[name].items())
        ox = results[name].get("oxloop")
        ratios = [
            f"{ox and results[name][k] / ox:.2f}x {k}"
            for k in results[name]
            if k != "oxloop" and ox
        ]
        print(line + ("   oxloop is " + ", ".join(ratios) + " faster" if ratios else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": n, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
