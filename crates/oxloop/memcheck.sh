#!/usr/bin/env bash
# Runs a crate's test binaries under valgrind memcheck: no invalid reads or writes, no
# use of uninitialised memory, and no memory definitely lost at exit.
#
#   crates/oxloop/memcheck.sh [-p CRATE] [TEST...]
#
# CRATE is a workspace crate (`oxloop`, the default; `oxloop-http`, `oxloop-log`...),
# built with every feature but `portable-backend` (which would replace the Linux
# backends being checked). TEST names an integration test (`loop_core`,
# `protocol_stream`...) or `lib` for the unit tests; the default is every test binary
# of the crate but `loom`, which runs only when named (its model runs each modelled
# thread as a coroutine on a stack of its own, switched in assembly; valgrind cannot
# follow that and reports every access there). Each runs with one test thread
# (valgrind serialises threads anyway). Programs a test starts from the build
# directory (the examples) run under memcheck too; system programs (under /usr, /bin,
# /sbin) do not. Under valgrind everything is 20-50 times slower, so a test with a
# time-out of its own may fail for that reason alone: the summary says which failed
# and why (a valgrind error, or the test itself). Tests that read
# `$OXLOOP_TEST_TIME_SCALE` (10 here unless set) stretch their time-outs by it.
# Logs: target/memcheck/CRATE/TEST.PID.log (one per process) and TEST.out.
# Prints one line per binary and exits non-zero if any had a memory error or a leak.
set -uo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed" >&2; exit 2; }
export OXLOOP_TEST_TIME_SCALE=${OXLOOP_TEST_TIME_SCALE:-10}

crate=oxloop
if [ "${1:-}" = -p ]; then
    [ $# -ge 2 ] || { echo "memcheck: -p needs a crate name" >&2; exit 2; }
    crate=$2
    shift 2
fi
features=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
crate = sys.argv[1]
for package in json.load(sys.stdin)["packages"]:
    if package["name"] == crate:
        print(",".join(f for f in package["features"] if f not in ("default", "portable-backend")))
        break
else:
    sys.exit("memcheck: no crate " + crate + " in the workspace")
' "$crate") || exit 2

mapfile -t lines < <(cargo test -q -p "$crate" --features "$features" --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        name = "lib" if kind == "lib" else m["target"]["name"]
        print(name, m["executable"])
')
[ ${#lines[@]} -gt 0 ] || { echo "memcheck: no test binaries built for $crate" >&2; exit 2; }
wanted=("$@")
status=0
log_dir=target/memcheck/$crate
mkdir -p "$log_dir"
for line in "${lines[@]}"; do
    name=${line%% *}
    exe=${line#* }
    if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    if [ ${#wanted[@]} = 0 ] && [ "$name" = loom ]; then
        continue
    fi
    rm -f "$log_dir/$name".*.log
    valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
        --suppressions="$PWD/crates/oxloop/memcheck.supp" \
        --trace-children=yes --trace-children-skip='/usr/*,/bin/*,/sbin/*' \
        --log-file="$log_dir/$name.%p.log" "$exe" --test-threads=1 -q >"$log_dir/$name.out" 2>&1
    code=$?
    errors=$(cat "$log_dir/$name".*.log \
        | grep -c "^==[0-9]*== \(Invalid\|.*uninitialised\|.*are definitely lost in loss record\)" || true)
    if [ $code = 0 ] && [ "$errors" = 0 ]; then
        echo "memcheck: $crate $name clean"
    elif [ $code = 99 ] || [ "$errors" != 0 ]; then
        echo "memcheck: $crate $name MEMORY ERRORS ($errors), see $log_dir/$name.*.log"
        status=1
    else
        failed=$(grep -E "^    [a-z_:0-9]+$" "$log_dir/$name.out" | tr -d ' ' | paste -sd, -)
        echo "memcheck: $crate $name no memory error; tests failed under valgrind: ${failed:-see $log_dir/$name.out}"
    fi
done
exit $status
