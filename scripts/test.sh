#!/usr/bin/env bash
# Runs every test: unit tests directly, and the KVM suite through tools/with-kvm (directly where
# /dev/kvm works, otherwise inside the nested KVM machine, booted once). Prints how long each part took.
# Fuzzing (issue 9): build-fuzz/ (tests/fuzz/build.sh: clang, ASan+UBSan+coverage), the in-process
# syscall fuzzer for 45 s (tests/fuzz/run_libfuzzer.sh, natively, before the KVM suite), after it the
# guest syscall fuzzer under the sanitized kvmserver (tests/fuzz/guest_fuzz.sh, in its own nested
# machine), then the line coverage of src/linux/ both reach together. CI's budget for all of it is
# 8 minutes on 2 cores: in the nested machine the guest fuzzer makes 240-270 calls/s with two seeds
# at a time, so CI runs 40,000 calls (2 seeds of 20,000: ~3.5 minutes with the machine's boot and
# the escape checks), not 10^6 (an hour); run more by hand
# (tools/with-kvm env FUZZ_CALLS_TOTAL=1000000 tests/fuzz/guest_fuzz.sh). After the syscall fuzzer,
# the snapshot file reader's fuzzer (tests/fuzz/run_snapshot_fuzzer.sh, natively, ~45 s): each of
# its >5,000-file corpus once, then 15 s of fuzzing (KVMS_SNAPSHOT_FUZZ_SECONDS). KVMS_FUZZ_SECONDS
# and KVMS_FUZZ_CALLS change the budgets (0: leave that part out; both 0: no fuzzing build either).
# Then the runtime acceptance tests (tests/e2e/runtimes.sh, ctest label "runtimes": python3, node,
# deno, pthreads and their servers); KVMS_RUNTIMES=0 leaves them out, a list of cases/groups picks.
# Before them, the peer suites' CI subset (tests/compat/ci.sh; KVMS_COMPAT=0 leaves it out).
# After the unit tests, the native host-side benchmarks in quick mode (bench/host_costs.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${KVMS_FUZZ_SECONDS:-45}
fuzz_calls=${KVMS_FUZZ_CALLS:-40000}
t0=$(date +%s)
KVMS_FUZZ_BUILD=0 scripts/setup.sh || exit 1
t1=$(date +%s)
tools/with-kvm --setup >/dev/null || { echo "test: cannot prepare the nested KVM machine" >&2; exit 1; }
t2=$(date +%s)
ctest --test-dir build --output-on-failure -j2 -LE 'kvm|runtimes'
unit=$?
# The host-side benchmarks (bench/host_costs.sh, issue 13) in quick mode: a few seconds, so that
# they keep building and running; their figures come from a full run by hand.
tb=$(date +%s)
hostbench=0
QUICK=1 bench/host_costs.sh build >/dev/null
hostbench=$?
[ "$hostbench" = 0 ] || echo "test: bench/host_costs.sh (quick) failed" >&2
hostbench_time=", host benchmarks (quick) $(($(date +%s) - tb)) s"
# The Debian package, man page, completion, systemd units and manifests (issue 14; no KVM).
tp=$(date +%s)
tests/packaging/run.sh build
packaging=$?
packaging_time=", packaging $(($(date +%s) - tp)) s"
t3=$(date +%s)

# Each fuzzing part's time, and their sum (CI's budget for them: 8 minutes).
fuzz_times="" fuzz_total=0
timed() {  # timed NAME SECONDS_SINCE
  local s=$(($(date +%s) - $2))
  fuzz_times+=", $1 $s s"
  fuzz_total=$((fuzz_total + s))
}
fuzzbuild=0 libfuzzer=0 snapshotfuzz=0 guestfuzz=0
if [ "$fuzz_seconds" != 0 ] || [ "$fuzz_calls" != 0 ]; then
  t=$(date +%s)
  tests/fuzz/build.sh build-fuzz
  fuzzbuild=$?
  timed "fuzzing build" "$t"
fi
if [ "$fuzz_seconds" != 0 ] && [ "$fuzzbuild" = 0 ]; then
  t=$(date +%s)
  tests/fuzz/run_libfuzzer.sh build-fuzz "$fuzz_seconds"
  libfuzzer=$?
  timed "libFuzzer" "$t"
  t=$(date +%s)
  tests/fuzz/run_snapshot_fuzzer.sh build-fuzz "${KVMS_SNAPSHOT_FUZZ_SECONDS:-15}"
  snapshotfuzz=$?
  timed "snapshot fuzzing" "$t"
fi
t4=$(date +%s)
ctest --test-dir build --output-on-failure -L kvm
kvm=$?
t5=$(date +%s)
if [ "$fuzz_calls" != 0 ] && [ "$fuzzbuild" = 0 ]; then
  t=$(date +%s)
  FUZZ_CALLS_TOTAL=$fuzz_calls FUZZ_CALLS_PER_SEED=${KVMS_FUZZ_CALLS_PER_SEED:-20000} \
    tools/with-kvm tests/fuzz/guest_fuzz.sh build-fuzz/kvmserver build/guests
  guestfuzz=$?
  timed "guest fuzzing" "$t"
  if [ "$fuzz_seconds" != 0 ]; then
    t=$(date +%s)
    FUZZ_GUEST_PROFILE=build-fuzz/guest-fuzz/kvmserver.profdata tests/fuzz/run_libfuzzer.sh build-fuzz --coverage-only
    timed "coverage report" "$t"
  fi
fi
# The peer suites' CI subset (issue 12): gVisor's tests of the calls every server makes, built here
# and run in the nested machine, against the recorded list of passing cases (tests/compat/ci.sh).
tc=$(date +%s)
compat=0 compat_time=""
if [ "${KVMS_COMPAT:-1}" != 0 ]; then
  tests/compat/ci.sh build/kvmserver
  compat=$?
  compat_time=", peer suites (gVisor subset) $(($(date +%s) - tc)) s"
fi
t6=$(date +%s)
runtimes=0 runtimes_time=""
if [ "${KVMS_RUNTIMES:-1}" != 0 ]; then
  ctest --test-dir build --output-on-failure -L runtimes
  runtimes=$?
  runtimes_time=", runtimes $(($(date +%s) - t6)) s"
fi
[ -n "$fuzz_times" ] && fuzz_times+=" (fuzzing in all $fuzz_total s)"
echo "test: setup+build $((t1 - t0)) s, nested machine set-up $((t2 - t1)) s, unit tests $((tb - t2)) s$hostbench_time$packaging_time, KVM suite $((t5 - t4)) s$compat_time$runtimes_time$fuzz_times"
[ "$unit" = 0 ] && [ "$hostbench" = 0 ] && [ "$packaging" = 0 ] && [ "$compat" = 0 ] && [ "$fuzzbuild" = 0 ] && [ "$libfuzzer" = 0 ] && [ "$snapshotfuzz" = 0 ] && [ "$kvm" = 0 ] && [ "$guestfuzz" = 0 ] && [ "$runtimes" = 0 ]
