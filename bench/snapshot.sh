#!/usr/bin/env bash
# What `kvmserver serve FILE` costs the host to load a snapshot, natively (no KVM needed: loading
# makes no KVM call; build/bench/snapshot_load_bench says what it times). Runs it ROUNDS times and
# prints a markdown table of the median host CPU time per load, with the counters beside it.
#
#   bench/snapshot.sh [BUILD_DIR]        ROUNDS (default 5), MIN_TIME (s per benchmark, default 0.3)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
bench=$build/bench/snapshot_load_bench
rounds=${ROUNDS:-5}
min_time=${MIN_TIME:-0.3}
[ -x "$bench" ] || { echo "snapshot.sh: no $bench (cmake --build $build --target snapshot_load_bench; needs libbenchmark-dev)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for ((i = 0; i < rounds; i++)); do
  "$bench" --benchmark_format=json --benchmark_min_time="$min_time" >"$work/$i.json" 2>/dev/null ||
    { echo "snapshot.sh: $bench failed" >&2; exit 1; }
done
echo "Machine: $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs$(command -v systemd-detect-virt >/dev/null && v=$(systemd-detect-virt 2>/dev/null) && echo ", virtualized ($v)"); $rounds rounds, median host CPU time per load (snapshot::load(): the file's header and description already read and checked, see read_description)."
echo
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for i in range(rounds):
    for b in json.load(open(f"{work}/{i}.json"))["benchmarks"]:
        rows.setdefault(b["name"], []).append(b)
print("| benchmark | host CPU (median) | extents mapped | memory image | page-table pages | page faults | KVM ioctls |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name, runs in rows.items():
    cpu = statistics.median(r["cpu_time"] for r in runs)
    unit = runs[0]["time_unit"]
    r = runs[0]
    def c(k, fmt="{:.0f}"):
        return fmt.format(r[k]) if k in r else "-"
    print(f"| {name} | {cpu:.0f} {unit.replace('us', 'µs')} | {c('extents')} | {c('memory_MiB', '{:.0f} MiB')} | {c('pt_pages')} | {c('page_faults', '{:.1f}')} | {c('kvm_ioctls')} |")
PY
