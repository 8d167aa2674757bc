#!/usr/bin/env bash
# Host system calls per request of kvmserver serving (-t 1 -e, jailed as by default): perf counts
# the calls kvmserver's threads make (the raw_syscalls and syscalls tracepoints; kvmserver is not
# dumpable, so strace may not attach) while REQUESTS sequential requests are served. These are
# counts, valid in the nested machine (tools/with-kvm bench/host_calls.sh); multiplied by the
# filter's native cost per call (bench/seccomp.sh) they give the filter's cost per request.
# The calls whose arguments the filter checks (ioctl, which includes every KVM_RUN, fcntl, mmap,
# mprotect, socket, clone, tgkill, prctl, prlimit64) run the whole BPF program; the others are
# answered from the kernel's per-call cache.
#
#   tools/with-kvm bench/host_calls.sh [BUILD_DIR]       REQUESTS (default 200)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
requests=${REQUESTS:-200}
. bench/lib.sh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
command -v perf >/dev/null || { echo "host_calls.sh: needs perf (linux-perf)" >&2; exit 1; }
[ -d /sys/kernel/tracing/events ] || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
checked=(ioctl fcntl mmap mprotect socket socketpair clone tgkill prctl prlimit64)
events=raw_syscalls:sys_enter
for c in "${checked[@]}"; do events+=,syscalls:sys_enter_$c; done


echo "| server | host calls/request | argument-checked/request | of which ioctl | argument-checked calls/request |"
echo "| --- | --- | --- | --- | --- |"
measure() { # NAME GRANTS... -- COMMAND... (PORT appended)
  local name=$1 port outer middle inner i
  shift
  local -a grants=()
  while [ "$1" != -- ]; do grants+=("$1"); shift; done
  shift
  port=$(free_port)
  "$build/kvmserver" -t 1 -e "${grants[@]}" --allow-listen=127.0.0.1:"$port" run -- "$@" "$port" >"$work/$name.log" 2>&1 &
  outer=$!
  for ((i = 0; i < 1200; i++)); do grep -q '^kvmserver: ready' "$work/$name.log" && break; sleep 0.1; done
  middle=$(pgrep -P "$outer" | head -n1)
  inner=$(pgrep -P "${middle:-0}" | head -n1)
  inner=${inner:-$outer}  # not jailed
  get "$port" 20
  perf stat -x, -e "$events" -p "$inner" -o "$work/$name.perf" &
  local counter=$!
  sleep 2
  get "$port" "$requests"
  kill -INT "$counter"
  wait "$counter" 2>/dev/null
  kill -INT "$outer"
  wait "$outer" 2>/dev/null
  $PY - "$work/$name.perf" "$requests" "$name" <<'PYEOF'
import sys
path, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counts = {}
for line in open(path):
    f = line.strip().split(",")
    # perf stat -x,: "count,unit,event,..."
    if len(f) >= 3 and f[0].isdigit():
        counts[f[2].split(":")[-1].removeprefix("sys_enter_") if f[2].startswith("syscalls:") else "total"] = int(f[0])
total = counts.get("total", 0)
arg = sum(c for k, c in counts.items() if k != "total")
top = ", ".join(f"{k} {c / n:.1f}" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]) if k != "total" and c)
print(f"| {name} | {total / n:.1f} | {arg / n:.1f} | {counts.get('ioctl', 0) / n:.1f} | {top} |")
PYEOF
}

measure "C epoll_server" -- "$build/guests/servers/epoll_server"
measure "C routes_server (blocking accept)" -- "$build/guests/servers/routes_server"
measure "Python 3 http.server" --allow-read=tests/e2e/runtimes -- "$PY" tests/e2e/runtimes/py_server.py
echo
echo "$requests sequential requests (new connection each) after 20 warm-up ones; $(uname -r)."
