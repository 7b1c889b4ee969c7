#!/usr/bin/env bash
# User-space instructions per echoed message, counted with callgrind.
#
# For each server: run it under `valgrind --tool=callgrind` twice, once for a short
# and once for a long ping-pong load (1 connection, 64-byte messages, 1 in flight);
# the server exits when the connection closes and callgrind writes its totals. The
# difference in instructions divided by the difference in messages cancels start-up
# and shutdown. The per-function profile of the long oxloop run is printed at the end.
#
# usage: crates/oxloop-bench/callgrind.sh [SERVER...]   (default: oxloop raw-epoll tokio)
# env:   SHORT (default 2000), LONG (default 12000) messages; SIZE (64); DEPTH (1)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# Symbols for the per-function report; debug info does not change the code.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -q -p oxloop-bench
BIN=$CARGO_TARGET_DIR/release/oxloop-bench
SHORT=${SHORT:-2000}
LONG=${LONG:-12000}
SIZE=${SIZE:-64}
DEPTH=${DEPTH:-1}
OUT=$(mktemp -d)
KINDS=${*:-oxloop raw-epoll tokio}

run_one() { # kind messages -> prints total instructions
    local kind=$1 n=$2 file=$OUT/callgrind.$1.$2
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$BIN" serve "$kind" 127.0.0.1:0 --exit-after 1 >"$file.stdout" 2>"$file.log" &
    local pid=$! addr=""
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/^listening on //p' "$file.stdout")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "server $kind did not start" >&2; cat "$file.log" >&2; exit 1; }
    "$BIN" load "$addr" --connections 1 --size "$SIZE" --depth "$DEPTH" --messages "$n" >"$file.load"
    wait "$pid"
    callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

printf '| server | Ir (%s msgs) | Ir (%s msgs) | instructions per message |\n|---|---|---|---|\n' "$SHORT" "$LONG"
for kind in $KINDS; do
    short=$(run_one "$kind" "$SHORT")
    long=$(run_one "$kind" "$LONG")
    per=$(( (long - short) / (LONG - SHORT) ))
    printf '| %s | %s | %s | %s |\n' "$kind" "$short" "$long" "$per"
done
if [ -f "$OUT/callgrind.oxloop.$LONG" ]; then
    echo
    echo "Top functions (self instructions) of the long oxloop run:"
    callgrind_annotate --inclusive=no "$OUT/callgrind.oxloop.$LONG" 2>/dev/null | sed -n '/^Ir/,$p' | head -45
fi
echo "(callgrind files in $OUT)"
