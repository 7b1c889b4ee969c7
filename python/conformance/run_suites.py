"""Runs the test suites of aiohttp and uvicorn on the standard library's loop and on oxloop.

    python python/conformance/run_suites.py [--details] [--json FILE] [--python PY]
        [--loop stdlib|oxloop|both] [--test-timeout S] [--timeout S]
        [--files aiohttp=tests/a.py,tests/b.py] [SUITE ...]

For each suite (default: aiohttp and uvicorn, at the versions pinned in
python/requirements-test.txt) the script

1. downloads the suite's source distribution from PyPI (`pip download --no-binary
   :all:`) and unpacks it into a cache directory outside the sources (`.venv/suites/`,
   ignored by git; `--cache` to choose another);
2. makes a venv there for the suite, installs the suite's own test requirements, pinned
   as the suite pins them (what cannot be installed here is skipped and listed), the
   released package itself, and oxloop from `python/` (`pip install ./python`);
3. runs the suite's tests with pytest twice: on the standard library's loop (the
   baseline: what fails here whatever the loop) and on oxloop, with
   `suite_loop_plugin.py` loaded by `-p` to put oxloop under them without changing
   them, each test limited by pytest-timeout;
4. prints, per suite and loop, the tests passed, failed, errored and skipped, how many
   ran on the loop under test (they built at least one), and the tests that fail only on
   oxloop.

The script needs Python 3.11 or newer (`tomllib`); `--python` picks the interpreter
of the suites' venvs. The suites run one after the other and without pytest-xdist.
The exit code is 0 whenever the runner worked: failing tests are results. It is an
explicit command, not part of the default tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(PYTHON_DIR)

OUTCOMES = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed")
FAILING = ("failed", "errors", "xpassed")

# Requirements that only lint, type-check, publish, run coverage under pytest
# (pytest-cov) or drive Docker (aiohttp's Autobahn tests, left out): not installed.
NOT_FOR_RUNNING_TESTS = re.compile(
    r"^(ruff|mypy|types-|twine|pytest-cov|python-on-whales)",
    re.IGNORECASE,
)


def _pinned_version(name: str) -> str:
    with open(os.path.join(PYTHON_DIR, "requirements-test.txt")) as f:
        for line in f:
            if line.lower().startswith(name + "=="):
                return line.split("==", 1)[1].strip()
    raise SystemExit(f"{name} is not pinned in python/requirements-test.txt")


def _aiohttp_requirements(source: str) -> list[str]:
    """aiohttp's requirements/test.txt (every requirement pinned)."""
    lines = []
    with open(os.path.join(source, "requirements", "test.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                lines.append(line)
    return lines


def _uvicorn_requirements(source: str) -> list[str]:
    """uvicorn's `dev` dependency group in pyproject.toml (its own pins)."""
    import tomllib

    with open(os.path.join(source, "pyproject.toml"), "rb") as f:
        groups = tomllib.load(f)["dependency-groups"]
    return [requirement for requirement in groups["dev"] if isinstance(requirement, str)]


SUITES = {
    "aiohttp": {
        "requirements": _aiohttp_requirements,
        "package": "aiohttp=={version}",
        # Their pytest.ini adds xdist, coverage and doctests of the package; the rest of
        # their configuration (filterwarnings = error, markers) stays.
        "pytest_args": [
            "-o",
            "addopts=",
            "--strict-markers",
            "-m",
            "not dev_mode and not autobahn and not internal",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
        ],
        "ignore": ["tests/autobahn", "tests/isolated"],
    },
    "uvicorn": {
        "requirements": _uvicorn_requirements,
        "package": "uvicorn[standard]=={version}",
        "pytest_args": [
            "-o",
            "addopts=",
            "--strict-markers",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
        ],
        "ignore": [],
    },
}


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, **kwargs)


def prepare(name: str, python: str, cache: str, reinstall: bool) -> dict:
    """The suite's sources and venv, made once (again with `reinstall`)."""
    version = _pinned_version(name)
    sdists = os.path.join(cache, "sdists")
    os.makedirs(sdists, exist_ok=True)
    source = os.path.join(cache, "src", f"{name}-{version}")
    if not os.path.isdir(source):
        archive = os.path.join(sdists, f"{name}-{version}.tar.gz")
        if not os.path.exists(archive):
            _run(
                [
                    python,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-binary",
                    ":all:",
                    "--no-deps",
                    "-d",
                    sdists,
                    f"{name}=={version}",
                ],
                check=True,
            )
        with tarfile.open(archive) as tar:
            tar.extractall(os.path.join(cache, "src"), filter="data")
    if not os.path.isdir(os.path.join(source, "tests")):
        raise SystemExit(f"the {name} {version} source distribution has no tests/")

    venv = os.path.join(cache, f"venv-{name}")
    venv_python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "requirements-installed.json")
    if reinstall and os.path.isdir(venv):
        shutil.rmtree(venv)
    if not os.path.exists(venv_python):
        _run([python, "-m", "venv", venv], check=True)
    pip = [venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if os.path.exists(stamp):
        with open(stamp) as f:
            installed = json.load(f)
    else:
        requirements = [
            requirement
            for requirement in SUITES[name]["requirements"](source)
            if not NOT_FOR_RUNNING_TESTS.match(requirement)
        ]
        left_out = [
            requirement
            for requirement in SUITES[name]["requirements"](source)
            if NOT_FOR_RUNNING_TESTS.match(requirement)
        ]
        wanted = requirements + [SUITES[name]["package"].format(version=version)]
        wanted.append("pytest-timeout")
        failed = []
        if _run(pip + wanted).returncode != 0:
            # One at a time, keeping what installs here.
            for requirement in wanted:
                if _run(pip + [requirement]).returncode != 0:
                    failed.append(requirement)
        installed = {"not_installed": failed, "left_out": left_out}
        with open(stamp, "w") as f:
            json.dump(installed, f)
    # oxloop itself, built from this checkout every time (an incremental build).
    _run(pip + ["--force-reinstall", "--no-deps", PYTHON_DIR], check=True)
    versions = subprocess.run(
        [
            venv_python,
            "-c",
            "import sys, importlib.metadata as m; "
            f"print(sys.version.split()[0], m.version('{name}'), m.version('pytest'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "name": name,
        "version": version,
        "source": source,
        "python": venv_python,
        "python_version": versions[0],
        "installed_version": versions[1],
        "pytest_version": versions[2],
        **installed,
    }


def run_suite(
    suite: dict, loop: str, files: list[str], test_timeout: float, timeout: float, cache: str
) -> dict:
    record_path = os.path.join(cache, f"records-{suite['name']}-{loop}.jsonl")
    if os.path.exists(record_path):
        os.remove(record_path)
    config = SUITES[suite["name"]]
    command = [
        os.path.join(os.path.dirname(suite["python"]), "pytest"),
        *config["pytest_args"],
        "-p",
        "suite_loop_plugin",
        f"--timeout={test_timeout:g}",
        "-q",
        "-rN",
        "--no-header",
        *[f"--ignore={path}" for path in config["ignore"]],
        *(files or ["tests"]),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE
    env["OXLOOP_SUITE_LOOP"] = loop
    env["OXLOOP_SUITE_RECORD"] = record_path
    env.pop("PYTHONASYNCIODEBUG", None)
    started = time.monotonic()
    log_path = os.path.join(cache, f"output-{suite['name']}-{loop}.txt")
    with open(log_path, "w") as log:
        try:
            completed = _run(
                command,
                cwd=suite["source"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            status = f"pytest exited with {completed.returncode}"
        except subprocess.TimeoutExpired:
            status = f"stopped after {timeout:.0f} s"
    records = []
    if os.path.exists(record_path):
        with open(record_path) as f:
            records = [json.loads(line) for line in f]
    return {
        "loop": loop,
        "status": status,
        "seconds": round(time.monotonic() - started, 1),
        "output": log_path,
        "records": records,
    }


def summarise(run: dict) -> dict:
    counts = {outcome: 0 for outcome in OUTCOMES}
    on_loop = 0
    for record in run["records"]:
        counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
        if record["loops"] == "under_test" and record["outcome"] != "skipped":
            on_loop += 1
    return {
        "loop": run["loop"],
        "tests": len(run["records"]),
        **counts,
        "ran_on_loop": on_loop,
        "seconds": run["seconds"],
        "status": run["status"],
    }


def _failing(run: dict) -> dict[str, dict]:
    return {record["id"]: record for record in run["records"] if record["outcome"] in FAILING}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help=f"suites to run (default: {' '.join(SUITES)})")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter to make the suites' venvs with"
    )
    parser.add_argument(
        "--cache",
        default=os.path.join(ROOT, ".venv", "suites"),
        help="where the sources, venvs and outputs go (default .venv/suites)",
    )
    parser.add_argument("--loop", choices=["stdlib", "oxloop", "both"], default="both")
    parser.add_argument(
        "--files",
        action="append",
        default=[],
        metavar="SUITE=PATH,...",
        help="run only these test files or node ids of a suite (default: all of tests/)",
    )
    parser.add_argument("--test-timeout", type=float, default=60.0, help="seconds per test")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per suite and loop")
    parser.add_argument("--reinstall", action="store_true", help="make the venvs again")
    parser.add_argument("--json", metavar="FILE", help="write the results here as JSON")
    parser.add_argument(
        "--details", action="store_true", help="print why each oxloop-only failure failed"
    )
    args = parser.parse_args()

    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite: {' '.join(sorted(unknown))}")
    files: dict[str, list[str]] = {}
    for entry in args.files:
        name, _, paths = entry.partition("=")
        files.setdefault(name, []).extend(path for path in paths.split(",") if path)
    loops = ["stdlib", "oxloop"] if args.loop == "both" else [args.loop]
    args.cache = os.path.abspath(args.cache)
    os.makedirs(args.cache, exist_ok=True)

    results = []
    for name in args.suites or list(SUITES):
        suite = prepare(name, args.python, args.cache, args.reinstall)
        runs = {
            loop: run_suite(
                suite, loop, files.get(name, []), args.test_timeout, args.timeout, args.cache
            )
            for loop in loops
        }
        result = {
            **{key: value for key, value in suite.items() if key != "python"},
            "files": files.get(name) or ["tests"],
            "summaries": [summarise(run) for run in runs.values()],
        }
        if len(runs) == 2:
            oxloop_failing = _failing(runs["oxloop"])
            stdlib_failing = _failing(runs["stdlib"])
            stdlib_ids = {record["id"] for record in runs["stdlib"]["records"]}
            result["oxloop_only"] = [
                oxloop_failing[test_id]
                for test_id in sorted(set(oxloop_failing) - set(stdlib_failing))
            ]
            result["stdlib_only"] = sorted(set(stdlib_failing) - set(oxloop_failing))
            result["not_run_on_stdlib"] = sum(
                1 for record in runs["oxloop"]["records"] if record["id"] not in stdlib_ids
            )
        results.append(result)
        _print_result(result, args.details)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _print_result(result: dict, details: bool) -> None:
    print()
    print(
        f"{result['name']} {result['version']} (installed {result['installed_version']}), "
        f"Python {result['python_version']}, pytest {result['pytest_version']}; "
        f"tests: {' '.join(result['files'])}"
    )
    if result.get("not_installed"):
        print("  not installable here (skipped): " + ", ".join(result["not_installed"]))
    if result.get("left_out"):
        print("  not installed (not needed to run the tests): " + ", ".join(result["left_out"]))
    columns = ["loop", *OUTCOMES, "ran_on_loop", "seconds"]
    print("  " + "  ".join(f"{column:>11}" for column in columns) + "  status")
    for summary in result["summaries"]:
        print(
            "  "
            + "  ".join(f"{summary[column]!s:>11}" for column in columns)
            + "  "
            + summary["status"]
        )
    if "oxloop_only" in result:
        print(f"  failing only on oxloop: {len(result['oxloop_only'])}")
        for record in result["oxloop_only"]:
            print(f"    {record['id']} ({record['outcome']})")
            if details and record.get("detail"):
                for line in record["detail"].splitlines()[-12:]:
                    print("      | " + line)
        print(f"  failing only on the standard library's loop: {len(result['stdlib_only'])}")
        for test_id in result["stdlib_only"]:
            print(f"    {test_id}")


if __name__ == "__main__":
    sys.exit(main())
