#!/usr/bin/env bash
# ctest's kvm_runtimes test (label "runtimes"): tests/e2e/runtimes.sh through tools/with-kvm.
#   KVMS_RUNTIMES unset, 1 or "all"      every case
#   KVMS_RUNTIMES="pthread servers" ...  those cases/groups (names as in tests/e2e/runtimes.sh)
#   KVMS_RUNTIMES=0                      exit 77: ctest reports the test as skipped
# Every case in one run takes ~15 minutes in the nested machine, whose TCG emulation runs on one
# host thread. With two host CPUs (CI has two) and the whole suite asked for, it runs as two halves
# of about equal time, "servers" and the rest, each in a nested machine of its own with half the
# memory, at the same time: ~8 minutes. Each half's output is printed whole when it ends.
# KVMS_NESTED_MACHINES=1 keeps one machine (so does a host with less than 6 GiB available; see
# tests/kvm/two-machines.sh).
# Usage: runtimes.sh BUILD_DIR
set -u
build=${1:?usage: runtimes.sh BUILD_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
sel=${KVMS_RUNTIMES:-1}
if [ "$sel" = 0 ]; then
  echo "runtimes: not run (KVMS_RUNTIMES=0)"
  exit 77
fi
[ "$sel" = 1 ] || [ "$sel" = all ] && sel=""
start=$(date +%s)
# shellcheck source=tests/kvm/two-machines.sh
. "$here/two-machines.sh"
run_half() {  # run_half [CASE|GROUP ...]
  # shellcheck disable=SC2086
  KVMSERVER=$build/kvmserver GUESTS=$build/guests "$root/tools/with-kvm" "$root/tests/e2e/runtimes.sh" "$@"
}
servers_half() { run_half servers; }
others_half() { run_half python node deno pthread; }
if [ -z "$sel" ] && two_machines_possible; then
  run_two_halves "runtimes: python, node, deno, pthread" others_half "runtimes: servers" servers_half
  status=$?
else
  # shellcheck disable=SC2086
  run_half $sel
  status=$?
fi
echo "runtimes: $(($(date +%s) - start)) s in all (nested machine boot included)"
exit $status
