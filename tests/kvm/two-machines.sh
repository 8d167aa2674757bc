# Sourced by tests/kvm/suite.sh and tests/kvm/runtimes.sh: runs a suite as two halves, each in a
# nested machine of its own, at the same time. The nested machine's TCG emulation runs on one host
# thread (tools/with-kvm: thread=single), so one machine leaves a second host CPU idle.
#
# two_machines_possible: true when two machines fit: no real /dev/kvm here (the halves would then
# run directly and share the CPUs anyway), two host CPUs, and 6 GiB available for two guests of
# 4 GiB each (touched lazily: the suites' guests use far less). KVMS_NESTED_MACHINES=1 (or the older
# KVMS_RUNTIMES_MACHINES=1) keeps one machine.
two_machines_possible() {
  [ -c /dev/kvm ] && return 1
  local wanted=${KVMS_NESTED_MACHINES:-${KVMS_RUNTIMES_MACHINES:-}}
  [ -n "$wanted" ] && { [ "$wanted" -ge 2 ]; return; }
  local available_kib
  available_kib=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo 2>/dev/null)
  [ "$(nproc)" -ge 2 ] && [ "${available_kib:-0}" -ge $((6 * 1024 * 1024)) ]
}

# run_two_halves TITLE_A FUNCTION_A TITLE_B FUNCTION_B: runs both functions at once with their
# output captured, then prints each half's output whole under its title, in order. Exit status 0
# only when both halves passed.
run_two_halves() {
  local logs status_a status_b pid_a pid_b
  logs=$(mktemp -d "${TMPDIR:-/tmp}/kvms-halves.XXXXXX")
  export WITH_KVM_MEM=${WITH_KVM_MEM:-4G}
  "$2" >"$logs/a" 2>&1 &
  pid_a=$!
  "$4" >"$logs/b" 2>&1 &
  pid_b=$!
  wait "$pid_a"; status_a=$?
  wait "$pid_b"; status_b=$?
  echo "==== $1 (exit $status_a)"
  cat "$logs/a"
  echo "==== $3 (exit $status_b)"
  cat "$logs/b"
  rm -rf "$logs"
  [ "$status_a" = 0 ] && [ "$status_b" = 0 ]
}
