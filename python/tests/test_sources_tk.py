"""Tk and oxloop, both ways round, on a private Xvfb display: Tk's event loop as a
source of an oxloop loop (`TkSource`), and an oxloop loop inside Tk's `mainloop()`
(the example python/examples/oxloop_in_tk.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run

from oxloop.sources import TkSource, add_source

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def tk_root(x_display, monkeypatch):
    import tkinter

    monkeypatch.setenv("DISPLAY", x_display)
    root = tkinter.Tk()
    yield root
    try:
        root.destroy()
    except tkinter.TclError:
        pass  # destroyed by the test


def test_tk_events_run_on_an_oxloop_loop(loop, tk_root):
    import tkinter

    src = add_source(loop, TkSource(tk_root))
    assert src.display_fd is not None
    assert os.path.exists(f"/proc/self/fd/{src.display_fd}")
    log = []
    tk_root.after(10, log.append, "after")
    tk_root.after_idle(log.append, "idle")
    window = tkinter.Toplevel(tk_root)
    window.bind("<Map>", lambda event: log.append("map from the X server"))
    src.update()  # Tk work was added from outside a dispatch

    async def until():
        while len(log) < 3:
            await asyncio.sleep(0.005)

    run(loop, until())
    assert sorted(log) == ["after", "idle", "map from the X server"]
    # Nothing pending in Tk: no deadline, so an idle Tk costs the loop nothing.
    assert src.deadline() is None
    loop.close()
    assert src.loop is None


def test_closing_the_loop_destroys_the_tk_root(loop, tk_root):
    add_source(loop, TkSource(tk_root))
    assert int(tk_root.tk.call("winfo", "exists", "."))
    loop.close()
    import tkinter

    with pytest.raises(tkinter.TclError):
        tk_root.tk.call("winfo", "exists", ".")


def test_a_destroyed_root_removes_its_source(loop, tk_root):
    src = add_source(loop, TkSource(tk_root))
    tk_root.after(5, tk_root.destroy)
    src.update()

    async def until():
        while src.loop is not None:
            await asyncio.sleep(0.005)

    run(loop, until())


def test_tk_source_refuses_what_is_not_tk():
    with pytest.raises(TypeError, match="tkinter.Tk"):
        TkSource(object())


def test_oxloop_inside_tk_mainloop_example(x_display):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "oxloop_in_tk.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "DISPLAY": x_display},
    )
    assert out.stdout.split("\n")[:-1] == [
        "label: HELLO TK",
        "timer ran inside Tk's mainloop",
        "mainloop returned; task done: True",
    ], out.stderr
