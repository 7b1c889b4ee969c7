#!/usr/bin/env bash
# User-space instructions per echoed message, counted with callgrind.
#
# For each server: run it under `valgrind --tool=callgrind` twice, once for a short
# and once for a long ping-pong load (1 connection, 64-byte messages, 1 in flight);
# the server exits when the connection closes and callgrind writes its totals. The
# difference in instructions divided by the difference in messages cancels start-up
# and shutdown. The per-function profile of the long run of the first server is
# printed at the end. Every server is built with the same Cargo profile (one binary):
# `fast` (release + fat LTO + one codegen unit) unless PROFILE says otherwise.
#
# usage: crates/oxloop-bench/callgrind.sh [SERVER...]   (default: oxloop raw-epoll tokio)
# env:   SHORT (default 2000), LONG (default 12000) messages per connection;
#        SIZE (64); DEPTH (1); CONNS (1); PROFILE (fast; or release)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
PROFILE=${PROFILE:-fast}
# Symbols for the per-function report; debug info does not change the code.
cargo build --profile "$PROFILE" -q -p oxloop-bench --config "profile.$PROFILE.debug=\"line-tables-only\""
DIR=$PROFILE
[ "$PROFILE" = dev ] && DIR=debug
BIN=$CARGO_TARGET_DIR/$DIR/oxloop-bench
SHORT=${SHORT:-2000}
LONG=${LONG:-12000}
SIZE=${SIZE:-64}
DEPTH=${DEPTH:-1}
CONNS=${CONNS:-1}
OUT=$(mktemp -d)
KINDS=${*:-oxloop raw-epoll tokio}

run_one() { # kind messages -> prints total instructions
    local kind=$1 n=$2 file=$OUT/callgrind.$1.$2
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$BIN" serve "$kind" 127.0.0.1:0 --exit-after "$CONNS" >"$file.stdout" 2>"$file.log" &
    local pid=$! addr=""
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/^listening on //p' "$file.stdout" 2>/dev/null || true)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "server $kind did not start" >&2; cat "$file.log" >&2; exit 1; }
    "$BIN" load "$addr" --connections "$CONNS" --size "$SIZE" --depth "$DEPTH" --messages "$n" >"$file.load"
    wait "$pid"
    callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

echo "$CONNS connection(s), $SIZE-byte messages, $DEPTH in flight; messages per connection: $SHORT and $LONG; profile $PROFILE"
printf '| server | Ir (short run) | Ir (long run) | instructions per message |\n|---|---|---|---|\n'
for kind in $KINDS; do
    short=$(run_one "$kind" "$SHORT")
    long=$(run_one "$kind" "$LONG")
    per=$(( (long - short) / ((LONG - SHORT) * CONNS) ))
    printf '| %s | %s | %s | %s |\n' "$kind" "$short" "$long" "$per"
done
echo "(callgrind files in $OUT)"
FIRST=${KINDS%% *}
if [ -f "$OUT/callgrind.$FIRST.$LONG" ]; then
    echo
    echo "Top functions (self instructions) of the long $FIRST run:"
    { callgrind_annotate --inclusive=no "$OUT/callgrind.$FIRST.$LONG" 2>/dev/null | sed -n '/^Ir/,$p' | head -45; } || true
fi
