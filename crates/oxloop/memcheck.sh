#!/usr/bin/env bash
# Runs oxloop's test binaries under valgrind memcheck: no invalid reads or writes, no
# use of uninitialised memory, and no memory definitely lost at exit.
#
#   crates/oxloop/memcheck.sh [TEST...]
#
# TEST names an integration test (`loop_core`, `protocol_stream`...) or `lib` for the
# unit tests; the default is every test binary of the crate. Each runs with one test
# thread (valgrind serialises threads anyway). Under valgrind everything is 20-50 times
# slower, so a test with a time-out of its own may fail for that reason alone: the
# summary says which failed and why (a valgrind error, or the test itself).
# Prints one line per binary and exits non-zero if any had a memory error or a leak.
set -uo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed" >&2; exit 2; }

mapfile -t lines < <(cargo test -q -p oxloop --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        name = "lib" if kind == "lib" else m["target"]["name"]
        print(name, m["executable"])
')
wanted=("$@")
status=0
log_dir=target/memcheck
mkdir -p "$log_dir"
for line in "${lines[@]}"; do
    name=${line%% *}
    exe=${line#* }
    if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    log=$log_dir/$name.log
    valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
        --log-file="$log" "$exe" --test-threads=1 -q >"$log_dir/$name.out" 2>&1
    code=$?
    errors=$(grep -c "^==[0-9]*== \(Invalid\|.*uninitialised\|.*are definitely lost in loss record\)" "$log" || true)
    if [ $code = 0 ]; then
        echo "memcheck: $name clean"
    elif [ $code = 99 ] || [ "$errors" != 0 ]; then
        echo "memcheck: $name MEMORY ERRORS ($errors), see $log"
        status=1
    else
        failed=$(grep -E "^    [a-z_:]+$" "$log_dir/$name.out" | tr -d ' ' | paste -sd, -)
        echo "memcheck: $name no memory error; tests failed under valgrind: ${failed:-see $log_dir/$name.out}"
    fi
done
exit $status
