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
#        and gevent for the peer), MESSAGES (20000); BREAKDOWN=1 adds, on stderr, each
#        server's instructions per message by shared object and its costliest functions
#        (self cost: where the instructions run, which the stack switching leaves
#        right, unlike the call tree)
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
    [ -n "${BREAKDOWN:-}" ] && breakdown "$1" "$file" >&2
    rm -rf "$out"
    echo $((total / MESSAGES))
}

breakdown() { # lib callgrind-file -> instructions per message by object, then by function
    # Self cost per function. The outermost frames (main and the like) show the whole
    # run as their own, an artefact of the stack switching: left out.
    callgrind_annotate --threshold=100 --inclusive=no "$2" 2>/dev/null | awk -v lib="$1" -v n="$MESSAGES" '
        /PROGRAM TOTALS/ { all = $1; gsub(",", "", all); all += 0 }
        /^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
            c = $1; gsub(",", "", c); c += 0
            if (c >= 0.99 * all) next
            line = $0; sub(/^ *[0-9,]+ \([^)]*\) +/, "", line)
            object = "(inlined)"
            if (match(line, / \[[^]]*\]$/)) {
                object = substr(line, RSTART + 2, RLENGTH - 3); sub(".*/", "", object)
                line = substr(line, 1, RSTART - 1)
            }
            sub(/^.*\//, "", line)
            total[object] += c
            if (c / n >= 25) fn[++k] = sprintf("    %7.0f  %s (%s)", c / n, line, object)
        }
        END {
            printf "%s: instructions per message by object (20 or more)\n", lib
            for (o in total) if (total[o] / n >= 20) printf "    %7.0f  %s\n", total[o] / n, o | "sort -k1 -n -r"
            close("sort -k1 -n -r")
            printf "%s: functions with 25 or more per message (self cost)\n", lib
            for (i = 1; i <= k; i++) print fn[i]
        }'
}

printf '| library | instructions per message |\n|---|---|\n'
for lib in ${*:-oxloop}; do
    if ! "$PYTHON" -c "import ${lib/oxloop/oxloop.green}" 2>/dev/null; then
        printf '| %s | not installed |\n' "$lib"
        continue
    fi
    printf '| %s | %s |\n' "$lib" "$(run_one "$lib")"
done
