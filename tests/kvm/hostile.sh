#!/usr/bin/env bash
# Runs the hostile guests (tests/guests/hostile/) under kvmserver and checks that each one is
# contained:
#   - faulting guests end with the shell-style status for the exception's signal (SIGSEGV 139,
#     SIGILL 132, SIGFPE 136, SIGTRAP 133) and stderr holds exactly one line, starting with
#     "kvmserver:", naming the exception or the signal (case-insensitive). A status without that
#     line means kvmserver itself died, which fails the case.
#   - the endless loop is stopped by --timeout=2 with status 124, within 10 s.
#   - guests probing the sandbox (1 TB mmap, 100000 opens, bad pointers, killing children while
#     they exec or exit, /etc/shadow, ../ escapes, symlink escapes, writes outside --allow-write)
#     exit 0 with their "ok" line, and the files they attacked are unchanged.
# The resource attacks (fork/thread bombs, floods, memory hogs) are tests/e2e/limits.sh; the
# list of every attack and what must happen is tests/hostile/README.md.
#
# Usage: tests/kvm/hostile.sh [KVMSERVER [GUESTS]]
#   KVMSERVER  kvmserver binary (default: $KVMSERVER or build/kvmserver). "native" runs each guest
#              directly and checks the status Linux gives it (the sandbox cases are expected to
#              get through natively, status 2), to check the guests and this script.
#   GUESTS     build directory of the guests; the hostile ones are in GUESTS/hostile
#              (default: $GUESTS or build/guests)
# Environment: HOSTILE_FILTER (regex on case names), CASE_TIMEOUT (default 60 s per run),
#   KVMSERVER_FLAGS (extra flags put before "run").
# Output: "PASS name" / "FAIL name: reason" per case, then "N passed, M failed"; exit 1 on failure.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
KVMSERVER=${1:-${KVMSERVER:-$root/build/kvmserver}}
GUESTS=${2:-${GUESTS:-$root/build/guests}}
HOSTILE_FILTER=${HOSTILE_FILTER:-}
CASE_TIMEOUT=${CASE_TIMEOUT:-60}
read -r -a EXTRA_FLAGS <<<"${KVMSERVER_FLAGS:-}"

NATIVE=0
if [ "$KVMSERVER" = native ]; then
  NATIVE=1
