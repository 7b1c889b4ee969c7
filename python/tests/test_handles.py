"""Handle and TimerHandle objects as asyncio defines them."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import subprocess
import sys
import textwrap
import weakref

import oxloop


def _cb(*args):
    pass


def test_handle_api(loop):
    ctx = contextvars.copy_context()
    h = loop.call_soon(_cb, 1, context=ctx)
    assert h.get_context() is ctx
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    t = loop.call_later(5, _cb)
    assert isinstance(t.get_context(), contextvars.Context)
    assert t.when() > loop.time()
    t.cancel()


def test_timer_handles_order(loop):
    t1 = loop.call_later(1, _cb)
    t2 = loop.call_later(2, _cb)
    assert t1 < t2 and t1 <= t2 and t2 > t1 and t2 >= t1
    assert sorted([t2, t1]) == [t1, t2]
    t1.cancel()
    t2.cancel()


def test_timer_handle_hashable(loop):
    t = loop.call_later(1, _cb)
    assert {t: 1}[t] == 1
    t.cancel()


def test_repr_same_as_asyncio():
    reprs = []
    for lp in (asyncio.SelectorEventLoop(), oxloop.new_event_loop()):
        h, t = lp.call_soon(_cb, 1), lp.call_at(123.5, _cb, "x")
        reprs.append((repr(h), repr(t)))
        h.cancel()
        t.cancel()
        assert repr(h).startswith("<Handle cancelled")
        assert repr(t).startswith("<TimerHandle cancelled when=123.5")
        lp.close()
    assert reprs[1] == reprs[0]


def test_cancel_releases_callback(loop):
    class Owner:
        def method(self):
            pass

    owner = Owner()
    alive = weakref.ref(owner)
    handles = [loop.call_soon(owner.method), loop.call_later(3600, _cb, owner)]
    for h in handles:
        h.cancel()
    del owner
    gc.collect()
    assert alive() is None, handles


def test_cancel_releases_callback_in_asyncio():
    """The asyncio behaviour the test above expects of oxloop."""
    loop = asyncio.SelectorEventLoop()
    try:

        class Owner:
            def method(self):
                pass

        owner = Owner()
        alive = weakref.ref(owner)
        handles = [loop.call_soon(owner.method), loop.call_later(3600, _cb, owner)]
        for h in handles:
            h.cancel()
        del owner
        gc.collect()
        assert alive() is None
    finally:
        loop.close()


def test_debug_call_soon_at_module_level():
    script = textwrap.dedent(
        """
        import oxloop
        loop = oxloop.new_event_loop()
        loop.set_debug(True)
        h = loop.call_soon(print, "ran")
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, "ran\n"), out.stderr


def test_debug_call_soon_at_module_level_asyncio():
    script = textwrap.dedent(
        """
        import asyncio
        loop = asyncio.SelectorEventLoop()
        loop.set_debug(True)
        h = loop.call_soon(print, "ran")
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, "ran\n"), out.stderr


def test_handle_run_directly(loop):
    seen = []
    h = loop.call_soon(seen.append, 1)
    h._run()
    assert seen == [1]
    h.cancel()


def test_pending_handles_cost_the_collector_nothing(loop):
    # A loop with many pending timers must not make every full collection visit them:
    # handles and the contexts they copied are outside the collector's lists.
    def tracked_contexts():
        return sum(type(o) is contextvars.Context for o in gc.get_objects())

    before = tracked_contexts()
    handles = [loop.call_later(60, _cb) for _ in range(50)]
    handles += [loop.call_soon(_cb) for _ in range(50)]
    assert tracked_contexts() - before < 10
    assert not any(gc.is_tracked(h) for h in handles)
    for h in handles:
        h.cancel()


class _Holder:
    pass


def test_cycle_through_a_handles_context_is_collected(loop):
    # Once Python code holds a handle's context it may put it in a cycle: the collector
    # must see the context again and free the cycle.
    var = contextvars.ContextVar("var")
    h = loop.call_later(60, _cb)
    ctx = h.get_context()
    assert gc.is_tracked(ctx)
    holder = _Holder()
    holder.ctx = ctx
    ctx.run(var.set, holder)  # holder -> ctx -> ctx's values -> holder
    gone = weakref.ref(holder)
    h.cancel()
    del h, ctx, holder
    gc.collect()
    assert gone() is None


def _private_surface(lp):
    """What libraries read of asyncio's handles, beyond the public methods."""
    ctx = contextvars.copy_context()
    soon = lp.call_soon(_cb, 1, context=ctx)
    at_int = lp.call_at(int(lp.time()) + 100, _cb)
    later = lp.call_later(100, _cb, "x")
    seen = {
        "soon": (soon._callback is _cb, soon._args, soon._cancelled, soon._context is ctx),
        "at_int": (type(at_int.when()).__name__, type(at_int._when).__name__),
        "at_int_when": at_int.when() == at_int._when,
        "later": (type(later._when).__name__, later._when == later.when(), later._args),
        "scheduled": (at_int._scheduled, later._scheduled),
    }
    soon.cancel()
    later.cancel()
    # (`_scheduled` after a cancel differs: asyncio's cancelled timer stays in its heap
    # until it would have been due or the heap is cleaned; oxloop's leaves at once.)
    seen["after_cancel"] = (soon._cancelled, later._cancelled)
    fired = lp.call_later(0, lp.stop)
    lp.run_forever()
    seen["after_firing"] = fired._scheduled
    at_int.cancel()
    return seen


def test_private_attributes_same_as_asyncio():
    surfaces = []
    for lp in (asyncio.SelectorEventLoop(), oxloop.new_event_loop()):
        try:
            surfaces.append(_private_surface(lp))
        finally:
            lp.close()
    assert surfaces[1] == surfaces[0]
    assert surfaces[1]["at_int"] == ("int", "int")
