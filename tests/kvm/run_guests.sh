#!/usr/bin/env bash
# Runs every guest test program (tests/guests/*.c, each built as NAME.gcc-static, NAME.gcc-pie,
# NAME.gcc-dynamic and NAME.musl) natively and then under kvmserver, with the grants each needs, and checks that it
# exits 0 with its "ok NAME" line.
#
# Usage: tests/kvm/run_guests.sh [KVMSERVER [GUESTS]]
#   KVMSERVER  kvmserver binary (default: $KVMSERVER or build/kvmserver). The word "native" runs
#              only the native half, to check the guests and this script without kvmserver.
#   GUESTS     directory with the built guests (default: $GUESTS or build/guests)
# Environment: GUEST_VARIANTS (default "gcc-static gcc-pie gcc-dynamic musl"), GUEST_FILTER (a regex on
#   NAME.VARIANT), CASE_TIMEOUT (seconds per run, default 120), KVMSERVER_FLAGS (extra flags
#   put before "run", e.g. --verbose).
# Output: one line per case, "PASS name" or "FAIL name: reason", then "N passed, M failed".
# Exit status 1 if anything failed.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
KVMSERVER=${1:-${KVMSERVER:-$root/build/kvmserver}}
GUESTS=${2:-${GUESTS:-$root/build/guests}}
GUEST_VARIANTS=${GUEST_VARIANTS:-gcc-static gcc-pie gcc-dynamic musl}
GUEST_FILTER=${GUEST_FILTER:-}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
read -r -a EXTRA_FLAGS <<<"${KVMSERVER_FLAGS:-}"

NATIVE_ONLY=0
if [ "$KVMSERVER" = native ]; then
  NATIVE_ONLY=1
else
  case $KVMSERVER in /*) ;; *) KVMSERVER=$PWD/$KVMSERVER ;; esac
fi
case $GUESTS in /*) ;; *) GUESTS=$PWD/$GUESTS ;; esac

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvms-guests.XXXXXX")
tmp=$(cd "$tmp" && pwd -P)
trap 'chmod -R u+rwx "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT

if [ "$NATIVE_ONLY" = 0 ] && [ ! -x "$KVMSERVER" ]; then
  echo "# kvmserver not found or not executable: $KVMSERVER (use KVMSERVER=native for native only)"
fi

# run OUTPREFIX CMD... : runs CMD with stdin from /dev/null, stdout/stderr to OUTPREFIX.out/.err,
# killed after CASE_TIMEOUT seconds; sets $status. The shell's own "Segmentation fault" notice
# is suppressed.
run() {
  local pfx=$1
  shift
  { timeout -s KILL "$CASE_TIMEOUT" "$@" >"$pfx.out" 2>"$pfx.err" </dev/null; } 2>/dev/null
  status=$?
}

# explain NAME PFX : a short reason from a finished run.
explain() {
  local name=$1 pfx=$2 why
  if [ "$status" = 137 ]; then
    why="killed (timeout ${CASE_TIMEOUT}s or SIGKILL)"
  elif [ "$status" -gt 128 ]; then
    why="exit $status (signal $((status - 128)))"
  else
    why="exit $status"
  fi
  local err
  err=$(grep -m3 -v '^$' "$pfx.err" 2>/dev/null | tr '\n' '|' | cut -c1-300)
  [ -n "$err" ] && why="$why; stderr: $err"
  if ! grep -qx "ok $name" "$pfx.out" 2>/dev/null; then
    local out
    out=$(head -c 200 "$pfx.out" 2>/dev/null | tr '\n' '|')
    why="$why; no 'ok $name' line (stdout: ${out:-empty})"
  fi
  echo "$why"
}

# check CASENAME GUESTNAME PFX : PASS when the run exited 0 with the ok line.
check() {
  local casename=$1 name=$2 pfx=$3
  if [ "$status" = 0 ] && grep -qx "ok $name" "$pfx.out"; then
    pass "$casename"
  else
    fail "$casename" "$(explain "$name" "$pfx")"
  fi
}

# Per-guest fixtures. Each sets ARGS (the guest's arguments), GRANTS (kvmserver flags) and
# ENVS (NAME=VALUE pairs passed natively through env and to kvmserver as --env).
make_meta_fixture() {
  local d=$1
  mkdir -p "$d/sub"
  printf 'hello\n' >"$d/a.txt"
  chmod 0640 "$d/a.txt"
  printf 'b' >"$d/sub/b.txt"
  ln -s a.txt "$d/link"
  ln -s nonexistent "$d/dangling"
}

setup() {
  local name=$1 variant=$2 d
  ARGS=()
  GRANTS=()
  ENVS=()
  d=$tmp/$name.$variant.$3
  case $name in
    file_io | file_write | shared_mem)
      mkdir -p "$d"
      ARGS=("$d")
      GRANTS=("--allow-read=$d" "--allow-write=$d")
      ;;
    file_meta)
      mkdir -p "$d"
      make_meta_fixture "$d"
      ARGS=("$d")
      GRANTS=("--allow-read=$d")
      ;;
    mmap)
      mkdir -p "$d"
      # 3 pages and a bit: a partial last page, deterministic contents.
      awk 'BEGIN { for (i = 0; i < 12388; i++) printf "%c", 32 + (i * 7) % 95 }' >"$d/map.dat"
      ARGS=("$d/map.dat")
      GRANTS=("--allow-read=$d/map.dat")
      ;;
    time)
      ARGS=("$(date +%s)")
      ;;
    time-env)
      ENVS=("KVMS_NOW=$(date +%s)")
      ;;
  esac
}

# Guest programs, and the extra cases built from them (time-env: the same binary, time passed
# through the environment instead of argv).
CASES="file_io file_meta file_write mmap misc time time-env fpu tls threads signals signal_waits shared_mem"

for variant in $GUEST_VARIANTS; do
  for case in $CASES; do
    name=${case%-env}
    bin=$GUESTS/$name.$variant
    label=$case.$variant
    if [ -n "$GUEST_FILTER" ] && ! [[ $label =~ $GUEST_FILTER ]]; then continue; fi
    if [ ! -x "$bin" ]; then
      fail "native:$label" "missing binary $bin (build the kvms_guests target)"
      [ "$NATIVE_ONLY" = 0 ] && fail "kvm:$label" "missing binary $bin"
      continue
    fi

    setup "$case" "$variant" native
    envargs=()
    for e in "${ENVS[@]}"; do envargs+=("$e"); done
    run "$tmp/$label.native" env "${envargs[@]}" "$bin" "${ARGS[@]}"
    check "native:$label" "$name" "$tmp/$label.native"

    [ "$NATIVE_ONLY" = 1 ] && continue
    setup "$case" "$variant" kvm
    kflags=("${GRANTS[@]}")
    for e in "${ENVS[@]}"; do kflags+=("--env=$e"); done
    run "$tmp/$label.kvm" "$KVMSERVER" "${EXTRA_FLAGS[@]}" "${kflags[@]}" run -- "$bin" "${ARGS[@]}"
    check "kvm:$label" "$name" "$tmp/$label.kvm"
    # file_write must leave its directory as it found it: empty.
    if [ "$name" = file_write ] && [ "$status" = 0 ] && [ -n "$(ls -A "${ARGS[0]}")" ]; then
      fail "kvm:$label.cleanup" "left files behind: $(ls -A "${ARGS[0]}" | tr '\n' ' ')"
    fi
  done
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
