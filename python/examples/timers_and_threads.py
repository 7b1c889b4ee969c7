"""Callbacks, timers and a call from another thread on oxloop's loop.

    python timers_and_threads.py

Prints the callbacks in the order the loop runs them: `call_soon` first, then the
timers by deadline, with the worker thread's call in between.
"""

import asyncio
import threading

import oxloop


def main() -> None:
    loop = oxloop.new_event_loop()
    done = loop.create_future()

    def later(name: str) -> None:
        print(f"timer {name}")
        if name == "last":
            done.set_result(None)

    loop.call_later(0.05, later, "last")
    loop.call_later(0.02, later, "first")
    loop.call_soon(print, "call_soon")
    worker = threading.Thread(target=lambda: loop.call_soon_threadsafe(print, "from a thread"))
    loop.call_later(0.01, worker.start)
    try:
        loop.run_until_complete(done)
        worker.join()
    finally:
        loop.close()


if __name__ == "__main__":
    main()
    asyncio.set_event_loop(None)
