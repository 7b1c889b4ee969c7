"""Signal handlers and Ctrl-C, with real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import run

import oxloop


def test_signal_handler_runs(loop):
    got = []

    def on_usr1(*args):
        got.append(args)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, on_usr1, "a", 2)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    safety = loop.call_later(5, loop.stop)
    loop.run_forever()
    safety.cancel()
    assert got == [("a", 2)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_signal_handler_several_deliveries(loop):
    got = []

    async def main():
        import asyncio

        loop.add_signal_handler(signal.SIGUSR2, got.append, 1)
        for sent in range(1, 6):
            os.kill(os.getpid(), signal.SIGUSR2)
            for _ in range(200):
                if len(got) >= sent:
                    break
                await asyncio.sleep(0.005)
        loop.remove_signal_handler(signal.SIGUSR2)
        return len(got)

    assert run(loop, main()) == 5


def test_signal_handler_replaced(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append("new"), loop.stop()))
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    safety = loop.call_later(5, loop.stop)
    loop.run_forever()
    safety.cancel()
    assert got == ["new"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_errors(loop):
    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", print)
    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    with pytest.raises(ValueError):
        loop.add_signal_handler(0, print)
    with pytest.raises(ValueError):
        loop.add_signal_handler(10_000, print)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, print)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGSTOP, print)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(10_000)
    assert loop.remove_signal_handler(signal.SIGUSR2) is False


def test_signal_handler_off_main_thread(loop):
    errors = []

    def worker():
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert len(errors) == 1


def test_closed_loop_refuses_and_forgets_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, print)
    # The process's disposition is back to default-ish: no crash on a new loop.
    other = oxloop.new_event_loop()
    try:
        got = []
        other.add_signal_handler(signal.SIGUSR1, lambda: (got.append(1), other.stop()))
        other.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        safety = other.call_later(5, other.stop)
        other.run_forever()
        safety.cancel()
        assert got == [1]
        other.remove_signal_handler(signal.SIGUSR1)
    finally:
        other.close()


_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import oxloop

    loop = oxloop.new_event_loop()

    async def main():
        print("ready", flush=True)
        await asyncio.sleep(30)

    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(0)
    finally:
        loop.close()
    sys.exit(1)
    """
)


def _run_child(code: str, sig: int, pre: str = "") -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-c", pre + code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the loop is now idle in its kernel wait
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def test_ctrl_c_raises_keyboard_interrupt():
    code, out, err = _run_child(_CHILD, signal.SIGINT)
    assert (code, out.strip()) == (0, "KeyboardInterrupt"), err


def test_ctrl_c_during_busy_callbacks():
    busy = _CHILD.replace(
        "await asyncio.sleep(30)",
        "while True:\n            await asyncio.sleep(0)",
    )
    code, out, err = _run_child(busy, signal.SIGINT)
    assert (code, out.strip()) == (0, "KeyboardInterrupt"), err


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_ctrl_c_with_runner_cancels_main_task():
    child = textwrap.dedent(
        """
        import asyncio, sys
        import oxloop

        async def main():
            print("ready", flush=True)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                print("cancelled", flush=True)
                raise

        try:
            oxloop.run(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
            sys.exit(0)
        sys.exit(1)
        """
    )
    code, out, err = _run_child(child, signal.SIGINT)
    assert (code, out.split()) == (0, ["cancelled", "KeyboardInterrupt"]), err


