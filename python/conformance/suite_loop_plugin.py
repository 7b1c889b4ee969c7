"""A pytest plugin that puts a chosen event loop under another project's test suite
and records, for every test, its outcome and the loops it built.

Loaded by `run_suites.py` with `-p suite_loop_plugin` (this directory on
`PYTHONPATH`); the suite's own files are not changed. The environment says what to do:

- `OXLOOP_SUITE_LOOP=oxloop`: `oxloop.EventLoopPolicy` is installed and stays installed
  (`asyncio.set_event_loop_policy(None)` installs it again), so whatever asks asyncio
  for a loop (`asyncio.new_event_loop()`, `asyncio.run()`, `asyncio.Runner`, aiohttp's
  `pyloop` loop factory, anyio's asyncio backend) gets an `oxloop.Loop`; uvicorn's
  `loop="asyncio"` setting gives `oxloop.Loop` too.
- `OXLOOP_SUITE_LOOP=stdlib`: nothing is replaced (the baseline run); the standard
  library's selector loop is the loop under test.
- `OXLOOP_SUITE_RECORD=FILE`: one JSON line per test is appended to FILE: its node id,
  its outcome, and whether it built a loop under test (`"loops": "under_test"`), only
  other loops (`"other"`) or none.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import json
import os

import pytest

_LOOP = os.environ.get("OXLOOP_SUITE_LOOP", "stdlib")
_counts = {"under_test": 0, "other": 0}
_records: dict[str, dict] = {}
_record_file = None


def _is_under_test(loop) -> bool:
    if _LOOP == "oxloop":
        return type(loop).__module__.startswith("oxloop")
    return type(loop) is asyncio.SelectorEventLoop


def _count_loops() -> None:
    base_init = asyncio.base_events.BaseEventLoop.__init__

    def counting_init(loop, *args, **kwargs):
        _counts["under_test" if _is_under_test(loop) else "other"] += 1
        return base_init(loop, *args, **kwargs)

    asyncio.base_events.BaseEventLoop.__init__ = counting_init


def _install_oxloop() -> None:
    import oxloop

    policy_class = oxloop.EventLoopPolicy
    asyncio.DefaultEventLoopPolicy = policy_class
    original_set_policy = asyncio.events.set_event_loop_policy

    def set_event_loop_policy(policy):
        if policy is None:
            policy = policy_class()
        original_set_policy(policy)

    asyncio.events.set_event_loop_policy = set_event_loop_policy
    asyncio.set_event_loop_policy = set_event_loop_policy
    set_event_loop_policy(None)

    try:
        import uvicorn.loops.asyncio as uvicorn_asyncio
    except ImportError:
        return

    def oxloop_loop_factory(use_subprocess: bool = False):
        return oxloop.Loop

    uvicorn_asyncio.asyncio_loop_factory = oxloop_loop_factory


def pytest_configure(config: pytest.Config) -> None:
    global _record_file
    if _LOOP == "oxloop":
        _install_oxloop()
    _count_loops()
    path = os.environ.get("OXLOOP_SUITE_RECORD")
    if path and not hasattr(config, "workerinput"):
        _record_file = open(path, "a")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _record_file is not None:
        _record_file.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    before = dict(_counts)
    yield
    record = _records.pop(item.nodeid, {"id": item.nodeid, "outcome": "passed"})
    if _counts["under_test"] > before["under_test"]:
        record["loops"] = "under_test"
    elif _counts["other"] > before["other"]:
        record["loops"] = "other"
    else:
        record["loops"] = "none"
    if _record_file is not None:
        _record_file.write(json.dumps(record) + "\n")
        _record_file.flush()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    record = _records.setdefault(report.nodeid, {"id": report.nodeid, "outcome": "passed"})
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome  # passed, failed, skipped
        record["outcome"] = outcome
    elif report.failed:
        # An error in setup or teardown, unless the test itself already failed.
        if record["outcome"] != "failed":
            record["outcome"] = "errors"
    elif report.skipped and report.when == "setup":
        record["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    if report.failed:
        record["detail"] = report.longreprtext[-3000:]
