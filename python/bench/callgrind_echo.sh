#!/usr/bin/env bash
# User-space instructions per echoed message of the Python echo servers, counted with
# callgrind (deterministic, unlike CPU time on a shared machine): oxloop against
# uvloop and the standard library's loop, same script, same load.
#
# Each server runs under callgrind twice, for a short and a long ping-pong load from
# oxloop-bench's load generator; the difference in instructions over the difference in
# messages cancels start-up and shutdown (as crates/oxloop-bench/callgrind.sh does).
#
# usage: python/bench/callgrind_echo.sh [API] [LOOP...]
#   API: protocol (default), buffered or streams; LOOP: oxloop uvloop asyncio
# env:   PYTHON (default: the one ./test.sh made, .venv/py3.11/bin/python; it needs oxloop
#        and, for the peer, uvloop: `.venv/py3.11/bin/pip install uvloop`), SHORT (1000), LONG (5000), SIZE (64), CONNS (1);
#        BREAKDOWN=1 adds each loop's instructions per message by shared object
#        (the interpreter, the loop's extension, libc, the kernel interface)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/py3.11/bin/python}
API=${1:-protocol}
shift || true
LOOPS=${*:-oxloop uvloop asyncio}
SHORT=${SHORT:-1000}
LONG=${LONG:-5000}
SIZE=${SIZE:-64}
CONNS=${CONNS:-1}
cargo build --release -q -p oxloop-bench
# Fixed string hashing, so the interpreter does the same work in every run.
export PYTHONHASHSEED=0
LOAD=${CARGO_TARGET_DIR:-target}/release/oxloop-bench
OUT=$(mktemp -d)

run_one() { # loop messages -> prints total instructions
    local kind=$1 n=$2 file=$OUT/callgrind.$1.$2
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$PYTHON" python/bench/echo_server.py "$kind" "$API" --exit-after "$CONNS" \
        >"$file.stdout" 2>"$file.log" &
    local pid=$! addr=""
    for _ in $(seq 1 600); do
        addr=$(sed -n 's/^listening on //p' "$file.stdout" 2>/dev/null || true)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "server $kind did not start" >&2; cat "$file.log" >&2; exit 1; }
    "$LOAD" load "$addr" --connections "$CONNS" --size "$SIZE" --messages "$n" >"$file.load"
    wait "$pid"
    callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

by_object() { # callgrind file -> "object instructions" lines (the shared object each function is in)
    callgrind_annotate --threshold=100 "$1" 2>/dev/null | awk '
        /^ *[0-9,]+ \(/ && match($0, /\[[^]]*\]$/) {
            n = $1; gsub(",", "", n)
            object = substr($0, RSTART + 1, RLENGTH - 2); sub(".*/", "", object)
            total[object] += n
        }
        END { for (o in total) print o, total[o] }'
}

breakdown() { # loop -> per-message instructions by shared object, largest first
    local kind=$1
    by_object "$OUT/callgrind.$kind.$SHORT" >"$OUT/objects.$kind.short"
    by_object "$OUT/callgrind.$kind.$LONG" >"$OUT/objects.$kind.long"
    awk -v n=$(( (LONG - SHORT) * CONNS )) '
        NR == FNR { short[$1] = $2; next }
        { per = ($2 - short[$1]) / n; if (per >= 20) printf "    %-40s %8.0f\n", $1, per }
    ' "$OUT/objects.$kind.short" "$OUT/objects.$kind.long" | sort -k2 -n -r
}

echo "$API echo: $CONNS connection(s), $SIZE-byte messages, 1 in flight; $SHORT and $LONG messages"
printf '| loop | instructions per message | vs oxloop |\n|---|---|---|\n'
ox=""
for kind in $LOOPS; do
    if ! "$PYTHON" -c "import $kind" 2>/dev/null; then
        printf '| %s | not installed | |\n' "$kind"
        continue
    fi
    short=$(run_one "$kind" "$SHORT")
    long=$(run_one "$kind" "$LONG")
    per=$(( (long - short) / ((LONG - SHORT) * CONNS) ))
    [ -z "$ox" ] && [ "$kind" = oxloop ] && ox=$per
    ratio=""
    [ -n "$ox" ] && ratio=$(awk -v a="$per" -v b="$ox" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s | %s | %s |\n' "$kind" "$per" "$ratio"
done
if [ -n "${BREAKDOWN:-}" ]; then
    echo
    echo "instructions per message by shared object (20 or more):"
    for kind in $LOOPS; do
        [ -f "$OUT/callgrind.$kind.$LONG" ] || continue
        echo "  $kind"
        breakdown "$kind"
    done
fi
echo "(callgrind files in $OUT)"
