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

`socket`, `SSLSocket`, `select`, `poll`, the DNS functions, `read`/`write`/`pipe` and
`Popen` are blocking-style I/O that switches instead of blocking; `patch_all()` puts
them into the standard library (with green-aware `threading` locks, `queue`,
`threading.local`, `os.read`/`os.write` on pipes and signal handlers) so unmodified
code (urllib, http.client, socketserver) runs green, and `unpatch_all()` takes them
out again.
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
from ._io import (
    Popen,
    SSLContext,
    SSLSocket,
    TaskingMixIn,
    create_connection,
    getaddrinfo,
    getfqdn,
    gethostbyaddr,
    gethostbyname,
    gethostbyname_ex,
    getnameinfo,
    pipe,
    poll,
    read,
    select,
    socket,
    socketpair,
    wrap_socket,
    write,
)
from ._patch import (
    is_patched,
    patch_all,
    patch_dns,
    patch_os,
    patch_queue,
    patch_select,
    patch_signal,
    patch_socket,
    patch_ssl,
    patch_subprocess,
    patch_thread,
    patch_time,
    unpatch_all,
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
    "Popen",
    "PriorityQueue",
    "Queue",
    "RLock",
    "SSLContext",
    "SSLSocket",
    "Semaphore",
    "Task",
    "TaskExit",
    "TaskPoolExecutor",
    "TaskingMixIn",
    "Timeout",
    "create_connection",
    "current",
    "getaddrinfo",
    "getfqdn",
    "gethostbyaddr",
    "gethostbyname",
    "gethostbyname_ex",
    "getnameinfo",
    "is_patched",
    "patch_all",
    "patch_dns",
    "patch_os",
    "patch_queue",
    "patch_select",
    "patch_signal",
    "patch_socket",
    "patch_ssl",
    "patch_subprocess",
    "patch_thread",
    "patch_time",
    "pipe",
    "poll",
    "read",
    "run",
    "select",
    "sleep",
    "socket",
    "socketpair",
    "spawn",
    "unpatch_all",
    "wait",
    "wrap_socket",
    "write",
]
