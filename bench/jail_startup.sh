#!/usr/bin/env bash
# What --jail costs at start-up, natively: the wall time of `kvmserver --jail=on run PROGRAM` against
# `--jail=off` (forks, namespaces, the private root's mounts, pivot_root, dropping capabilities, and
# the supervisors' exit). Where /dev/kvm does not work both runs end right after the jail, at opening
# /dev/kvm (exit 125), which is then exactly the part to measure; with KVM they load and run PROGRAM.
# It costs nothing per request: the jail is set up once, before the guest is loaded.
#
#   bench/jail_startup.sh [BUILD_DIR]       RUNS (default 200), PROGRAM (default /bin/true)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
runs=${RUNS:-200}
program=${PROGRAM:-/bin/true}
[ -x "$build/kvmserver" ] || { echo "jail_startup.sh: no $build/kvmserver" >&2; exit 1; }
echo "Machine: $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, as $(id -un); $runs runs each, alternating."
echo
python3 - "$build/kvmserver" "$runs" "$program" <<'PY'
import statistics, subprocess, sys, time
kvmserver, runs, program = sys.argv[1], int(sys.argv[2]), sys.argv[3]
times = {"off": [], "on": []}
status = {}
for _ in range(runs):
    for mode in ("off", "on"):
        t = time.perf_counter()
        r = subprocess.run([kvmserver, f"--jail={mode}", "run", program], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times[mode].append((time.perf_counter() - t) * 1e3)
        status[mode] = (r.returncode, r.stderr.decode().strip().splitlines()[-1:] )
print("| kvmserver run | median | p90 | exit status, last stderr line |")
print("| --- | --- | --- | --- |")
for mode in ("off", "on"):
    ts = sorted(times[mode])
    print(f"| --jail={mode} | {statistics.median(ts):.2f} ms | {ts[int(len(ts) * 0.9)]:.2f} ms | {status[mode][0]}, {' '.join(status[mode][1]) or '-'} |")
print(f"\nThe jail's start-up cost: {statistics.median(times['on']) - statistics.median(times['off']):+.2f} ms (median difference).")
PY
