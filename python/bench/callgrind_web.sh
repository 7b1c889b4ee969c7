#!/usr/bin/env bash
# User-space instructions per HTTP request of the Python web servers, counted with
# callgrind (deterministic, unlike requests/s on a shared machine): oxloop's WSGI and
# ASGI servers against granian, bjoern and uvicorn, the apps of web_bench.py.
#
# Each server runs under callgrind (children traced, for servers that fork workers);
# after a warm-up the counters are zeroed, REQUESTS keep-alive requests are sent one at
# a time on one connection (or DEPTH at a time, pipelined), and the counters are dumped:
# instructions per request = the dumped total over REQUESTS, every process of the server
# together.
#
# usage: python/bench/callgrind_web.sh [SERVER...]
#   SERVER: oxloop-wsgi oxloop-inline oxloop-green granian-wsgi bjoern oxloop-asgi granian-asgi uvicorn
#           (default: all these), or uvicorn-LOOP (LOOP: oxloop, uvloop or asyncio): uvicorn
#           with httptools on that loop, as python/bench/uvicorn_bench.py runs it (hello only)
# env:   PYTHON (default .venv/bench/bin/python, made as web_bench.py says), APP (hello
#        or json; default hello), REQUESTS (default 2000), DEPTH (default 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bench/bin/python}
APP=${APP:-hello}
REQUESTS=${REQUESTS:-2000}
DEPTH=${DEPTH:-1}
SERVERS=${*:-oxloop-wsgi oxloop-inline oxloop-green granian-wsgi bjoern oxloop-asgi granian-asgi uvicorn}
OUT=$(mktemp -d)
export PYTHONHASHSEED=0

# The apps and the server commands are web_bench.py's.
"$PYTHON" - "$OUT" <<'EOF'
import sys
sys.path.insert(0, "python/bench")
import web_bench
with open(f"{sys.argv[1]}/bench_apps.py", "w") as f:
    f.write(web_bench.APPS)
EOF

client() { # port count depth -> sends count requests, depth at a time, reads every response
    "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import socket, sys
port, count, depth = (int(a) for a in sys.argv[1:])
request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
with socket.create_connection(("127.0.0.1", port)) as sock:
    reader = sock.makefile("rb")
    sent = 0
    while sent < count:
        batch = min(depth, count - sent)
        sock.sendall(request * batch)
        sent += batch
        for _ in range(batch):
            length = None
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert length is not None, "a response without Content-Length"
            reader.read(length)
EOF
}

echo "$APP, $REQUESTS requests on one keep-alive connection, $DEPTH in flight"
printf '| server | instructions per request |\n|---|---|\n'
for server in $SERVERS; do
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cmd=$("$PYTHON" -c "
import importlib.util, shlex, sys
sys.path.insert(0, 'python/bench')
import uvicorn_bench, web_bench
server = '$server'
if server.startswith('uvicorn-'):  # uvicorn on the given loop, as uvicorn_bench.py runs it
    kind = server.split('-', 1)[1]
    path = '$OUT/uvicorn_server.py'
    with open(path, 'w') as f:
        f.write(uvicorn_bench.SERVER)
    needed = ('uvicorn', 'httptools', kind if kind != 'asyncio' else 'asyncio')
    missing = any(importlib.util.find_spec(m) is None for m in needed)
    cmd = None if missing else [sys.executable, path, kind, '$port', 'httptools']
else:
    cmd = web_bench.command(server, '$APP', $port, 1)
print('' if cmd is None else shlex.join(cmd))")
    if [ -z "$cmd" ]; then
        printf '| %s | not installed |\n' "$server"
        continue
    fi
    dir=$OUT/$server
    mkdir -p "$dir"
    # $cmd is shell-quoted (shlex.join): eval gives back its words.
    (cd "$OUT" && eval "PYTHONPATH=$OUT exec valgrind --tool=callgrind --trace-children=yes \
        --callgrind-out-file=$dir/cg.%p $cmd" >"$dir/stdout" 2>"$dir/log") &
    runner=$!
    up=""
    for _ in $(seq 1 600); do
        if "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.2
    done
    [ -n "$up" ] || { echo "$server did not start" >&2; tail -5 "$dir/log" >&2; kill $runner || true; continue; }
    client "$port" 300 "$DEPTH"
    pids=$(pgrep -f -- "--callgrind-out-file=$dir/" || true)
    for pid in $pids; do callgrind_control -z "$pid" >/dev/null 2>&1; done
    client "$port" "$REQUESTS" "$DEPTH"
    for pid in $pids; do callgrind_control -d "$pid" >/dev/null 2>&1; done
    total=0
    for file in "$dir"/cg.*.[0-9]*; do
        [ -f "$file" ] || continue
        n=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        total=$(( total + ${n:-0} ))
    done
    kill -TERM $pids 2>/dev/null || true
    wait $runner 2>/dev/null || true
    printf '| %s | %s |\n' "$server" $(( total / REQUESTS ))
done
echo "(callgrind files in $OUT)"
