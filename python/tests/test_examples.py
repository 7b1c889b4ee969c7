"""The programs in python/examples run and print what they promise."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECTED = {
    "echo.py": ["HELLO", "FROM", "OXLOOP", "loop: oxloop._loop"],
    "timers_and_threads.py": ["call_soon", "from a thread", "timer first", "timer last"],
    "foreign_loops.py": [
        "sched event ran",
        "asyncio task ran on _UnixSelectorEventLoop",
        "oxloop task ran on Loop",
        "closed: asyncio loop",
    ],
    "oxloop_in_selectors.py": [
        "host: read host data",
        "oxloop: echo PING",
        "oxloop: slept on an oxloop timer",
        "host: done in under 100 cycles (no busy polling)",
    ],
}

# Examples that need an X display; each is run by a test of its own, under Xvfb.
NEEDS_DISPLAY = {"oxloop_in_tk.py": "test_sources_tk.py"}


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted({*EXPECTED, *NEEDS_DISPLAY})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split("\n")[:-1] == EXPECTED[name], out.stderr
