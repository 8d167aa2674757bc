#!/usr/bin/env bash
# ctest's kvm_suite test (label "kvm"): tests/kvm/run-suite.sh through tools/with-kvm.
# The suite's tests take ~1,600 s of one host CPU in the nested machine (its TCG emulation runs on
# one host thread). With two host CPUs it runs as two halves of about equal time, each in a nested
# machine of its own, at the same time (tests/kvm/two-machines.sh; KVMS_NESTED_MACHINES=1 keeps
# one). Half A is the tests named below, half B every other test, so a new test lands in B.
# Measured halves (nested, loaded host): server 717 s, isolation 541, cli 113, snapshot 140,
# jail 83, dynamic 24, kvm_core 2 (A: ~1,620 s); hostile 348, busybox 323, guests 276,
# examples 232, limits 223, clock 211 (B: ~1,610 s).
# Usage: suite.sh BUILD_DIR
set -u
build=${1:?usage: suite.sh BUILD_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
half_a='^(server|isolation|cli|snapshot|jail|dynamic|kvm_core)$'
start=$(date +%s)
# shellcheck source=tests/kvm/two-machines.sh
. "$here/two-machines.sh"
suite() { "$root/tools/with-kvm" "$here/run-suite.sh" "$build" "$@"; }
half_a() { suite -R "$half_a"; }
half_b() { suite -E "$half_a"; }
if two_machines_possible; then
  run_two_halves "kvm suite: half A" half_a "kvm suite: half B" half_b
  status=$?
else
  suite
  status=$?
fi
echo "kvm suite: $(($(date +%s) - start)) s in all (nested machine boot included)"
exit $status
