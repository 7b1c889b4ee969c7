"""The programs in python/examples run and print what they promise."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECTED = {
    "echo.py": ["HELLO", "FROM", "OXLOOP", "loop: oxloop._loop"],
    "timers_and_threads.py": ["call_soon", "from a thread", "timer first", "timer last"],
    "foreign_loops.py": [
        "sched event ran",
        "asyncio task ran on _UnixSelectorEventLoop",
        "oxloop task ran on Loop",
        "closed: asyncio loop",
    ],
    "oxloop_in_selectors.py": [
        "host: read host data",
        "oxloop: echo PING",
        "oxloop: slept on an oxloop timer",
        "host: done in under 100 cycles (no busy polling)",
    ],
    "wire_beeps.py": ["beep\a"] * 4,
    "wire_show_event.py": ["Running...", "Running...", "Event 2", "Running...", "Event 3"]
    + ["Running...", "Event 4", "Running...", "Event 5"],
    "handlers_tcp_echo_server.py": ["listening on port {port}", "echoed 3 lines"],
    "handlers_tcp_echo_client.py": ["echo: message 1", "echo: message 2", "echo: message 3"],
    "handlers_udp_echo_server.py": ["listening on port {port}", "echoed 3 datagrams"],
    "handlers_udp_emitter.py": ["reply: ping 1", "reply: ping 2", "reply: ping 3"],
    "green_echo_server.py": ["GREEN", "ECHO", "SERVER", "done"],
    "green_crawler.py": ["30 pages", "page 0"],
    "websocket_chat.py": [
        "bob joined (1 online)",
        "alice joined (2 online)",
        "alice: hello from alice",
        "bob: hi alice",
        "alice got: bob: hi alice",
        "alice left",
        "bob was told: 1001 the server is shutting down",
    ],
    "green_and_asyncio.py": [
        *(f"asyncio says hello {n} and waited for asyncio" for n in range(3)),
        "loop: oxloop._loop",
    ],
}

# Examples that need an X display; each is run by a test of its own, under Xvfb.
NEEDS_DISPLAY = {"oxloop_in_tk.py": "test_sources_tk.py"}

# Servers that run until told how many messages to serve: each runs with its client,
# both given the port and the count (3) as arguments. The client starts first, so the
# TCP client's retries (Timeout.restart) are exercised; the UDP emitter starts once
# its server listens (datagrams sent before would be lost).
PAIRS = {
    "handlers_tcp_echo_server.py": ("handlers_tcp_echo_client.py", "client first"),
    "handlers_udp_echo_server.py": ("handlers_udp_emitter.py", "server first"),
}
PAIRED = set(PAIRS) | {client for client, _ in PAIRS.values()}


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted({*EXPECTED, *NEEDS_DISPLAY})


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - PAIRED))
def test_example_runs(name):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split("\n")[:-1] == EXPECTED[name], out.stderr


@pytest.mark.parametrize("server", sorted(PAIRS))
def test_server_and_client_examples_run(server):
    client, order = PAIRS[server]
    port = free_port()

    def start(name):
        return subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), str(port), "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    procs = []
    try:
        if order == "client first":
            procs.append(start(client))
            time.sleep(0.3)  # long enough for a refused attempt or two
        procs.append(start(server))
        assert procs[-1].stdout.readline() == f"listening on port {port}\n"
        if order == "server first":
            procs.append(start(client))
        outputs = {}
        for proc in procs:
            out, err = proc.communicate(timeout=30)
            outputs[proc] = (out, err)
            assert proc.returncode == 0, err
        client_out, client_err = outputs[procs[0] if order == "client first" else procs[1]]
        server_out, _ = outputs[procs[1] if order == "client first" else procs[0]]
        assert client_out.split("\n")[:-1] == EXPECTED[client], client_err
        assert server_out.split("\n")[:-1] == EXPECTED[server][1:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
