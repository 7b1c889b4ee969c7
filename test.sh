#!/usr/bin/env bash
# Runs every test of oxloop: the Rust workspace, the short soak run (`oxloop soak
# --short`), the Python package (python/) on each of
# Python 3.10, 3.11, 3.12 and 3.13 that is installed, and the Python lint. Ends with one
# summary line per part; the exit status is non-zero if any part failed.
#
#   ./test.sh
#
# System packages: the HTTP tests use curl, oxloop's `glib` feature needs the GLib
# development files (pkg-config glib-2.0), the Tk tests an X server (Xvfb), and a
# Debian Python needs its venv package.
# As root with apt-get, missing ones are installed; otherwise the script says what is
# missing and what it skips, before building anything.
#
# Environment:
#   OXLOOP_NO_INSTALL=1   never install system packages (behave as when not root)
#   OXLOOP_PYTHONS        the Python versions to try (default "3.10 3.11 3.12 3.13")
#   OXLOOP_PYTEST_TIMEOUT seconds one version's pytest run may take (default 600)
#   OXLOOP_FUZZ_SECONDS   seconds each fuzz target runs (default 10; 0 skips fuzzing)
#   CARGO_TARGET_DIR      where everything is compiled (default target/), shared by the
#                         Rust tests and every Python version's build
set -uo pipefail
cd "$(dirname "$0")"
root=$PWD

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
pythons_wanted=${OXLOOP_PYTHONS:-3.10 3.11 3.12 3.13}
pytest_timeout=${OXLOOP_PYTEST_TIMEOUT:-600}

# Extra runs of the core crate with feature sets that the all-features run cannot cover
# (a feature that replaces a default choice, such as another poller backend). Each entry
# becomes one `cargo test -p oxloop --features ENTRY` run.
oxloop_extra_feature_sets=(portable-backend)
# Extra runs of the core crate with every loop on another backend, chosen at run time
# (OXLOOP_BACKEND). Each entry becomes one `OXLOOP_BACKEND=ENTRY cargo test -p oxloop`
# run with the core's features of the workspace run (but `portable-backend`): the same
# tests, another kernel interface underneath.
oxloop_extra_backends=(io_uring)

note() { printf '==> %s\n' "$*"; }
summary=()
failed=0
part_start=$SECONDS
record() { # record PART RESULT [DETAIL]: one summary line, with the time since the last one
    summary+=("$(printf '%-12s %-7s %4ds  %s' "$1" "$2" $((SECONDS - part_start)) "${3:-}")")
    part_start=$SECONDS
    [ "$2" = FAILED ] && failed=1
    return 0
}

# ---------------------------------------------------------------- what is present --------

have_curl() { command -v curl >/dev/null; }
have_glib() { command -v pkg-config >/dev/null && pkg-config --exists glib-2.0; }
have_xvfb() { command -v Xvfb >/dev/null; } # an X display for the Tk tests

# Each wanted Python version: the newest patch release under ~/.pyenv/versions, else
# python3.X on PATH, else the default python3 if it is that version.
declare -A python_of=()
python_version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
find_python() { # find_python 3.X -> the interpreter's real path, or nothing
    local minor=$1 candidate
    local pyenv_dir=${PYENV_ROOT:-$HOME/.pyenv}/versions
    local newest
    newest=$(ls -1 "$pyenv_dir" 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n1)
    for candidate in ${newest:+"$pyenv_dir/$newest/bin/python$minor"} \
        "$(command -v "python$minor")" "$(command -v python3)"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if [ "$(python_version_of "$candidate")" = "$minor" ]; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return
        fi
    done
}
for minor in $pythons_wanted; do
    python_of[$minor]=$(find_python "$minor")
done
# A Python that cannot create a venv with pip (Debian's python3.X without python3.X-venv).
can_make_venv() { "$1" -c 'import ensurepip, venv' 2>/dev/null; }

