"""The programs in python/examples run and print what they promise."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECTED = {
    "echo.py": ["HELLO", "FROM", "OXLOOP", "loop: oxloop._loop"],
    "timers_and_threads.py": ["call_soon", "from a thread", "timer first", "timer last"],
    "wire_beeps.py": ["beep\a"] * 4,
    "wire_show_event.py": ["Running...", "Running...", "Event 2", "Running...", "Event 3"]
    + ["Running...", "Event 4", "Running...", "Event 5"],
}


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


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
