"""Runs CPython's own asyncio test suite (`test.test_asyncio`) against `oxloop.Loop`.

    python python/conformance/run_cpython_asyncio.py [--details] [--with-control]
        [--json FILE] [--python PY] [--timeout S] [--test-timeout S] [MODULE ...]

Every module runs in its own child process with a time limit. In the child, the
oxloop policy is installed and kept installed, so every test that asks asyncio for a
loop (`asyncio.new_event_loop()`, `asyncio.run()`, `asyncio.Runner`,
`unittest.IsolatedAsyncioTestCase`, `policy.new_event_loop()`) gets an `oxloop.Loop`.
The test classes that name the selector loop they test (`EPollEventLoopTests` and
kin) get an `oxloop.Loop` from their factory, and so do a few classes that build a
loop in `setUp` and `new_test_loop()` without a time generator (see the tables
below); the copies of those classes that differ only in the selector (poll, select,
kqueue) or child watcher are left out, since they would run the same tests on the
same loop again. Tests that mock the selector, the socket module or a transport's
loop test the standard library itself and run as they are.

Each test is filed by the loops it built: on the loop under test (at least one) or
not. The per-module counts say how many tests actually ran on oxloop. With
`--with-control` each module also runs with the standard library's selector loop in
the same places, and the failures both runs share are counted. The exit code is 0
whenever the runner itself worked: failing tests are results, not a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
    "test_eager_task_factory",  # Python 3.12 on
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
    "test_staggered",  # Python 3.13 on
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

# Test classes that build their loop in `setUp` (the standard library's selector
# loop, or a `BaseEventLoop` with a mocked selector that never waits) and use it for
# real work: the loop under test replaces it after `setUp`.
SETUP_LOOP_CLASSES = {
    "test_pep492": ["BaseTest"],
    "test_unix_events": ["SelectorEventLoopUnixSocketTests"],
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

# Modules whose `new_test_loop()` without a time generator gets a real oxloop loop
# (elsewhere that mock loop is asserted on: `assert_reader`, `readers`, counters).
REAL_TEST_LOOP_MODULES = ["test_futures", "test_pep492", "test_tasks"]

# Single tests left out (none at present): `{"test_module": ["Class.test_name"]}`.
LEFT_OUT_TESTS: dict[str, list[str]] = {}

OUTCOMES = ("passed", "failed", "errors", "skipped", "expected_failures", "unexpected_successes")


# ---------------------------------------------------------------------------
# Child: one module in this process.
# ---------------------------------------------------------------------------


class _LoopCounter:
    """Counts the loops built: the loop under test and any other."""

    def __init__(self) -> None:
        self.under_test = 0
        self.other = 0

    def install(self, loop_class) -> None:
        import asyncio.base_events

        counter = self
        base_init = asyncio.base_events.BaseEventLoop.__init__

        def counting_init(loop, *args, **kwargs):
            if isinstance(loop, loop_class):
                counter.under_test += 1
            else:
                counter.other += 1
            return base_init(loop, *args, **kwargs)

        asyncio.base_events.BaseEventLoop.__init__ = counting_init


def _loop_under_test(which: str):
    """The loop class and policy class under test: oxloop's, or for a control run
    the standard library's selector loop (as a subclass, to be told apart from the
    standard library's loops the tests build themselves)."""
    from asyncio import unix_events

    if which == "oxloop":
        import oxloop

        return oxloop.Loop, oxloop.EventLoopPolicy

    class StdlibLoop(unix_events.SelectorEventLoop):
        """The standard library's selector loop, under test (control run)."""

    class StdlibPolicy(unix_events.DefaultEventLoopPolicy):
        """The standard library's Unix policy handing out `StdlibLoop`."""

        _loop_factory = StdlibLoop

    return StdlibLoop, StdlibPolicy


