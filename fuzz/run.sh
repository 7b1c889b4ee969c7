#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of every parser that reads outside bytes, on the
# stable toolchain: the coverage instrumentation cargo-fuzz would add is set here with
# stable `-C` flags, so neither nightly nor cargo-fuzz is needed.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Runs each target (default: all) for SECONDS (default 60) from the seed corpus in
# fuzz/corpus/TARGET; inputs it finds go to target/fuzz/corpus/TARGET, a crashing input
# to target/fuzz/artifacts/TARGET/ (and the script fails). ./test.sh runs every target
# briefly (OXLOOP_FUZZ_SECONDS, default 15).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(http_head chunked smtp_reply line_reader)

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=$PWD/target
# An explicit --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --quiet --target "$host" --bins
bin_dir=target/$host/release

status=0
for t in "${targets[@]}"; do
    work=target/fuzz/corpus/$t
    artifacts=target/fuzz/artifacts/$t/
    mkdir -p "$work" "$artifacts"
    echo "fuzz: $t for ${seconds}s"
    if ! "$bin_dir/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts" "$work" "corpus/$t" \
        >"target/fuzz/$t.log" 2>&1; then
        echo "fuzz: $t FAILED; the input is in fuzz/$artifacts, the log in fuzz/target/fuzz/$t.log"
        tail -n 40 "target/fuzz/$t.log"
        status=1
    else
        grep -E "^stat::number_of_executed_units|^stat::new_units_added" "target/fuzz/$t.log" \
            | sed "s/^/fuzz: $t /"
    fi
done
exit $status
