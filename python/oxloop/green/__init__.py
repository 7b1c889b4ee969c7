"""Green tasks on oxloop: blocking-style code in greenlets, on the same loop as asyncio.

```python
from oxloop import green

def fetch(n):
    green.sleep(0.1)              # switches to the loop instead of blocking
    return n * 2

tasks = [green.spawn(fetch, n) for n in range(10)]
for t in tasks:
    t.join()
green.EventLoop.current().run()   # or run until nothing is scheduled

async def main():                 # from asyncio code on an oxloop loop
    return await green.run(fetch, 21)
```

`oxloop.green.socket`, `.ssl`, `.select`, `.dns`, `.os` and `.subprocess` are
blocking-style I/O that switches instead of blocking; `patch_all()` puts them into the
standard library so unmodified code (urllib, http.client, socketserver) runs green.
"""

from ._hub import (
    EventLoop,
    Handler,
    LoopExit,
    Task,
    TaskExit,
    current,
    run,
    sleep,
    spawn,
    wait,
)
from ._sync import (
    BoundedSemaphore,
    Channel,
    Condition,
    Empty,
    Event,
    Full,
    Future,
    LifoQueue,
    Lock,
    PriorityQueue,
    Queue,
    RLock,
    Semaphore,
    TaskPoolExecutor,
    Timeout,
)

__all__ = [
    "BoundedSemaphore",
    "Channel",
    "Condition",
    "Empty",
    "Event",
    "EventLoop",
    "Full",
    "Future",
    "Handler",
    "LifoQueue",
    "Lock",
    "LoopExit",
    "PriorityQueue",
    "Queue",
    "RLock",
    "Semaphore",
    "Task",
    "TaskExit",
    "TaskPoolExecutor",
    "Timeout",
    "current",
    "run",
    "sleep",
    "spawn",
    "wait",
]
