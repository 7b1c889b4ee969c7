"""An oxloop loop inside Tkinter's `mainloop()`.

Tk owns the main loop. It watches the oxloop loop's `fileno()` with a file handler and
sets one `after` timer for the loop's `next_timeout()`; either gives the loop one cycle
(`run_once(0)`). An asyncio task on the oxloop loop (a TCP echo over loopback and a
timer) updates a Tk label, then ends the program. Needs an X display (the tests run it
under Xvfb).
"""

import asyncio
import math
import tkinter

import oxloop


class OxloopInTk:
    """Drives `loop` from Tk's event loop: no thread, no polling."""

    def __init__(self, root: tkinter.Tk, loop: oxloop.Loop) -> None:
        self.root = root
        self.loop = loop
        self.timer = None
        self.cycles = 0
        root.tk.createfilehandler(loop.fileno(), tkinter.READABLE, self.cycle)
        self.schedule()

    def cycle(self, *_args) -> None:
        self.timer = None
        self.loop.run_once(0)
        self.cycles += 1
        self.schedule()

    def schedule(self) -> None:
        """One Tk timer for the loop's next deadline (rounded up to Tk's milliseconds,
        so it is never early)."""
        if self.timer is not None:
            self.root.after_cancel(self.timer)
            self.timer = None
        timeout = self.loop.next_timeout()
        if timeout is not None:
            self.timer = self.root.after(math.ceil(timeout * 1000), self.cycle)

    def close(self) -> None:
        self.root.tk.deletefilehandler(self.loop.fileno())
        if self.timer is not None:
            self.root.after_cancel(self.timer)


async def work(label: tkinter.Label, root: tkinter.Tk) -> None:
    async def handle(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello tk\n")
    answer = (await reader.readline()).decode().strip()
    writer.close()
    label.configure(text=answer)
    print("label:", label.cget("text"))
    await asyncio.sleep(0.02)
    print("timer ran inside Tk's mainloop")
    server.close()
    await server.wait_closed()
    root.quit()


def main() -> None:
    root = tkinter.Tk()
    label = tkinter.Label(root, text="waiting")
    label.pack()
    loop = oxloop.new_event_loop()
    driver = OxloopInTk(root, loop)
    task = loop.create_task(work(label, root))
    driver.schedule()  # the task made work ready from outside a cycle
    root.mainloop()
    print("mainloop returned; task done:", task.done())
    driver.close()
    loop.close()
    root.destroy()


if __name__ == "__main__":
    main()
