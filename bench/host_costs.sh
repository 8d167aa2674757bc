#!/usr/bin/env bash
# kvmserver's host-side costs per request, timed natively (bench/host_costs.cpp, Google Benchmark):
# syscall handling, reset (copy-back, full, address space, fd table) and worker creation. These run
# without a VM, so they are real figures on any machine, this one included. Prints markdown tables,
# the goals of issue 13 checked against them, and (with KVM_COUNTS=1) the KVM ioctls per request
# and per worker creation counted by kvmserver --stats in the nested machine.
#
#   bench/host_costs.sh [BUILD_DIR]        QUICK=1: a few seconds (CI: so the benchmarks cannot rot)
#                                          KVM_COUNTS=1: also count KVM ioctls (bench/server.sh in
#                                          tools/with-kvm, ~3 min)
#                                          CHART=FILE.png: reset time vs dirty pages and worker
#                                          creation vs template size, drawn with gnuplot (gnuplot-nox)
#                                          JSON_OUT=FILE: keep Google Benchmark's JSON (bench/run.sh's
#                                          estimate reads it)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bench/host_costs_bench
PY=/usr/bin/python3
[ -x "$bin" ] || { echo "host_costs.sh: no $bin (cmake needs libbenchmark-dev)" >&2; exit 1; }
json=$(mktemp)
data=$(mktemp -d)
trap 'rm -rf "$json" "$data"' EXIT

args=(--benchmark_format=json "--benchmark_out=$json" --benchmark_out_format=json)
if [ "${QUICK:-0}" = 1 ]; then
  # The smaller sizes only, briefly: this checks that every benchmark still runs, not its figure.
  args+=(--benchmark_min_time=0.01 '--benchmark_filter=BM_host|BM_syscall|/(1|4|16|64)(/|$)')
fi
"$bin" "${args[@]}" >/dev/null || { echo "host_costs.sh: $bin failed" >&2; exit 1; }
[ -n "${JSON_OUT:-}" ] && cp "$json" "$JSON_OUT"

CHART_DATA=$data BUILD_DIR=$build $PY - "$json" <<'PYEOF'
import json, sys, platform, os
data = json.load(open(sys.argv[1]))
ctx = data["context"]
rows = {b["name"]: b for b in data["benchmarks"] if b.get("run_type", "iteration") == "iteration" and not b.get("error_occurred")}
errors = [b["name"] + ": " + b.get("error_message", "") for b in data["benchmarks"] if b.get("error_occurred")]
def ns(b):  # per operation, in ns (cpu_time, or real time for manual timing)
    unit = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
    t = b["real_time"] if "manual_time" in b["name"] else b["cpu_time"]
    return t * unit
def fmt(v):
    return f"{v/1000:.2f} µs" if v >= 10000 else f"{v:.0f} ns"
cpu = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
build_type = ""
try:
    for line in open(os.environ.get("BUILD_DIR", "build") + "/CMakeCache.txt"):
        if line.startswith("CMAKE_BUILD_TYPE:"):
            build_type = line.split("=", 1)[1].strip()
except OSError:
    pass
print(f"Host-side costs, timed natively with Google Benchmark on {platform.node()} ({cpu}, {ctx.get('num_cpus')} CPUs, "
      f"Linux {platform.release()}); kvmserver built {build_type or '?'}. These need no VM: they are figures.\n")
print("| syscall (through dispatch_syscall, process lock held) | host time per call |")
print("| --- | --- |")
for name, b in rows.items():
    if name.startswith("BM_syscall/"):
        print(f"| {name.split('/', 1)[1]} | {fmt(ns(b))} |")
null = rows.get("BM_host_null_syscall")
if null:
    print(f"| (this machine's price of one host syscall: getppid) | {fmt(ns(null))} |")
