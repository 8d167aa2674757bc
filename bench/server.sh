#!/usr/bin/env bash
# Request latency and per-request counters of the test epoll server: natively, and under kvmserver
# persistent (threads=1), ephemeral (threads=1, 2; a new connection per request) and per request
# (--isolate=request, threads=2, every request over one keep-alive connection). Prints a markdown
# table; requests per second too. Run it through
# tools/with-kvm (`tools/with-kvm bench/server.sh`); inside the nested machine the timings are NOT
# performance figures (exits cost 30-100x more than on hardware), the counters are.
set -u
cd "$(dirname "$0")/.."
KVMSERVER=${KVMSERVER:-build/kvmserver}
SERVER=${SERVER:-build/guests/servers/epoll_server}
REQUESTS=${REQUESTS:-300}
. bench/lib.sh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT


# Sequential GETs of / (a new connection each, or with "keepalive" all over one connection);
# prints "avg p50 p90 p99" in microseconds and requests per second.
measure() {
  $PY - "$1" "$REQUESTS" "${2:-close}" <<'PYEOF'
import socket, sys, time
port, n, keepalive = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "keepalive"
req = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"" if keepalive else b"Connection: close\r\n") + b"\r\n"
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close(); break
    except OSError:
        time.sleep(0.1)

def one_keepalive(s, buf):
    """One request on the open connection; the answer is read by its Content-Length."""
    s.sendall(req)
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("bench: the server closed a keep-alive connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += s.recv(65536)
    return rest[length:]

times = []
conn, buf = None, b""
start = time.perf_counter()
for _ in range(n):
    t = time.perf_counter()
    if keepalive:
        conn = conn or socket.create_connection(("127.0.0.1", port), 30)
        buf = one_keepalive(conn, buf)
    else:
        s = socket.create_connection(("127.0.0.1", port), 30)
        s.sendall(req)
        while s.recv(4096):
            pass
        s.close()
    times.append((time.perf_counter() - t) * 1e6)
total = time.perf_counter() - start
times.sort()
q = lambda f: times[min(len(times) - 1, int(f * len(times)))]
print(f"{sum(times)/len(times):.0f} {q(0.5):.0f} {q(0.9):.0f} {q(0.99):.0f} {n / total:.0f}")
PYEOF
}

row() {  # NAME close|keepalive then the command that serves on $port
  local name=$1 how=$2; shift 2
  port=$(free_port)
  "$@" "$port" 2>"$work/err" >/dev/null &
  local pid=$!
  local m
  m=$(measure "$port" "$how")
  read -r avg p50 p90 p99 rps <<<"$m"
  if [ "${WITH_KVM_MACHINE:-}" = nested ]; then  # never a number that could pass for a figure
    avg="nested: not a figure" p50=$avg p90=$avg p99=$avg rps=$avg
  else
    avg="$avg µs" p50="$p50 µs" p90="$p90 µs" p99="$p99 µs"
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local exits syscalls pages calls create
  [ -n "${BENCH_DEBUG:-}" ] && cat "$work/err" >&2
  exits=$(grep -o 'vm_exits=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  syscalls=$(grep -o ' syscalls=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  pages=$(grep -o 'pages_reset=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  calls=$(grep -o 'kvm_calls=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  create=$(grep -o 'worker_create_kvm_calls=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  echo "| $name | $how | $rps | $avg | $p50 | $p90 | $p99 | ${exits:--} | ${syscalls:--} | ${pages:--} | ${calls:--} | ${create:--} |"
}

native() { exec "$SERVER" "$1"; }
kvm() { local port=${*: -1}; exec "$KVMSERVER" --stats "${@:1:$#-1}" --allow-listen=127.0.0.1:"$port" run -- "$SERVER" "$port"; }

echo "Machine: $(uname -r), ${WITH_KVM_MACHINE:-host} KVM ($( [ "${WITH_KVM_MACHINE:-}" = nested ] && echo 'nested QEMU TCG: timings are not performance figures' || echo 'real /dev/kvm')), $(nproc) CPUs; $REQUESTS sequential requests per row"
echo
echo "| name | connection | requests/s | average | p50 | p90 | p99 | VM exits/request | syscalls/request | pages reset/request | KVM ioctls/request | KVM ioctls/worker created |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
row "native" close native
row "kvmserver threads=1" close kvm -t 1
row "kvmserver ephemeral threads=1" close kvm -t 1 -e
row "kvmserver ephemeral threads=2" close kvm -t 2 -e
row "kvmserver --isolate=request threads=2" keepalive kvm -t 2 --isolate=request
