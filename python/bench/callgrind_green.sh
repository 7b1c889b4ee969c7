#!/usr/bin/env bash
# User-space instructions per echoed message of green_bench.py's echo server
# (oxloop.green or gevent), counted with callgrind: deterministic, unlike CPU time on a
# shared machine. The server runs under callgrind; after a warm-up load the counters are
# zeroed, the measured load runs (10 connections, one 64-byte message in flight on
# each, from green_bench.py's load generator in another process), and the counters are
# dumped. Function-level figures are not usable (greenlet's stack switching confuses
# callgrind's call tracking); the total is.
#
# usage: python/bench/callgrind_green.sh [LIB...]   LIB: oxloop (default) gevent
# env:   PYTHON (default .venv/bench/bin/python: a release build of oxloop, greenlet,
#        and gevent for the peer), MESSAGES (20000)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bench/bin/python}
MESSAGES=${MESSAGES:-20000}
BENCH=python/bench/green_bench.py
export PYTHONHASHSEED=0 # fixed string hashing: the same work in every run

run_one() { # lib -> prints instructions per message
    local out pid port file total
    out=$(mktemp -d)
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" \
        "$PYTHON" "$BENCH" serve "$1" >"$out/port" 2>"$out/log" &
    pid=$!
    for _ in $(seq 1 1200); do
        [ -s "$out/port" ] && break
        sleep 0.1
    done
    port=$(head -n1 "$out/port")
    [ -n "$port" ] || { echo "the $1 server did not start" >&2; cat "$out/log" >&2; exit 1; }
    "$PYTHON" "$BENCH" load "$port" 10 2000
    callgrind_control -z "$pid" >/dev/null
    "$PYTHON" "$BENCH" load "$port" 10 "$MESSAGES"
    callgrind_control -d "$pid" >/dev/null
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    file=$(ls "$out"/cg.*.1)
    total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo $((total / MESSAGES))
}

printf '| library | instructions per message |\n|---|---|\n'
for lib in ${*:-oxloop}; do
    if ! "$PYTHON" -c "import ${lib/oxloop/oxloop.green}" 2>/dev/null; then
        printf '| %s | not installed |\n' "$lib"
        continue
    fi
    printf '| %s | %s |\n' "$lib" "$(run_one "$lib")"
done
