#!/usr/bin/env bash
# ctest's kvm_runtimes test (label "runtimes"): tests/e2e/runtimes.sh through tools/with-kvm.
#   KVMS_RUNTIMES unset, 1 or "all"      every case
#   KVMS_RUNTIMES="pthread servers" ...  those cases/groups (names as in tests/e2e/runtimes.sh)
#   KVMS_RUNTIMES=0                      exit 77: ctest reports the test as skipped
# Every case in one run takes ~15 minutes in the nested machine, whose TCG emulation runs on one
# host thread. With two host CPUs (CI has two) and the whole suite asked for, it runs as two halves
# of about equal time, "servers" and the rest, each in a nested machine of its own with half the
# memory, at the same time: ~8 minutes. Each half's output is printed whole when it ends.
# KVMS_RUNTIMES_MACHINES=1 keeps one machine (so does a host with less than 6 GiB available).
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
# Two machines need two CPUs and room for two guests' memory (4 GiB each, touched lazily: the
# suite's guests use far less, but a host short of memory keeps to one machine).
available_kib=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo 2>/dev/null)
machines=${KVMS_RUNTIMES_MACHINES:-$([ "$(nproc)" -ge 2 ] && [ "${available_kib:-0}" -ge $((6 * 1024 * 1024)) ] && echo 2 || echo 1)}
run_half() {  # run_half [CASE|GROUP ...]
  # shellcheck disable=SC2086
  KVMSERVER=$build/kvmserver GUESTS=$build/guests "$root/tools/with-kvm" "$root/tests/e2e/runtimes.sh" "$@"
}
if [ -n "$sel" ] || [ "$machines" -lt 2 ] || [ -c /dev/kvm ]; then
  # shellcheck disable=SC2086
  run_half $sel
  status=$?
else
  logs=$(mktemp -d "${TMPDIR:-/tmp}/kvms-runtimes.XXXXXX")
  trap 'rm -rf "$logs"' EXIT
  export WITH_KVM_MEM=${WITH_KVM_MEM:-4G}
  run_half servers >"$logs/servers" 2>&1 &
  servers_pid=$!
  run_half python node deno pthread >"$logs/others" 2>&1 &
  others_pid=$!
  wait "$others_pid"; others_status=$?
  echo "==== runtimes: python, node, deno, pthread (exit $others_status)"
  cat "$logs/others"
  wait "$servers_pid"; servers_status=$?
  echo "==== runtimes: servers (exit $servers_status)"
  cat "$logs/servers"
  status=$((others_status != 0 || servers_status != 0))
fi
echo "runtimes: $(($(date +%s) - start)) s in all (nested machine boot included)"
exit $status
