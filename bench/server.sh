#!/usr/bin/env bash
# Request latency and per-request counters of the test epoll server: natively, and under kvmserver
# persistent (threads=1) and ephemeral (threads=1, 2). Prints a markdown table. Run it through
# tools/with-kvm (`tools/with-kvm bench/server.sh`); inside the nested machine the timings are NOT
# performance figures (exits cost 30-100x more than on hardware), the counters are.
set -u
cd "$(dirname "$0")/.."
KVMSERVER=${KVMSERVER:-build/kvmserver}
SERVER=${SERVER:-build/guests/servers/epoll_server}
REQUESTS=${REQUESTS:-300}
PY=/usr/bin/python3
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sequential new-connection GETs of /; prints "avg p50 p90 p99" in microseconds.
measure() {
  $PY - "$1" "$REQUESTS" <<'PYEOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close(); break
    except OSError:
        time.sleep(0.1)
times = []
for _ in range(n):
    t = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), 30)
    s.sendall(req)
    while s.recv(4096):
        pass
    s.close()
    times.append((time.perf_counter() - t) * 1e6)
times.sort()
q = lambda f: times[min(len(times) - 1, int(f * len(times)))]
print(f"{sum(times)/len(times):.0f} {q(0.5):.0f} {q(0.9):.0f} {q(0.99):.0f}")
PYEOF
}

row() {  # NAME then the command that serves on $port
  local name=$1; shift
  port=$(free_port)
  "$@" "$port" 2>"$work/err" >/dev/null &
  local pid=$!
  local m
  m=$(measure "$port")
  read -r avg p50 p90 p99 <<<"$m"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local exits syscalls pages
  [ -n "${BENCH_DEBUG:-}" ] && cat "$work/err" >&2
  exits=$(grep -o 'vm_exits=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  syscalls=$(grep -o ' syscalls=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  pages=$(grep -o 'pages_reset=[0-9.]*' "$work/err" | head -1 | cut -d= -f2)
  echo "| $name | $avg µs | $p50 µs | $p90 µs | $p99 µs | ${exits:--} | ${syscalls:--} | ${pages:--} |"
}

native() { exec "$SERVER" "$1"; }
kvm() { local port=${*: -1}; exec "$KVMSERVER" --stats "${@:1:$#-1}" --allow-listen=127.0.0.1:"$port" run -- "$SERVER" "$port"; }

echo "Machine: $(uname -r), ${WITH_KVM_MACHINE:-host} KVM ($( [ "${WITH_KVM_MACHINE:-}" = nested ] && echo 'nested QEMU TCG: timings are not performance figures' || echo 'real /dev/kvm')), $(nproc) CPUs; $REQUESTS sequential requests, new connection each"
echo
echo "| name | average | p50 | p90 | p99 | VM exits/request | syscalls/request | pages reset/request |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
row "native" native
row "kvmserver threads=1" kvm -t 1
row "kvmserver ephemeral threads=1" kvm -t 1 -e
row "kvmserver ephemeral threads=2" kvm -t 2 -e
