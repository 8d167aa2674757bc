#!/usr/bin/env bash
# Runs every test: unit tests directly, and the KVM suite through tools/with-kvm (directly where
# /dev/kvm works, otherwise inside the nested KVM machine, booted once). Prints how long each part took.
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
ctest --test-dir build --output-on-failure -L kvm
kvm=$?
t4=$(date +%s)
runtimes=0 runtimes_time=""
if [ "${KVMS_RUNTIMES:-1}" != 0 ]; then
  ctest --test-dir build --output-on-failure -L runtimes
  runtimes=$?
  runtimes_time=", runtimes $(($(date +%s) - t4)) s"
fi
echo "test: setup+build $((t1 - t0)) s, nested machine set-up $((t2 - t1)) s, unit tests $((t3 - t2)) s, KVM suite $((t4 - t3)) s$runtimes_time"
[ "$unit" = 0 ] && [ "$kvm" = 0 ] && [ "$runtimes" = 0 ]
