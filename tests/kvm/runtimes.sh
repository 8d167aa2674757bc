#!/usr/bin/env bash
# ctest's kvm_runtimes test (label "runtimes"): tests/e2e/runtimes.sh through tools/with-kvm
# (23 minutes in the nested machine with the counts of 2026-12-04, cut since to fit CI):
#   KVMS_RUNTIMES unset, 1 or "all"      every case
#   KVMS_RUNTIMES="pthread servers" ...  those cases/groups (names as in tests/e2e/runtimes.sh)
#   KVMS_RUNTIMES=0                      exit 77: ctest reports the test as skipped
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
# shellcheck disable=SC2086
KVMSERVER=$build/kvmserver GUESTS=$build/guests "$root/tools/with-kvm" "$root/tests/e2e/runtimes.sh" $sel
status=$?
echo "runtimes: $(($(date +%s) - start)) s in all (nested machine boot included)"
exit $status
