#!/usr/bin/env bash
# The host seccomp filter's cost per host system call, natively (no KVM needed): runs
# build/bench/seccomp_filter_bench without and with kvmserver's real filter (FilterRole::Process),
# ROUNDS times each, alternating so that load on the machine hits both alike, and prints a markdown
# table of the median CPU time per call.
#
#   bench/seccomp.sh [BUILD_DIR]        ROUNDS (default 7), MIN_TIME (s per benchmark, default 0.3)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
bench=$build/bench/seccomp_filter_bench
rounds=${ROUNDS:-7}
min_time=${MIN_TIME:-0.3}
[ -x "$bench" ] || { echo "seccomp.sh: no $bench (cmake --build $build --target seccomp_filter_bench; needs libbenchmark-dev)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for ((i = 0; i < rounds; i++)); do
  for mode in off on; do
    "$bench" --filter=$mode --benchmark_format=json --benchmark_min_time="$min_time" >"$work/$mode.$i.json" 2>/dev/null ||
      { echo "seccomp.sh: $bench --filter=$mode failed" >&2; exit 1; }
  done
done

echo "Machine: $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs$(command -v systemd-detect-virt >/dev/null && v=$(systemd-detect-virt 2>/dev/null) && echo ", virtualized ($v)"); $rounds rounds, median CPU time per call."
echo
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
times = {"off": {}, "on": {}}
order = []
for mode in ("off", "on"):
    for i in range(rounds):
        for b in json.load(open(f"{work}/{mode}.{i}.json"))["benchmarks"]:
            name = b["name"].removeprefix("BM_")
            if name not in order:
                order.append(name)
            times[mode].setdefault(name, []).append(b["cpu_time"])
print("| host call | without filter | with filter | filter cost |")
print("| --- | --- | --- | --- |")
costs = []
for name in order:
    off = statistics.median(times["off"][name])
    on = statistics.median(times["on"][name])
    costs.append(on - off)
    print(f"| {name} | {off:.0f} ns | {on:.0f} ns | {on - off:+.0f} ns ({100 * (on - off) / off:+.1f} %) |")
print(f"\nMedian filter cost over these calls: {statistics.median(costs):+.0f} ns per host system call.")
PY