def _install_policy(policy_class) -> None:
    """Installs the policy so that resetting it (`set_event_loop_policy(None)`, as the
    test modules' `tearDownModule` do) installs it again."""
    import asyncio
    import asyncio.events

    asyncio.DefaultEventLoopPolicy = policy_class
    original_set_policy = asyncio.events.set_event_loop_policy

    def set_event_loop_policy(policy):
        if policy is None:
            policy = policy_class()
        original_set_policy(policy)

    asyncio.events.set_event_loop_policy = set_event_loop_policy
    asyncio.set_event_loop_policy = set_event_loop_policy
    set_event_loop_policy(None)


def _adapt_module(module, name: str, loop_class) -> list[str]:
    """Points the loop factories of the chosen classes at the loop under test;
    returns the duplicate classes to leave out."""
    for class_name in LOOP_FACTORY_CLASSES.get(name, []):
        cls = getattr(module, class_name, None)
        if cls is None:
            continue
        for factory in ("create_event_loop", "new_loop"):
            if factory in vars(cls):
                setattr(cls, factory, lambda self: loop_class())
    if name == "test_runners":
        _adapt_runners(module, loop_class)
    for class_name in SETUP_LOOP_CLASSES.get(name, []):
        _adapt_setup_loop(getattr(module, class_name), loop_class)
    if name in REAL_TEST_LOOP_MODULES:
        _adapt_test_loop(loop_class)
    return DUPLICATE_CLASSES.get(name, [])


def _adapt_test_loop(loop_class) -> None:
    """`test_utils.TestCase.new_test_loop()` without a time generator gives the loop
    under test (real time); with one, the mock loop of virtual time stays."""
    from test.test_asyncio import utils as test_utils

    new_test_loop = test_utils.TestCase.new_test_loop

    def new_real_test_loop(self, gen=None):
        if gen is not None:
            return new_test_loop(self, gen)
        loop = loop_class()
        self.set_event_loop(loop)
        return loop

    test_utils.TestCase.new_test_loop = new_real_test_loop


def _adapt_setup_loop(cls, loop_class) -> None:
    """After `cls.setUp` has built its own loop in `self.loop`, the loop under test
    takes its place."""
    base_setup = cls.setUp

    def setUp(self):
        base_setup(self)
        self.loop.close()
        self.loop = loop_class()
        self.set_event_loop(self.loop)

    cls.setUp = setUp


def _adapt_runners(module, loop_class) -> None:
    """`test_runners` gives `asyncio.run` and `asyncio.Runner` a mocked
    `BaseEventLoop` whose `shutdown_asyncgens` records its call; the loop under test,
    with the same recording, takes its place."""

    def new_loop(self):
        loop = loop_class()
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


def _filter_suite(suite, left_out_classes: list[str], left_out_tests: list[str]):
    import unittest

    kept = unittest.TestSuite()
    dropped = 0
    for test in _iter_tests(suite):
        class_name = type(test).__name__
        if class_name in left_out_classes:
            dropped += 1
        elif f"{class_name}.{getattr(test, '_testMethodName', '')}" in left_out_tests:
            dropped += 1
        else:
            kept.addTest(test)
    return kept, dropped


def _make_result_class(counter: _LoopCounter, progress, test_timeout: float):
    import faulthandler
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
            self._before = (counter.under_test, counter.other)
            progress.write(json.dumps({"start": test.id()}) + "\n")
            progress.flush()
            # A test that hangs: its threads' stacks go to the output, the child exits.
            faulthandler.dump_traceback_later(test_timeout, exit=True)
            super().startTest(test)

        def stopTest(self, test):
            faulthandler.cancel_dump_traceback_later()
            super().stopTest(test)
            record = self.records.get(test.id())
            if record is None:
                return
            under_test = counter.under_test - self._before[0]
            other = counter.other - self._before[1]
            record["loops"] = "under_test" if under_test else ("other" if other else "none")
            progress.write(json.dumps(record) + "\n")
            progress.flush()

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