missing_packages() {
    local packages=()
    have_curl || packages+=(curl)
    command -v pkg-config >/dev/null || packages+=(pkg-config)
    have_glib || packages+=(libglib2.0-dev)
    have_xvfb || packages+=(xvfb)
    local minor
    for minor in $pythons_wanted; do
        local py=${python_of[$minor]}
        if [ -n "$py" ] && ! can_make_venv "$py" && [[ $py == /usr/bin/* ]]; then
            packages+=("python$minor-venv")
        fi
        # Debian's tkinter (for the Tk tests) comes for its default python3 only.
        if [ -n "$py" ] && [ "$py" = "$(readlink -f /usr/bin/python3 2>/dev/null)" ] &&
            ! "$py" -c 'import tkinter' 2>/dev/null; then
            packages+=(python3-tk)
        fi
    done
    printf '%s\n' "${packages[@]}" | sort -u | grep .
}

missing=$(missing_packages)
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${OXLOOP_NO_INSTALL:-}" ]; then
        note "installing the missing system packages:" $missing
        export DEBIAN_FRONTEND=noninteractive
        # shellcheck disable=SC2086 # one package per word
        apt-get update -q && apt-get install -y -q --no-install-recommends $missing ||
            note "apt-get failed; going on without:" $missing
        missing=$(missing_packages)
    fi
fi

# Every feature of every workspace crate, except oxloop's `portable-backend` (it swaps
# the epoll backend out, so it gets a run of its own below) and, without the GLib
# development files, `glib`.
excluded="portable-backend"
rust_detail="all features but portable-backend"
if ! have_glib; then
    excluded="$excluded glib"
    rust_detail="all features but portable-backend and glib: no GLib development files"
    note "SKIPPED: the glib feature and its tests (no GLib development files, pkg-config glib-2.0)"
fi
features=$(cargo metadata --no-deps --format-version 1 | EXCLUDED="$excluded" python3 -c '
import json, os, sys
excluded = os.environ["EXCLUDED"].split()
meta = json.load(sys.stdin)
print(",".join(
    pkg["name"] + "/" + feature
    for pkg in meta["packages"]
    for feature, enables in pkg["features"].items()
    if feature != "default" and feature not in excluded
    and not any(x in e for e in enables for x in excluded)
))') || exit 1
rust_features=(--features "$features")
if [ -n "$missing" ]; then
    note "missing system packages:" $missing
    note "(as root on Debian, ./test.sh installs them: apt-get install" $missing")"
fi
if ! have_curl; then
    note "SKIPPED: curl is missing, so the HTTP tests that run curl pass without running it"
fi
if ! have_xvfb; then
    note "SKIPPED: the Tk tests (python/tests/test_sources_tk.py): Xvfb is missing"
fi
for minor in $pythons_wanted; do
    py=${python_of[$minor]}
    if [ -z "$py" ]; then
        note "SKIPPED: Python $minor (not found in ~/.pyenv/versions or on PATH)"
    elif ! can_make_venv "$py"; then
        note "SKIPPED: Python $minor at $py cannot create a venv (its venv/ensurepip package is missing)"
        python_of[$minor]=
    else
        note "Python $minor: $py"
        "$py" -c 'import tkinter' 2>/dev/null ||
            note "SKIPPED: the Tk tests on Python $minor (its tkinter is missing)"
    fi
done

# ---------------------------------------------------------------- Rust --------------------

part_start=$SECONDS
note "Rust: cargo test --workspace --no-fail-fast ${rust_features[*]}"
rust_result=passed
cargo test --workspace --no-fail-fast "${rust_features[@]}" || rust_result=FAILED
for feature_set in "${oxloop_extra_feature_sets[@]}"; do
    note "Rust: cargo test -p oxloop --features $feature_set"
    cargo test -p oxloop --no-fail-fast --features "$feature_set" || rust_result=FAILED
    rust_detail+="; oxloop with $feature_set"
done
oxloop_features=$(tr ',' '\n' <<<"$features" | sed -n 's|^oxloop/||p' |
    grep -vx portable-backend | paste -sd, -)
for backend in "${oxloop_extra_backends[@]}"; do
    note "Rust: OXLOOP_BACKEND=$backend cargo test -p oxloop --features $oxloop_features"
    OXLOOP_BACKEND=$backend cargo test -p oxloop --no-fail-fast --features "$oxloop_features" ||
        rust_result=FAILED
    rust_detail+="; oxloop on $backend"
done
record Rust "$rust_result" "$rust_detail"

# ---------------------------------------------------------------- soak --------------------

# The short soak and fault run (every server under random clients, storms and fd
# exhaustion; about half a minute each), on the debug binary `cargo test` built for
# oxloop-cli's tests (building it again here could differ in features and rebuild).
# Then again with the servers' loops on each extra backend.
note "soak: oxloop soak --short"
soak_binary=$CARGO_TARGET_DIR/debug/oxloop
if [ ! -x "$soak_binary" ]; then
    record soak FAILED "$soak_binary was not built"
else
    soak_result=passed
    soak_detail="report in $CARGO_TARGET_DIR/soak-short.json"
    "$soak_binary" soak --short --json "$CARGO_TARGET_DIR/soak-short.json" ||
        soak_result=FAILED
    for backend in "${oxloop_extra_backends[@]}"; do
        note "soak: OXLOOP_BACKEND=$backend oxloop soak --short"
        report=$CARGO_TARGET_DIR/soak-short-$backend.json
        OXLOOP_BACKEND=$backend "$soak_binary" soak --short --json "$report" ||
            soak_result=FAILED
        soak_detail+="; on $backend: $report"
    done
    record soak "$soak_result" "$soak_detail"
fi

# ---------------------------------------------------------------- fuzzing -----------------

fuzz_seconds=${OXLOOP_FUZZ_SECONDS:-10}
if [ "$fuzz_seconds" -gt 0 ]; then
    note "fuzz: fuzz/run.sh $fuzz_seconds (libFuzzer on the stable toolchain, every parser)"
    if fuzz/run.sh "$fuzz_seconds"; then
        record fuzz passed "${fuzz_seconds}s per target"
    else
        record fuzz FAILED "see fuzz/target/fuzz/"
    fi
else
    record fuzz skipped "OXLOOP_FUZZ_SECONDS=0"
fi

# ---------------------------------------------------------------- Python ------------------

# The default python3's version (else the first one found) installs the package exactly
# as README.md tells users to (`pip install ./python`: a release build through maturin's
# build backend) and runs the lint; the others install a wheel built with the dev
# profile, which compiles faster and keeps Rust's debug assertions on under the tests.
pip_minor=$(python_version_of python3)
[ -n "${python_of[$pip_minor]:-}" ] || pip_minor=
for minor in $pythons_wanted; do
    [ -n "$pip_minor" ] || { [ -n "${python_of[$minor]}" ] && pip_minor=$minor; }
done
test_files() { find python/tests \( -name 'test_*.py' -o -name '*_test.py' \) 2>/dev/null; }
lint_python=
for minor in $pythons_wanted; do
    py=${python_of[$minor]}
    [ -n "$py" ] || { record "Python $minor" skipped "not installed"; continue; }
    venv=$root/.venv/py$minor
    if [ "$(python_version_of "$venv/bin/python")" != "$minor" ]; then
        note "Python $minor: creating $venv"
        "$py" -m venv --clear "$venv" || { record "Python $minor" FAILED "venv"; continue; }
    fi
    requirements=(maturin pytest)
    [ -f python/requirements-test.txt ] && requirements+=(-r python/requirements-test.txt)
    [ "$minor" = "$pip_minor" ] && requirements+=(ruff)
    note "Python $minor: pip install ${requirements[*]}"
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}"; then
        record "Python $minor" FAILED "installing the test requirements"
        continue
    fi
    if [ "$minor" = "$pip_minor" ]; then
        lint_python=$venv/bin/python
        how="pip install ./python"
        note "Python $minor: $how"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            --force-reinstall --no-deps ./python
    else
        how="maturin build --profile dev"
        note "Python $minor: $how"
        wheels=$root/.venv/wheels/py$minor
        rm -rf "$wheels"
        (cd python && "$venv/bin/maturin" build --profile dev --interpreter "$venv/bin/python" \
            --out "$wheels") &&
            "$venv/bin/python" -m pip install -q --disable-pip-version-check \
                --force-reinstall --no-deps "$wheels"/*.whl
    fi || { record "Python $minor" FAILED "building the extension ($how)"; continue; }
    if [ -z "$(test_files)" ]; then
        record "Python $minor" passed "no test files yet; $how"
        continue
    fi
    note "Python $minor: python -m pytest python/tests -q"
    timeout "$pytest_timeout" "$venv/bin/python" -m pytest python/tests -q
    status=$?
    if [ $status = 0 ]; then
        record "Python $minor" passed "$how"
    elif [ $status = 5 ]; then
        record "Python $minor" FAILED "pytest collected no tests from the test files"
    elif [ $status = 124 ]; then
        record "Python $minor" FAILED "pytest took over ${pytest_timeout}s"
    else
        record "Python $minor" FAILED "pytest exit status $status"
    fi
done

# ---------------------------------------------------------------- Python lint -------------

if [ -n "$lint_python" ]; then
    note "lint: ruff check python/ && ruff format --check python/"
    ruff=$(dirname "$lint_python")/ruff
    if "$ruff" check python/ && "$ruff" format --check python/; then
        record lint passed "ruff"
    else
        record lint FAILED "ruff"
    fi
else
    record lint skipped "no Python to run ruff in"
fi

echo
echo "==== summary ($((SECONDS / 60)) min $((SECONDS % 60)) s in all)"
printf '%s\n' "${summary[@]}"
exit $failed
