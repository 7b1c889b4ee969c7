"""Callbacks, timers and a call from another thread on oxloop's loop.

    python timers_and_threads.py

Prints the callbacks in the order the loop runs them: the `call_soon` first, then the
worker thread's call (one FIFO queue, as in asyncio, whatever the thread's timing), then
the two timers it set, by deadline rather than by the order they were set in.
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

    def from_thread() -> None:
        print("from a thread")
        loop.call_later(0.05, later, "last")
        loop.call_later(0.02, later, "first")

    loop.call_soon(print, "call_soon")
    worker = threading.Thread(target=loop.call_soon_threadsafe, args=(from_thread,))
    worker.start()
    try:
        loop.run_until_complete(done)
        worker.join()
    finally:
        loop.close()


if __name__ == "__main__":
    main()
    asyncio.set_event_loop(None)
