"""The programs in python/examples run and print what they promise."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECTED = {
    "echo.py": ["HELLO", "FROM", "OXLOOP", "loop: oxloop._loop"],
    "timers_and_threads.py": ["call_soon", "from a thread", "timer first", "timer last"],
    "green_echo_server.py": ["GREEN", "ECHO", "SERVER", "done"],
    "green_crawler.py": ["30 pages", "page 0"],
    "green_and_asyncio.py": [
        *(f"asyncio says hello {n} and waited for asyncio" for n in range(3)),
        "loop: oxloop._loop",
    ],
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