def test_python_signal_handler_call_soon_threadsafe(loop):
    """A plain `signal.signal` handler may wake the loop with call_soon_threadsafe."""
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: loop.call_soon_threadsafe(got.append, 1))
    try:

        async def main():
            import asyncio

            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(400):
                if got:
                    return True
                await asyncio.sleep(0.005)
            return False

        assert run(loop, main())
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_python_signal_handler_call_soon():
    """A `signal.signal` handler runs in the loop's thread, so asyncio lets it call
    `call_soon` (what asyncio.Runner's SIGINT handler does through task.cancel)."""
    child = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        import oxloop

        loop = oxloop.new_event_loop()
        done = loop.create_future()
        signal.signal(signal.SIGUSR1, lambda *a: loop.call_soon(done.set_result, "called"))

        async def main():
            print("ready", flush=True)
            return await asyncio.wait_for(done, 10)

        print(loop.run_until_complete(main()), flush=True)
        """
    )
    code, out, err = _run_child(child, signal.SIGUSR1)
    assert (code, out.strip()) == (0, "called"), err


def test_signal_handler_that_raises_goes_to_exception_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def bad():
        loop.call_soon(loop.stop)
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, bad)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    safety = loop.call_later(5, loop.stop)
    loop.run_forever()
    safety.cancel()
    loop.remove_signal_handler(signal.SIGUSR1)
    assert len(contexts) == 1 and isinstance(contexts[0]["exception"], ValueError)


def test_signal_before_run_is_delivered_when_running(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR2, lambda: (got.append(1), loop.stop()))
    os.kill(os.getpid(), signal.SIGUSR2)
    safety = loop.call_later(5, loop.stop)
    loop.run_forever()
    safety.cancel()
    loop.remove_signal_handler(signal.SIGUSR2)
    assert got == [1]


def test_sigint_handler_and_restore(loop):
    """A SIGINT handler replaces KeyboardInterrupt; removing it brings it back."""
    got = []
    loop.add_signal_handler(signal.SIGINT, lambda: (got.append("int"), loop.stop()))
    loop.call_soon(os.kill, os.getpid(), signal.SIGINT)
    safety = loop.call_later(5, loop.stop)
    loop.run_forever()
    safety.cancel()
    assert got == ["int"]
    assert loop.remove_signal_handler(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_remove_restores_default_disposition(loop):
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_loop_usable_after_ctrl_c():
    child = _CHILD.replace(
        'print("KeyboardInterrupt", flush=True)\n    sys.exit(0)',
        'print("KeyboardInterrupt", flush=True)\n'
        "    assert not loop.is_running()\n"
        '    print(loop.run_until_complete(asyncio.sleep(0.01, result="again")), flush=True)\n'
        "    sys.exit(0)",
    )
    assert "again" in child
    code, out, err = _run_child(child, signal.SIGINT)
    assert (code, out.split()) == (0, ["KeyboardInterrupt", "again"]), err


def test_sigchld_handler_and_subprocesses_together(loop):
    import asyncio

    got = []
    loop.add_signal_handler(signal.SIGCHLD, got.append, "chld")

    async def main():
        codes = []
        for _ in range(3):
            proc = await asyncio.create_subprocess_exec("sh", "-c", "exit 3")
            codes.append(await proc.wait())
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.005)
        return codes

    try:
        assert run(loop, main()) == [3, 3, 3]
        assert got and set(got) == {"chld"}
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)


def test_two_signals_at_once(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")

    def send():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)

    def check():
        if len(got) == 2:
            loop.stop()
        else:
            loop.call_later(0.005, check)

    loop.call_soon(send)
    loop.call_soon(check)
    safety = loop.call_later(5, loop.stop)
    loop.run_forever()
    safety.cancel()
    loop.remove_signal_handler(signal.SIGUSR1)
    loop.remove_signal_handler(signal.SIGUSR2)
    assert sorted(got) == ["usr1", "usr2"]


def test_getsignal_shows_the_loops_handler(loop):
    """As on asyncio's loop, Python's `signal` module sees a handler while the loop
    handles the signal, and the one from before once it no longer does."""
    before = signal.getsignal(signal.SIGUSR1)
    loop.add_signal_handler(signal.SIGUSR1, print)
    installed = signal.getsignal(signal.SIGUSR1)
    assert callable(installed) and installed not in (signal.SIG_DFL, signal.SIG_IGN)
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == before


def _save_and_restore_around(lp) -> list:
    got = []

    async def main():
        import asyncio

        lp.add_signal_handler(signal.SIGUSR1, got.append, "loop")
        saved = signal.signal(signal.SIGUSR1, lambda *a: got.append("own"))
        try:
            signal.raise_signal(signal.SIGUSR1)
            for _ in range(400):
                if "loop" in got:
                    break
                await asyncio.sleep(0.005)
        finally:
            signal.signal(signal.SIGUSR1, saved)
        signal.raise_signal(signal.SIGUSR1)
        for _ in range(400):
            if got.count("loop") == 2:
                break
            await asyncio.sleep(0.005)
        lp.remove_signal_handler(signal.SIGUSR1)

    try:
        run(lp, main())
    finally:
        lp.close()
    return got


def test_python_handler_saved_and_restored_around_the_loops():
    """uvicorn's `capture_signals`: `signal.signal(sig, own)` returns the loop's
    handler, which is given back to `signal.signal` afterwards. Meanwhile the signal
    goes to `own` and, as on asyncio's loop (through the wake-up fd), to the loop's
    handler too; afterwards to the loop's handler."""
    import asyncio

    want = _save_and_restore_around(asyncio.SelectorEventLoop())
    got = _save_and_restore_around(oxloop.new_event_loop())
    assert got == want == ["own", "loop", "loop"]


