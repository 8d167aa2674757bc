#!/usr/bin/env bash
# Runs every test: unit tests directly, and the KVM suite through tools/with-kvm (directly where
# /dev/kvm works, otherwise inside the nested KVM machine, booted once). Prints how long each part took.
# Fuzzing: the in-process syscall fuzzer for 60 s (tests/fuzz/run_libfuzzer.sh, natively, before the
# KVM suite), and after it the guest syscall fuzzer under the sanitized kvmserver for 10^6 calls
# (tests/fuzz/guest_fuzz.sh, in its own nested machine); then the line coverage of src/linux/ both
# reach together. KVMS_FUZZ_SECONDS and KVMS_FUZZ_CALLS change the budgets (0: leave that part out).
# Then the runtime acceptance tests (tests/e2e/runtimes.sh, ctest label "runtimes": python3, node,
# deno, pthreads and their servers); KVMS_RUNTIMES=0 leaves them out, a list of cases/groups picks.
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
scripts/setup.sh || exit 1
t1=$(date +%s)
tools/with-kvm --setup >/dev/null || { echo "test: cannot prepare the nested KVM machine" >&2; exit 1; }
t2=$(date +%s)
ctest --test-dir build --output-on-failure -j2 -LE 'kvm|runtimes'
unit=$?
t3=$(date +%s)
libfuzzer=0
[ "${KVMS_FUZZ_SECONDS:-60}" != 0 ] && { tests/fuzz/run_libfuzzer.sh build-fuzz "${KVMS_FUZZ_SECONDS:-60}"; libfuzzer=$?; }
t4=$(date +%s)
ctest --test-dir build --output-on-failure -L kvm
kvm=$?
t5=$(date +%s)
guestfuzz=0
if [ "${KVMS_FUZZ_CALLS:-1000000}" != 0 ]; then
  FUZZ_CALLS_TOTAL=${KVMS_FUZZ_CALLS:-1000000} tools/with-kvm tests/fuzz/guest_fuzz.sh build-fuzz/kvmserver build/guests
  guestfuzz=$?
  [ "${KVMS_FUZZ_SECONDS:-60}" != 0 ] && FUZZ_GUEST_PROFILE=build-fuzz/guest-fuzz/kvmserver.profdata \
    tests/fuzz/run_libfuzzer.sh build-fuzz --coverage-only
fi
t6=$(date +%s)
runtimes=0 runtimes_time=""
if [ "${KVMS_RUNTIMES:-1}" != 0 ]; then
  ctest --test-dir build --output-on-failure -L runtimes
  runtimes=$?
  runtimes_time=", runtimes $(($(date +%s) - t6)) s"
fi
echo "test: setup+build $((t1 - t0)) s, nested machine set-up $((t2 - t1)) s, unit tests $((t3 - t2)) s, libFuzzer $((t4 - t3)) s, KVM suite $((t5 - t4)) s, guest fuzzing $((t6 - t5)) s$runtimes_time"
[ "$unit" = 0 ] && [ "$libfuzzer" = 0 ] && [ "$kvm" = 0 ] && [ "$guestfuzz" = 0 ] && [ "$runtimes" = 0 ]
