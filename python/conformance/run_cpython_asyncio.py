"""Runs CPython's own asyncio test suite (`test.test_asyncio`) against `oxloop.Loop`.

    python python/conformance/run_cpython_asyncio.py [--json FILE] [--timeout S]
        [--details] [MODULE ...]

Every module runs in its own child process with a time limit. In the child, the
oxloop policy is installed and kept installed, so every test that asks asyncio for a
loop (`asyncio.new_event_loop()`, `asyncio.run()`, `asyncio.Runner`,
`unittest.IsolatedAsyncioTestCase`, `policy.new_event_loop()`) gets an `oxloop.Loop`.
The test classes that name the selector loop they test (`EPollEventLoopTests` and
kin: `create_event_loop` / `new_loop` returning `asyncio.SelectorEventLoop(...)`) get
an `oxloop.Loop` instead; the copies of those classes that differ only in the
selector (poll, select, kqueue) are left out, since they would run the same tests on
the same loop again. Tests that build `asyncio.SelectorEventLoop` in their own
`setUp`, the mock loop of `test_utils.TestLoop`, or mocks test the standard library
itself and run as they are.

Each test is sorted by the loops it created: `oxloop` (at least one `oxloop.Loop`),
`stdlib` (a standard-library loop, none of oxloop's) or `none`. The per-module
counts say how many tests actually ran on oxloop. The exit code is 0 whenever the
runner itself worked: failing tests are results, not a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

# The modules run by default (Windows-only modules are left out).
DEFAULT_MODULES = [
    "test_base_events",
    "test_buffered_proto",
    "test_context",
    "test_events",
    "test_futures",
    "test_futures2",
    "test_locks",
    "test_pep492",
    "test_protocols",
    "test_queues",
    "test_runners",
    "test_selector_events",
    "test_sendfile",
    "test_server",
    "test_sock_lowlevel",
    "test_ssl",
    "test_sslproto",
    "test_streams",
    "test_subprocess",
    "test_taskgroups",
    "test_tasks",
    "test_threads",
    "test_timeouts",
    "test_transports",
    "test_unix_events",
    "test_waitfor",
]

# Test classes whose loop factory (`create_event_loop` or `new_loop`) builds the
# standard library's selector loop: they get an `oxloop.Loop` instead.
LOOP_FACTORY_CLASSES = {
    "test_events": ["EPollEventLoopTests"],
    "test_sendfile": ["EPollEventLoopTests"],
    "test_sock_lowlevel": ["EPollEventLoopTests"],
    "test_server": ["SelectorStartServerTests"],
    "test_buffered_proto": ["BufferedProtocolSelectorTests"],
    "test_sslproto": ["SelectorStartTLSTests"],
}

# Copies of a class above that differ only in the selector (or child watcher) the
# standard library would use: on oxloop they repeat the same tests.
DUPLICATE_CLASSES = {
    "test_events": ["PollEventLoopTests", "SelectEventLoopTests", "KqueueEventLoopTests"],
    "test_sendfile": ["PollEventLoopTests", "SelectEventLoopTests", "KqueueEventLoopTests"],
    "test_sock_lowlevel": ["PollEventLoopTests", "SelectEventLoopTests", "KqueueEventLoopTests"],
    "test_subprocess": [
        "SubprocessSafeWatcherTests",
        "SubprocessFastWatcherTests",
        "SubprocessMultiLoopWatcherTests",
        "SubprocessPidfdWatcherTests",
    ],
}

OUTCOMES = ("passed", "failed", "errors", "skipped", "expected_failures", "unexpected_successes")


# ---------------------------------------------------------------------------
# Child: one module in this process.
# ---------------------------------------------------------------------------


class _LoopCounter:
    """Counts the loops built: oxloop's and the standard library's."""

    def __init__(self) -> None:
        self.oxloop = 0
        self.stdlib = 0

    def install(self, oxloop_loop_class) -> None:
        import asyncio.base_events

        counter = self
        base_init = asyncio.base_events.BaseEventLoop.__init__

        def counting_init(loop, *args, **kwargs):
            if isinstance(loop, oxloop_loop_class):
                counter.oxloop += 1
            else:
                counter.stdlib += 1
            return base_init(loop, *args, **kwargs)

        asyncio.base_events.BaseEventLoop.__init__ = counting_init


def _install_oxloop_policy():
    """Installs oxloop's policy so that resetting the policy (`set_event_loop_policy
    (None)`, as the test modules' `tearDownModule` do) installs it again."""
    import asyncio
    import asyncio.events

    import oxloop

    asyncio.DefaultEventLoopPolicy = oxloop.EventLoopPolicy
    original_set_policy = asyncio.events.set_event_loop_policy

    def set_event_loop_policy(policy):
        if policy is None:
            policy = oxloop.EventLoopPolicy()
        original_set_policy(policy)

    asyncio.events.set_event_loop_policy = set_event_loop_policy
    asyncio.set_event_loop_policy = set_event_loop_policy
    oxloop.install()
    return oxloop


def _adapt_module(module, name: str, oxloop) -> list[str]:
    """Points the loop factories of the chosen classes at oxloop; returns the
    duplicate classes to leave out."""
    for class_name in LOOP_FACTORY_CLASSES.get(name, []):
        cls = getattr(module, class_name, None)
        if cls is None:
            continue
        for factory in ("create_event_loop", "new_loop"):
            if factory in vars(cls):
                setattr(cls, factory, lambda self: oxloop.Loop())
    if name == "test_runners":
        _adapt_runners(module, oxloop)
    return DUPLICATE_CLASSES.get(name, [])


def _adapt_runners(module, oxloop) -> None:
    """`test_runners` gives `asyncio.run` and `asyncio.Runner` a mocked
    `BaseEventLoop` whose `shutdown_asyncgens` records its call; an `oxloop.Loop`
    with the same recording takes its place."""

    def new_loop(self):
        loop = oxloop.Loop()
        loop.shutdown_ag_run = False
        shutdown_asyncgens = loop.shutdown_asyncgens

        async def recording_shutdown_asyncgens():
            loop.shutdown_ag_run = True
            await shutdown_asyncgens()

        loop.shutdown_asyncgens = recording_shutdown_asyncgens
        return loop

    module.BaseTest.new_loop = new_loop


def _iter_tests(suite):
    import unittest

    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _iter_tests(item)
        else:
            yield item


def _filter_suite(suite, left_out: list[str]):
    import unittest

    kept = unittest.TestSuite()
    dropped = 0
    for test in _iter_tests(suite):
        if type(test).__name__ in left_out:
            dropped += 1
        else:
            kept.addTest(test)
    return kept, dropped


def _make_result_class(counter: _LoopCounter):
    import unittest

    class RecordingResult(unittest.TextTestResult):
        """Records each test's outcome and the loops it created."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.records = {}
            self._before = (0, 0)

        def _record(self, test, outcome, detail=None):
            test_id = test.id()
            record = self.records.setdefault(
                test_id, {"id": test_id, "outcome": "passed", "loops": "none"}
            )
            # A failure or error reported after success (in cleanups) wins.
            if outcome != "passed" or record["outcome"] == "passed":
                record["outcome"] = outcome
            if detail:
                record["detail"] = detail

        def startTest(self, test):
            self._before = (counter.oxloop, counter.stdlib)
            super().startTest(test)

        def stopTest(self, test):
            super().stopTest(test)
            record = self.records.get(test.id())
            if record is None:
                return
            oxloops = counter.oxloop - self._before[0]
            stdlib_loops = counter.stdlib - self._before[1]
            record["loops"] = "oxloop" if oxloops else ("stdlib" if stdlib_loops else "none")

        def addSuccess(self, test):
            super().addSuccess(test)
            self._record(test, "passed")

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._record(test, "failed", self._exc_info_to_string(err, test))

        def addError(self, test, err):
            super().addError(test, err)
            # setUpModule/setUpClass errors come as _ErrorHolder, without id() of a test.
            self._record(test, "errors", self._exc_info_to_string(err, test))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._record(test, "skipped", reason)

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._record(test, "expected_failures")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._record(test, "unexpected_successes")

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                failed = issubclass(err[0], test.failureException)
                self._record(
                    test, "failed" if failed else "errors", self._exc_info_to_string(err, test)
                )

    return RecordingResult


def run_child(name: str, result_path: str, verbose: bool) -> None:
    import unittest

    oxloop = _install_oxloop_policy()
    counter = _LoopCounter()
    counter.install(oxloop.Loop)
    started = time.monotonic()
    report = {"module": name, "python": sys.version.split()[0]}
    try:
        module = __import__(f"test.test_asyncio.{name}", fromlist=["*"])
        left_out = _adapt_module(module, name, oxloop)
        suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        suite, dropped = _filter_suite(suite, left_out)
        runner = unittest.TextTestRunner(
            stream=sys.stderr,
            verbosity=2 if verbose else 0,
            resultclass=_make_result_class(counter),
        )
        result = runner.run(suite)
        report["records"] = list(result.records.values())
        report["left_out_duplicates"] = dropped
    except BaseException:
        report["crash"] = traceback.format_exc()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["oxloop_loops"] = counter.oxloop
    report["stdlib_loops"] = counter.stdlib
    with open(result_path, "w") as f:
        json.dump(report, f)


# ---------------------------------------------------------------------------
# Parent: one child process per module, then the table.
# ---------------------------------------------------------------------------


def _summarise(report: dict) -> dict:
    records = report.get("records", [])
    counts = {outcome: 0 for outcome in OUTCOMES}
    on_oxloop = {outcome: 0 for outcome in OUTCOMES}
    for record in records:
        counts[record["outcome"]] += 1
        if record["loops"] == "oxloop":
            on_oxloop[record["outcome"]] += 1
    ran = len(records) - counts["skipped"]
    return {
        "module": report["module"],
        "status": report.get("status", "ran"),
        "seconds": report.get("seconds"),
        "ran": ran,
        **counts,
        "ran_on_oxloop": sum(on_oxloop.values()) - on_oxloop["skipped"],
        "failed_on_oxloop": on_oxloop["failed"] + on_oxloop["errors"],
        "oxloop_loops": report.get("oxloop_loops", 0),
        "stdlib_loops": report.get("stdlib_loops", 0),
        "left_out_duplicates": report.get("left_out_duplicates", 0),
    }


def run_module(name: str, python: str, timeout: float, verbose: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="oxloop-conformance-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        command = [python, os.path.abspath(__file__), "--child", name, "--result", result_path]
        if verbose:
            command.append("--verbose")
        started = time.monotonic()
        try:
            completed = subprocess.run(
                command,
                cwd=tmp,  # the tests write their scratch files into the current directory
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
            output = completed.stdout.decode(errors="replace")
            status = "ran"
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace")
            status = f"timed out after {timeout:.0f} s"
        if os.path.exists(result_path):
            with open(result_path) as f:
                report = json.load(f)
        else:
            report = {"module": name}
            if status == "ran":
                status = f"child exited with {completed.returncode}"
        report["status"] = status if "crash" not in report else "crashed while loading"
        report.setdefault("seconds", round(time.monotonic() - started, 1))
        report["output_tail"] = output[-4000:]
        return report


def _print_table(summaries: list[dict], python_version: str) -> None:
    columns = [
        ("module", 20),
        ("ran", 5),
        ("passed", 6),
        ("failed", 6),
        ("errors", 6),
        ("skipped", 7),
        ("ran_on_oxloop", 13),
        ("failed_on_oxloop", 16),
        ("seconds", 7),
    ]
    print(f"CPython {python_version} test.test_asyncio on oxloop.Loop")
    print(
        "  ".join(
            f"{title:>{width}}" if title != "module" else f"{title:<{width}}"
            for title, width in columns
        )
        + "  status"
    )
    totals = {title: 0 for title, _ in columns[1:]}
    for summary in summaries:
        cells = []
        for title, width in columns:
            value = summary.get(title)
            if title == "module":
                cells.append(f"{value:<{width}}")
            else:
                cells.append(f"{value if value is not None else '-':>{width}}")
                if isinstance(value, (int, float)):
                    totals[title] += value
        print("  ".join(cells) + ("  " + summary["status"] if summary["status"] != "ran" else ""))
    cells = [f"{'total':<20}"] + [
        f"{round(totals[title], 1):>{width}}" for title, width in columns[1:]
    ]
    print("  ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="test modules (default: all Unix ones)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with oxloop")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per module")
    parser.add_argument("--json", metavar="FILE", help="write the results here as JSON")
    parser.add_argument("--details", action="store_true", help="list every failing test")
    parser.add_argument("--verbose", action="store_true", help="unittest's verbose output")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        run_child(args.child, args.result, args.verbose)
        return 0

    python_version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    reports, summaries = [], []
    for name in args.modules or DEFAULT_MODULES:
        report = run_module(name, args.python, args.timeout, args.verbose)
        summary = _summarise(report)
        reports.append(report)
        summaries.append(summary)
        print(
            f"{name}: {summary['status']}, ran {summary['ran']}, passed {summary['passed']}, "
            f"failed {summary['failed']}, errors {summary['errors']}, skipped "
            f"{summary['skipped']}; on oxloop {summary['ran_on_oxloop']} "
            f"(failed {summary['failed_on_oxloop']}), {summary['seconds']} s",
            flush=True,
        )
        if args.details or summary["status"] != "ran":
            if "crash" in report:
                print(report["crash"])
            elif summary["status"] != "ran":
                print(report["output_tail"])
            for record in report.get("records", []):
                if record["outcome"] in ("failed", "errors", "unexpected_successes"):
                    print(f"    {record['outcome']:>7} [{record['loops']}] {record['id']}")
    print()
    _print_table(summaries, python_version)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": python_version,
                    "date": time.strftime("%Y-%m-%d"),
                    "summaries": summaries,
                    "modules": reports,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