def test_handler_put_back_by_other_code_is_left_in_place(loop):
    """Code that saved Python's handler before `add_signal_handler` and puts it back
    itself (uvicorn's tests do) keeps it when the loop's handler is removed."""

    def own(*args):
        pass

    old = signal.signal(signal.SIGUSR2, own)
    try:
        original = signal.getsignal(signal.SIGUSR2)
        loop.add_signal_handler(signal.SIGUSR2, print)
        signal.signal(signal.SIGUSR2, original)
        assert loop.remove_signal_handler(signal.SIGUSR2)
        assert signal.getsignal(signal.SIGUSR2) is own
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_two_loops_watch_the_same_signal():
    first, second = oxloop.new_event_loop(), oxloop.new_event_loop()
    got = []
    try:
        first.add_signal_handler(signal.SIGUSR1, got.append, "first")
        second.add_signal_handler(signal.SIGUSR1, got.append, "second")
        os.kill(os.getpid(), signal.SIGUSR1)
        for lp, name in ((first, "first"), (second, "second")):

            def check(lp=lp, name=name):
                if name in got:
                    lp.stop()
                else:
                    lp.call_later(0.005, check)

            lp.call_soon(check)
            safety = lp.call_later(5, lp.stop)
            lp.run_forever()
            safety.cancel()
        assert sorted(got) == ["first", "second"]
        assert first.remove_signal_handler(signal.SIGUSR1)
        # The other loop still handles it.
        assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
        assert second.remove_signal_handler(signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    finally:
        first.close()
        second.close()


def test_uvicorn_style_capture_and_reraise_of_sigterm():
    """uvicorn's `Server.capture_signals` around a loop handler of SIGTERM, in a child
    process: its handler sees the signal, restores the loop's handler and raises the
    signal again, which must reach the loop's handler instead of ending the process."""
    child = textwrap.dedent(
        """
        import asyncio, signal, sys
        import oxloop

        async def main():
            loop = asyncio.get_running_loop()
            handled = []
            loop.add_signal_handler(signal.SIGTERM, handled.append, "loop handler")
            captured = []
            saved = signal.signal(signal.SIGTERM, lambda sig, frame: captured.append(sig))
            print("ready", flush=True)
            while not captured:
                await asyncio.sleep(0.01)
            signal.signal(signal.SIGTERM, saved)
            signal.raise_signal(captured[0])
            # The loop's handler saw both: the first through the wake-up fd while the
            # other handler was installed (as on asyncio's loop), then the re-raised one.
            for _ in range(1000):
                if len(handled) == 2:
                    break
                await asyncio.sleep(0.01)
            print(*handled, sep=",", flush=True)

        oxloop.run(main())
        """
    )
    code, out, err = _run_child(child, signal.SIGTERM)
    assert (code, out.strip()) == (0, "loop handler,loop handler"), (out, err)