else
  case $KVMSERVER in /*) ;; *) KVMSERVER=$PWD/$KVMSERVER ;; esac
fi
case $GUESTS in /*) ;; *) GUESTS=$PWD/$GUESTS ;; esac
H=$GUESTS/hostile

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvms-hostile.XXXXXX")
tmp=$(cd "$tmp" && pwd -P)
# The ../ escape needs a cwd exactly four levels below / (so ../../../../etc/passwd is
# /etc/passwd), whatever TMPDIR is.
dd_root=$(mktemp -d /tmp/kvms-dotdot.XXXXXX)
trap 'rm -rf "$tmp" "$dd_root"' EXIT

# Exception name patterns (case-insensitive), lenient: the x86 name, its mnemonic or the signal.
PF='page fault|#PF|SIGSEGV|segmentation'
GP='general protection|#GP|SIGSEGV|segmentation'
SEGV='page fault|general protection|#PF|#GP|SIGSEGV|segmentation'
UD='invalid opcode|#UD|SIGILL|illegal instruction'
DE='divide|#DE|SIGFPE|floating'
BP='breakpoint|#BP|SIGTRAP|trace.*trap'

# ---- fixtures ----
shadow_status_native() {
  # Natively the guest reads /etc/shadow when the user running this can (root): status 2.
  if [ -r /etc/shadow ]; then echo 2; else echo 0; fi
}

make_symlinks() {
  S=$tmp/sym
  rm -rf "$S"
  mkdir -p "$S"
  ln -s /etc/passwd "$S/esc"
  ln -s /etc "$S/escdir"
  ln -s ../../../../../../../../etc/passwd "$S/relesc"
  printf 'fine\n' >"$S/inside"
}

make_write_fixture() {
  WO=$tmp/wo
  rm -rf "$WO"
  mkdir -p "$WO/ro" "$WO/rw"
  printf 'precious\n' >"$WO/ro/victim"
  chmod 0644 "$WO/ro/victim"
  touch -d '2020-01-02 03:04:05' "$WO/ro/victim"
  ln -s ../ro "$WO/rw/link"
  WO_BEFORE=$(cd "$WO" && ls -lAR --time-style=+%s . && cat ro/victim 2>&1)
}

check_write_fixture() {
  local now
  now=$(cd "$WO" && ls -lAR --time-style=+%s . 2>&1 && cat ro/victim 2>&1)
  if [ "$now" != "$WO_BEFORE" ]; then
    echo "files outside --allow-write changed: $(diff <(echo "$WO_BEFORE") <(echo "$now") | grep '^[<>]' | head -3 | tr '\n' '|')"
  fi
}

# ---- running ----
# run CMD... : stdin /dev/null, stdout/stderr to $tmp/out and $tmp/err, SIGKILL after
# CASE_TIMEOUT; sets $status and $elapsed (seconds). Suppresses the shell's crash notice.
run() {
  local t0 t1
  t0=$(date +%s%N)
  { timeout -s KILL "$CASE_TIMEOUT" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null; } 2>/dev/null
  status=$?
  t1=$(date +%s%N)
  elapsed=$(((t1 - t0) / 1000000000))
}

short() { head -c 300 "$1" | tr '\n' '|'; }

# hcase NAME KIND EXPECT_KVM EXPECT_NATIVE PATTERN PROGRAM [ARGS...]
#   EXPECT_NATIVE: the status natively, or several as a regex alternation ("0|139").
#   KIND: fault (exception report expected), timeout, or ok (guest prints "ok ...", exits 0).
#   Globals read: FLAGS (kvmserver flags for this case), CWD (directory to run in, optional),
#   POST (a function to call after the kvm run; prints a reason when something is wrong).
hcase() {
  local name=$1 kind=$2 expect_kvm=$3 expect_native=$4 pattern=$5 prog=$6
  shift 6
  if [ -n "$HOSTILE_FILTER" ] && ! [[ $name =~ $HOSTILE_FILTER ]]; then return; fi
  local bin=$H/$prog
  if [ ! -x "$bin" ]; then
    fail "$name" "missing binary $bin (build the kvms_guests target)"
    return
  fi
  local dir=${CWD:-$tmp}
  local -a cmd
  if [ "$NATIVE" = 1 ]; then
    if [ "$kind" = timeout ]; then cmd=(timeout 2 "$bin" "$@"); else cmd=("$bin" "$@"); fi
  else
    cmd=("$KVMSERVER" "${EXTRA_FLAGS[@]}" "${FLAGS[@]}" run -- "$bin" "$@")
  fi
  echo "999 0" >"$tmp/status"
  (cd "$dir" || exit 1; run "${cmd[@]}"; echo "$status $elapsed" >"$tmp/status")
  read -r status elapsed <"$tmp/status"

  local reasons=()
  if [ "$NATIVE" = 1 ]; then
    [[ $status =~ ^($expect_native)$ ]] || reasons+=("status $status, natively expected $expect_native")
    if [ "$kind" = ok ] && [ "$expect_native" = 0 ] && ! grep -q '^ok ' "$tmp/out"; then
      reasons+=("no ok line")
    fi
  else
    if [ "$status" = 137 ] && [ "$elapsed" -ge "$CASE_TIMEOUT" ]; then
      reasons+=("hung: killed after ${CASE_TIMEOUT}s")
    elif [ "$status" != "$expect_kvm" ]; then
      reasons+=("status $status, expected $expect_kvm")
    fi
    local lines first
    lines=$(grep -c . "$tmp/err")
    first=$(grep -m1 . "$tmp/err")
    case $kind in
      fault)
        if [ "$lines" != 1 ]; then
          reasons+=("stderr has $lines lines, expected exactly 1: $(short "$tmp/err")")
        fi
        if [[ $first != kvmserver:* ]]; then
          reasons+=("no 'kvmserver:' report (did kvmserver itself crash?): ${first:-empty stderr}")
        elif ! grep -Eiq "$pattern" <<<"$first"; then
          reasons+=("report does not name the exception (/$pattern/): $first")
        fi
        ;;
      timeout)
        [ "$elapsed" -le 10 ] || reasons+=("took ${elapsed}s to stop with --timeout=2")
        if [ "$lines" -gt 1 ] || { [ "$lines" = 1 ] && [[ $first != kvmserver:* ]]; }; then
          reasons+=("unexpected stderr: $(short "$tmp/err")")
        fi
        ;;
      ok)
        if ! grep -q '^ok ' "$tmp/out" && ! grep -q LEAK "$tmp/out"; then
          reasons+=("no ok line; stdout: $(short "$tmp/out") stderr: $(short "$tmp/err")")
        fi
        ;;
    esac
    if grep -q LEAK "$tmp/out"; then
      reasons+=("$(grep -c LEAK "$tmp/out") leaks, first: $(grep -m1 LEAK "$tmp/out")")
    fi
    if [ -n "${POST:-}" ]; then
      local r
      r=$($POST)
      [ -n "$r" ] && reasons+=("$r")
    fi
  fi
  if [ ${#reasons[@]} = 0 ]; then
    pass "$name"
  else
    local joined="" r
    for r in "${reasons[@]}"; do joined+="${joined:+; }$r"; done
    fail "$name" "$joined"
  fi
}

FLAGS=()
CWD=
POST=

# ---- exceptions ----
hcase kernel_write_gdt fault 139 139 "$PF" kernel_write_gdt
hcase kernel_write_entry fault 139 139 "$PF" kernel_write_entry
hcase kernel_exec_entry fault 139 139 "$PF" kernel_exec_entry
hcase kernel_read fault 139 139 "$PF" kernel_read
hcase int3 fault 133 133 "$BP" int3
hcase ud2 fault 132 132 "$UD" ud2
hcase div0 fault 136 136 "$DE" div0
hcase jump_unmapped fault 139 139 "$PF" jump_unmapped
hcase null_read fault 139 139 "$PF" null_read
hcase noncanonical fault 139 139 "$SEGV" noncanonical
hcase stack_overflow fault 139 139 "$PF" stack_overflow
hcase hlt fault 139 139 "$GP" hlt
hcase cli fault 139 139 "$GP" cli
hcase out_port fault 139 139 "$GP" out_port

# ---- time ----
FLAGS=(--timeout=2)
hcase infinite_loop timeout 124 124 "" infinite_loop
FLAGS=()

# ---- resources and bad arguments ----
# Linux 6.x (seen on 6.18) faults returning to user mode with a non-canonical rsp: natively 0 or 139.
hcase bad_rsp_syscall ok 0 '0|139' "" bad_rsp_syscall
hcase mmap_1tb ok 0 0 "" mmap_1tb
FLAGS=(--max-memory=256)
hcase mmap_1tb.max-memory ok 0 0 "" mmap_1tb
FLAGS=()
hcase open_many ok 0 0 "" open_many
FLAGS=(--allow-all)
hcase exec_kill_race ok 0 0 "" exec_kill_race 100
FLAGS=()
hcase bad_pointers ok 0 0 "" bad_pointers

# ---- the sandbox ----
native_shadow=$(shadow_status_native)
hcase read_shadow ok 0 "$native_shadow" "" read_shadow
FLAGS=(--allow-read=/etc/passwd,/etc/group)
hcase read_shadow.sibling-grant ok 0 "$native_shadow" "" read_shadow

dd_cwd=$dd_root/a/b
mkdir -p "$dd_cwd"
printf 'x\n' >"$dd_cwd/here.txt"
CWD=$dd_cwd
FLAGS=("--cwd=$dd_cwd")
hcase dotdot_passwd.no-grant ok 0 2 "" dotdot_passwd
FLAGS=("--cwd=$dd_cwd" "--allow-read=$dd_cwd")
hcase dotdot_passwd.cwd-granted ok 0 2 "" dotdot_passwd
FLAGS=("--cwd=$dd_cwd" "--allow-read=$dd_cwd" "--allow-write=$dd_cwd")
hcase dotdot_passwd.cwd-writable ok 0 2 "" dotdot_passwd
CWD=

make_symlinks
FLAGS=("--allow-read=$S")
hcase symlink_escape ok 0 2 "" open_denied "$S/esc" "$S/escdir/passwd" "$S/relesc"

make_write_fixture
FLAGS=("--allow-read=$WO" "--allow-write=$WO/rw")
POST=check_write_fixture
hcase write_outside.sibling ok 0 2 "" write_outside "$WO/ro/victim" "$WO/ro"
make_write_fixture
hcase write_outside.dotdot ok 0 2 "" write_outside "$WO/rw/../ro/victim" "$WO/rw/../ro"
make_write_fixture
hcase write_outside.symlink ok 0 2 "" write_outside "$WO/rw/link/victim" "$WO/rw/link"
make_write_fixture
FLAGS=("--allow-read=$WO")
hcase write_outside.read-only-grant ok 0 2 "" write_outside "$WO/ro/victim" "$WO/ro"
POST=
FLAGS=()

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