print("\nThe VM exit that brings each call to the host is not included (hardware: about 1 µs round trip).")
print("Most rows are host system calls (read: 1, openat+close: about 4 with the policy's checks); on this machine")
print("each costs what the last row says.\n")
def series(prefix, label, unit_name):
    out = []
    for name, b in rows.items():
        if name.startswith(prefix + "/"):
            n = int(name.split("/")[1])
            out.append((n, ns(b)))
    out.sort()
    if out:
        print(f"| {label} | " + " | ".join(f"{unit_name}={n}" for n, _ in out) + " |")
        print("| --- | " + " | ".join("---" for _ in out) + " |")
        print("| host time | " + " | ".join(fmt(v) for _, v in out) + " |")
        if prefix in ("BM_reset_copy_back", "BM_reset_full"):
            print("| per page | " + " | ".join(f"{v/n:.0f} ns" for n, v in out) + " |")
        print()
    return dict(out)
copy = series("BM_reset_copy_back", "reset: copy back N dirty pages", "N")
full = series("BM_reset_full", "reset: drop all private pages (full)", "N")
series("BM_reset_address_space", "reset: address space from a template of M mappings", "M")
series("BM_reset_fds", "reset: fd table and epoll rebuilt for N fds", "N")
create = series("BM_worker_create", "worker creation (memory, address space, Process; no KVM) from a template of MiB resident", "MiB")
with open(os.path.join(os.environ["CHART_DATA"], "reset.dat"), "w") as f:
    for n in sorted(copy):
        f.write(f"{n} {copy[n]/1000:.3f} {full.get(n, float('nan'))/1000:.3f}\n")
with open(os.path.join(os.environ["CHART_DATA"], "create.dat"), "w") as f:
    for mib in sorted(create):
        f.write(f"{mib} {create[mib]/1000:.3f}\n")
print("Goals (issue 13):")
if 256 in copy:
    per = copy[256] / 256
    print(f"- reset linear in dirty pages, <= 0.5 µs per page at 256 pages: {per:.0f} ns per page: {'met' if per <= 500 else 'NOT met'}")
if 16 in create and 1024 in create:
    r = create[1024] / create[16]
    print(f"- worker creation independent of template size (1 GiB within 2x of 16 MiB): {r:.2f}x: {'met' if r <= 2 else 'NOT met'}")
for e in errors:
    print(f"- benchmark error: {e}")
sys.exit(1 if errors else 0)
PYEOF
status=$?

if [ -n "${CHART:-}" ]; then
  if command -v gnuplot >/dev/null; then
    gnuplot <<GPEOF && echo "chart: $CHART"
set terminal pngcairo size 1200,500 font ",10"
set output "$CHART"
set multiplot layout 1,2 title "kvmserver host-side costs, natively on $(hostname) ($(uname -r))"
set logscale xy
set xlabel "dirty pages"
set ylabel "host time per reset (µs)"
set key top left
set grid
plot "$data/reset.dat" using 1:2 with linespoints title "copy back dirty pages", \
     "$data/reset.dat" using 1:3 with linespoints title "drop all private pages"
unset logscale y
set xlabel "template resident (MiB)"
set ylabel "host time per worker (µs), KVM ioctls excluded"
set yrange [0:*]
plot "$data/create.dat" using 1:2 with linespoints title "worker creation"
unset multiplot
GPEOF
  else
    echo "host_costs.sh: CHART needs gnuplot (apt-get install gnuplot-nox)" >&2
  fi
fi

if [ "${KVM_COUNTS:-0}" = 1 ]; then
  # The KVM side of the same operations, counted (not timed) in the nested machine: a C epoll
  # server serving 50 requests under -t 2 -e --stats.
  echo
  echo "KVM ioctls (KVM_RUN included), counted by kvmserver --stats in the nested machine (counts, not timings):"
  REQUESTS=${REQUESTS:-50} KVMSERVER=$build/kvmserver SERVER=$build/guests/servers/epoll_server \
    tools/with-kvm bench/server.sh || status=1
fi
exit $status