def run_child(name: str, loop: str, result_path: str, verbose: bool, test_timeout: float) -> None:
    import unittest

    # A runner started in the background inherits SIGINT ignored; the tests expect
    # Python's usual start (SIGINT raising KeyboardInterrupt): test_runners interrupts
    # itself with `_thread.interrupt_main()`, which does nothing while SIGINT is
    # ignored, and test_events checks the SIGINT handler left after a removal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    loop_class, policy_class = _loop_under_test(loop)
    _install_policy(policy_class)
    counter = _LoopCounter()
    counter.install(loop_class)
    started = time.monotonic()
    report = {"module": name, "python": sys.version.split()[0]}
    progress = open(result_path + ".progress", "w")
    try:
        module = __import__(f"test.test_asyncio.{name}", fromlist=["*"])
        left_out = _adapt_module(module, name, loop_class)
        suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        suite, dropped = _filter_suite(suite, left_out, LEFT_OUT_TESTS.get(name, []))
        runner = unittest.TextTestRunner(
            stream=sys.stderr,
            verbosity=2 if verbose else 0,
            resultclass=_make_result_class(counter, progress, test_timeout),
        )
        result = runner.run(suite)
        report["records"] = list(result.records.values())
        report["left_out"] = dropped
    except BaseException:
        report["crash"] = traceback.format_exc()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["loops_under_test"] = counter.under_test
    report["other_loops"] = counter.other
    progress.close()
    with open(result_path, "w") as f:
        json.dump(report, f)


# ---------------------------------------------------------------------------
# Parent: one child process per module, then the table.
# ---------------------------------------------------------------------------


def _failing(report: dict) -> set[str]:
    return {
        record["id"]
        for record in report.get("records", [])
        if record["outcome"] in ("failed", "errors", "unexpected_successes")
    }


def _summarise(report: dict, control: dict | None) -> dict:
    records = report.get("records", [])
    counts = {outcome: 0 for outcome in OUTCOMES}
    on_loop = {outcome: 0 for outcome in OUTCOMES}
    for record in records:
        counts[record["outcome"]] += 1
        if record["loops"] == "under_test":
            on_loop[record["outcome"]] += 1
    summary = {
        "module": report["module"],
        "status": report.get("status", "ran"),
        "seconds": report.get("seconds"),
        "ran": len(records) - counts["skipped"],
        **counts,
        "ran_on_loop": sum(on_loop.values()) - on_loop["skipped"],
        "failed_on_loop": on_loop["failed"] + on_loop["errors"],
        "loops_under_test": report.get("loops_under_test", 0),
        "other_loops": report.get("other_loops", 0),
        "left_out": report.get("left_out", 0),
    }
    if control is not None:
        summary["failing_in_control_too"] = len(_failing(report) & _failing(control))
        summary["control_status"] = control.get("status", "ran")
    return summary


def _partial_report(name: str, progress_path: str, test_timeout: float) -> dict:
    """The tests a child finished before it was stopped, and the one it was in."""
    records, current = [], None
    with open(progress_path) as f:
        for line in f:
            entry = json.loads(line)
            if "start" in entry:
                current = entry["start"]
            else:
                records.append(entry)
                current = None
    if current is not None:
        records.append(
            {
                "id": current,
                "outcome": "errors",
                "loops": "under_test",
                "detail": f"hung: no result after {test_timeout:.0f} s (stacks in the output)",
            }
        )
    return {"module": name, "records": records, "hung_test": current}


def run_module(
    name: str, loop: str, python: str, timeout: float, test_timeout: float, verbose: bool
) -> dict:
    with tempfile.TemporaryDirectory(prefix="oxloop-conformance-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        command = [
            python,
            os.path.abspath(__file__),
            "--child",
            name,
            "--loop",
            loop,
            "--result",
            result_path,
            "--test-timeout",
            str(test_timeout),
        ]
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
        elif os.path.exists(result_path + ".progress"):
            report = _partial_report(name, result_path + ".progress", test_timeout)
            if status == "ran":
                status = f"child exited with {completed.returncode}"
            if report["hung_test"]:
                status += f"; hung in {report['hung_test']}"
        else:
            report = {"module": name}
            if status == "ran":
                status = f"child exited with {completed.returncode}"
        report["status"] = status if "crash" not in report else "crashed while loading"
        report.setdefault("seconds", round(time.monotonic() - started, 1))
        report["output_tail"] = output[-4000:]
        return report


def _print_table(summaries: list[dict], title: str, with_control: bool) -> None:
    columns = [
        ("module", 20),
        ("ran", 5),
        ("passed", 6),
        ("failed", 6),
        ("errors", 6),
        ("skipped", 7),
        ("ran_on_loop", 11),
        ("failed_on_loop", 14),
    ]
    if with_control:
        columns.append(("failing_in_control_too", 22))
    columns.append(("seconds", 7))
    print(title)
    print(
        "  ".join(
            f"{name:>{width}}" if name != "module" else f"{name:<{width}}"
            for name, width in columns
        )
        + "  status"
    )
    totals = {name: 0 for name, _ in columns[1:]}
    for summary in summaries:
        cells = []
        for name, width in columns:
            value = summary.get(name)
            if name == "module":
                cells.append(f"{value:<{width}}")
            else:
                cells.append(f"{value if value is not None else '-':>{width}}")
                if isinstance(value, (int, float)):
                    totals[name] += value
        print("  ".join(cells) + ("  " + summary["status"] if summary["status"] != "ran" else ""))
    cells = [f"{'total':<20}"] + [
        f"{round(totals[name], 1):>{width}}" for name, width in columns[1:]
    ]
    print("  ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="test modules (default: all Unix ones)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with oxloop")
    parser.add_argument(
        "--loop",
        choices=["oxloop", "stdlib"],
        default="oxloop",
        help="the loop under test: oxloop.Loop, or the standard library's selector loop "
        "put in the same places (a control run)",
    )
    parser.add_argument(
        "--with-control",
        action="store_true",
        help="also run each module with the standard library's loop in the same places "
        "and count the failures that happen there too",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per module")
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=120.0,
        help="seconds per test; a test that takes longer ends its module's run "
        "(its stacks are printed)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results here as JSON")
    parser.add_argument("--details", action="store_true", help="list every failing test")
    parser.add_argument("--verbose", action="store_true", help="unittest's verbose output")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        run_child(args.child, args.loop, args.result, args.verbose, args.test_timeout)
        return 0

    python_version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    present = subprocess.run(
        [
            args.python,
            "-c",
            "import os, test; print(*os.listdir(os.path.join(test.__path__[0], 'test_asyncio')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    modules = [name for name in args.modules or DEFAULT_MODULES if f"{name}.py" in present]
    for name in sorted(set(args.modules or DEFAULT_MODULES) - set(modules)):
        print(f"{name}: not in this Python's test.test_asyncio")
    loop_name = "oxloop.Loop" if args.loop == "oxloop" else "the standard library's loop"
    reports, summaries = [], []
    for name in modules:
        report = run_module(
            name, args.loop, args.python, args.timeout, args.test_timeout, args.verbose
        )
        control = None
        if args.with_control:
            control = run_module(
                name, "stdlib", args.python, args.timeout, args.test_timeout, False
            )
            report["control_failing"] = sorted(_failing(control))
        summary = _summarise(report, control)
        reports.append(report)
        summaries.append(summary)
        line = (
            f"{name}: {summary['status']}, ran {summary['ran']}, passed {summary['passed']}, "
            f"failed {summary['failed']}, errors {summary['errors']}, skipped "
            f"{summary['skipped']}; on the loop under test {summary['ran_on_loop']} "
            f"(failed {summary['failed_on_loop']}), {summary['seconds']} s"
        )
        if control is not None:
            line += f"; failing in the control run too: {summary['failing_in_control_too']}"
        print(line, flush=True)
        if args.details or summary["status"] != "ran":
            if "crash" in report:
                print(report["crash"])
            elif summary["status"] != "ran":
                print(report["output_tail"])
            control_failing = set(report.get("control_failing", ()))
            for record in report.get("records", []):
                if record["outcome"] in ("failed", "errors", "unexpected_successes"):
                    mark = " (control too)" if record["id"] in control_failing else ""
                    print(f"    {record['outcome']:>7} [{record['loops']}] {record['id']}{mark}")
    print()
    _print_table(
        summaries,
        f"CPython {python_version} test.test_asyncio on {loop_name}",
        args.with_control,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": python_version,
                    "loop": args.loop,
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
