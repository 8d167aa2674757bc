#!/usr/bin/env bash
# Runs the guest syscall fuzzer (tests/guests/fuzz/syscall_fuzz.c) under kvmserver, normally an
# ASan+UBSan build (-DKVMS_SANITIZE=ON, or -DKVMS_FUZZ=ON, which has coverage too: then the coverage
# of the run is written to $FUZZ_OUT/kvmserver.profdata, and tests/fuzz/run_libfuzzer.sh reports it
# with the in-process fuzzer's), for a budget of calls split across seeds: first every seed
# of tests/fuzz/regression-seeds.txt, then fresh ones. A seed fails the run when
#   - kvmserver crashed: a status that is not the guest's (a signal death without the one
#     "kvmserver:" line naming it, as tests/kvm/hostile.sh tells them apart), or no status at all;
#   - stderr holds a sanitizer report (ASan, LSan, UBSan);
#   - kvmserver did not stop by its --timeout (the outer `timeout` had to kill it), or stopped the
#     guest by it (the fuzzer's watchdog ends every blocked call: a stuck guest is a lost wake-up);
#   - a file appeared or changed outside the granted scratch directory (in /tmp and the project tree,
#     the writable places of the nested machine);
#   - the guest ended otherwise than it says it would (its summary line with every call made, or
#     the deliberate end it announced).
# Each failure prints the seed and the command that reproduces it, and the seed goes to
# $FUZZ_OUT/new-regression-seeds.txt: add it to tests/fuzz/regression-seeds.txt with the fix.
#
# Usage: tests/fuzz/guest_fuzz.sh [KVMSERVER [GUESTS]]
#   KVMSERVER  default $KVMSERVER or build-fuzz/kvmserver
#   GUESTS     default $GUESTS or build/guests (the fuzzer is GUESTS/fuzz/syscall_fuzz)
# Environment:
#   FUZZ_CALLS_TOTAL  calls in all (default 1000000), FUZZ_CALLS_PER_SEED (default 100000)
#   FUZZ_SEED_BASE    first fresh seed (default: from the clock; printed, so a run can be repeated)
#   FUZZ_SEEDS        "S1 S2 ...": run exactly these (with FUZZ_CALLS_PER_SEED each), nothing else
#   FUZZ_TIMEOUT      kvmserver --timeout per seed in seconds (default 900)
#   FUZZ_JOBS         seeds run at once (default 2: the nested machine's vCPUs wait on exits more
#                     than they compute, so two runs take little longer than one)
#   FUZZ_KVMSERVER_FLAGS  extra kvmserver flags, e.g. --env=SYSCALL_FUZZ_NO_SPAWN=1 (no fork/clone)
#   FUZZ_OUT          where logs go (default: guest-fuzz/ next to KVMSERVER)
#   FUZZ_IGNORE       an extended regex of paths the escape check leaves out (default none; for
#                     hand runs while something else writes to the tree, e.g. '^/work/x/build-fuzz/')
# Output: PASS/FAIL and the calls per second of each seed, then
#   "guest fuzz: N calls in T s (R calls/s with J at a time; r calls/s per run), S seeds, F failed"
# Exit status 1 if any seed failed.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
KVMSERVER=${1:-${KVMSERVER:-$root/build-fuzz/kvmserver}}
GUESTS=${2:-${GUESTS:-$root/build/guests}}
case $KVMSERVER in /*) ;; *) KVMSERVER=$PWD/$KVMSERVER ;; esac
case $GUESTS in /*) ;; *) GUESTS=$PWD/$GUESTS ;; esac
FUZZER=$GUESTS/fuzz/syscall_fuzz
CALLS_TOTAL=${FUZZ_CALLS_TOTAL:-1000000}
CALLS_PER_SEED=${FUZZ_CALLS_PER_SEED:-100000}
TIMEOUT=${FUZZ_TIMEOUT:-900}
OUTER=$((TIMEOUT + 60))
JOBS=${FUZZ_JOBS:-2}
read -r -a EXTRA_FLAGS <<<"${FUZZ_KVMSERVER_FLAGS:-}"
SEED_BASE=${FUZZ_SEED_BASE:-$(( $(date +%s) % 100000000 * 16 ))}

for f in "$KVMSERVER" "$FUZZER"; do
  [ -x "$f" ] || { echo "guest_fuzz: missing $f (build it first)" >&2; exit 2; }
done
[ -c /dev/kvm ] || { echo "guest_fuzz: no /dev/kvm here: run me through tools/with-kvm" >&2; exit 125; }

out=${FUZZ_OUT:-$(dirname "$KVMSERVER")/guest-fuzz}
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
: >"$out/new-regression-seeds.txt"
work=$(mktemp -d /tmp/kvms-guest-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
wall_start=$(date +%s)
ASAN_BASE=${ASAN_OPTIONS:-abort_on_error=0:print_summary=1}
rm -rf "$out/profiles" "$out/kvmserver.profdata"
mkdir -p "$out/profiles"
export LLVM_PROFILE_FILE="$out/profiles/kvmserver-%p.profraw"  # a kvmserver built with coverage writes it
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

SANITIZER='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer|SUMMARY: [A-Za-z]*Sanitizer'

# Everything the fuzzer could reach to write besides its scratch directory: the nested machine's
# writable places, but for the scratch directories (under $work) and the logs ($out). A listing with
# sizes and times, before and after each batch of runs.
writable_places() {
  find /tmp "$root" -xdev \( -path "$out" -o -path "$root/.git" -o -path "$work/*/scratch" \) -prune -o \
       \( -type f -o -type l -o -type s -o -type p \) -printf '%p %s %T@\n' 2>/dev/null |
    if [ -n "${FUZZ_IGNORE:-}" ]; then grep -Ev "$FUZZ_IGNORE"; else cat; fi | sort
}

total_calls=0
total_ms=0
seeds_run=0
failed=0

# start_seed SEED CALLS: runs one seed in the background: its scratch directory (the cwd, the only
# writable grant) is $work/run-SEED/scratch, on the nested machine's tmpfs; its logs go to
# $out/run-SEED.
start_seed() {
  local seed=$1 calls=$2 dir="$out/run-$1" scratch="$work/run-$1/scratch"
  rm -rf "$dir" "$work/run-$1"
  mkdir -p "$dir" "$scratch"
  (
    cd "$scratch" || exit 1
    # Odd seeds: kvmserver's host seccomp filter on (run mode's default), so a host call the
    # emulation makes and the filter lacks shows up. Even seeds: the filter off and LeakSanitizer on
    # (its check at exit stops the world with prctl and ptrace, which the filter denies).
    local seccomp=on leaks=0
    if ((seed % 2 == 0)); then seccomp=off leaks=1; fi
    t0=$(date +%s%N)
    ASAN_OPTIONS="$ASAN_BASE:detect_leaks=$leaks" timeout -s KILL "$OUTER" "$KVMSERVER" "${EXTRA_FLAGS[@]}" \
      --seccomp="$seccomp" --timeout="$TIMEOUT" --allow-write="$scratch" --cwd="$scratch" \
      run -- "$FUZZER" "$seed" "$calls" >"$dir/stdout" 2>"$dir/stderr" </dev/null
    status=$?
    echo "$status $(( ($(date +%s%N) - t0) / 1000000 ))" >"$dir/status"
  ) &
}

# check_seed SEED CALLS [ESCAPED]: judges a finished run; ESCAPED lists files written outside the
# scratch directories while it ran.
check_seed() {
  local seed=$1 calls=$2 escaped=${3:-} dir="$out/run-$1"
  local status=999 ms=0
  read -r status ms <"$dir/status" 2>/dev/null
  local reasons=() made=0 line expect
  line=$(grep -a -m1 '^syscall_fuzz: seed=' "$dir/stdout")
  if [[ $line =~ calls=([0-9]+) ]]; then made=${BASH_REMATCH[1]}; fi
  expect=$(grep -a -m1 -o 'expect status [0-9]*' "$dir/stdout" | grep -o '[0-9]*$')
  local kvms_lines
  kvms_lines=$(grep -a -c '^kvmserver:' "$dir/stderr")
  if [ "$status" = 137 ] && [ "$ms" -ge $((OUTER * 1000)) ]; then
    reasons+=("hang: kvmserver still running ${OUTER}s after start, past its --timeout=$TIMEOUT")
  elif grep -a -Eq "$SANITIZER" "$dir/stderr"; then
    reasons+=("sanitizer report: $(grep -a -E -m1 "$SANITIZER" "$dir/stderr")")
  elif [ "$status" = 124 ] && grep -aq 'timed out' "$dir/stderr"; then
    reasons+=("stuck: the guest was still running at --timeout=$TIMEOUT (a call nothing woke)")
  elif [ "$status" -gt 128 ] && [ "$kvms_lines" = 0 ]; then
    reasons+=("kvmserver crashed: status $status without a 'kvmserver:' line; stderr: $(head -c 300 "$dir/stderr" | tr '\n' '|')")
  elif [ -n "$expect" ]; then
    [ "$status" = "$expect" ] || reasons+=("deliberate end: status $status, announced $expect; stderr: $(head -c 300 "$dir/stderr" | tr '\n' '|')")
  elif [ "$status" != 0 ] || [ "$made" != "$calls" ]; then
    reasons+=("the guest ended early: status $status after $made of $calls calls; stdout: $(tail -c 200 "$dir/stdout" | tr '\n' '|') stderr: $(head -c 300 "$dir/stderr" | tr '\n' '|')")
  fi
  [ -n "$escaped" ] && reasons+=("written outside the scratch directory (by this seed or another of its batch): $escaped")

  seeds_run=$((seeds_run + 1))
  total_calls=$((total_calls + made))
  total_ms=$((total_ms + ms))
  local rate=0
  [ "$ms" -gt 0 ] && rate=$((made * 1000 / ms))
  if [ ${#reasons[@]} = 0 ]; then
    echo "PASS seed $seed: $made calls in $((ms / 1000)).$((ms % 1000 / 100)) s ($rate calls/s)${expect:+, deliberate end $expect}"
    rm -rf "$dir" "$work/run-$seed"
  else
    failed=$((failed + 1))
    local joined="" r
    for r in "${reasons[@]}"; do joined+="${joined:+; }$r"; done
    echo "FAIL seed $seed ($calls calls): $joined"
    echo "  reproduce: tools/with-kvm env FUZZ_SEEDS=$seed FUZZ_CALLS_PER_SEED=$calls tests/fuzz/guest_fuzz.sh $KVMSERVER $GUESTS"
    echo "  logs: $dir/stderr"
    echo "$seed $calls  # $(date +%F): ${reasons[0]:0:120}" >>"$out/new-regression-seeds.txt"
  fi
}

# run_batch "SEED CALLS" ...: the seeds at once (FUZZ_JOBS of them), then their verdicts.
run_batch() {
  local before="$out/before" after="$out/after" pair
  writable_places >"$before"
  for pair in "$@"; do start_seed $pair; done
  wait
  writable_places >"$after"
  local escaped
  escaped=$(comm -13 "$before" "$after" | head -5 | tr '\n' ' ')
  for pair in "$@"; do check_seed $pair "$escaped"; done
}

# The seeds to run, as "SEED CALLS" lines: the regression seeds, then fresh ones up to the budget.
planned_calls=0
{
  if [ -n "${FUZZ_SEEDS:-}" ]; then
    for s in $FUZZ_SEEDS; do echo "$s $CALLS_PER_SEED"; done
  else
    while read -r s c _; do
      case $s in '' | \#*) continue ;; esac
      echo "$s ${c:-$CALLS_PER_SEED}"
    done <"$here/regression-seeds.txt"
  fi
} >"$out/plan"
while read -r s c; do planned_calls=$((planned_calls + c)); done <"$out/plan"
if [ -z "${FUZZ_SEEDS:-}" ]; then
  echo "guest fuzz: fresh seeds from $SEED_BASE (FUZZ_SEED_BASE=$SEED_BASE repeats them), $JOBS at a time"
  seed=$SEED_BASE
  while [ "$planned_calls" -lt "$CALLS_TOTAL" ]; do
    echo "$seed $CALLS_PER_SEED" >>"$out/plan"
    planned_calls=$((planned_calls + CALLS_PER_SEED))
    seed=$((seed + 1))
  done
fi
batch=()
while read -r s c; do
  batch+=("$s $c")
  if [ ${#batch[@]} -ge "$JOBS" ]; then
    run_batch "${batch[@]}"
    batch=()
  fi
done <"$out/plan"
[ ${#batch[@]} -gt 0 ] && run_batch "${batch[@]}"

llvm_profdata=$(command -v llvm-profdata-14 || command -v llvm-profdata)
if [ -n "$llvm_profdata" ] && compgen -G "$out/profiles/*.profraw" >/dev/null; then
  "$llvm_profdata" merge -sparse "$out"/profiles/*.profraw -o "$out/kvmserver.profdata" &&
    echo "guest fuzz: coverage profile of kvmserver in $out/kvmserver.profdata"
fi
rate=0
[ "$total_ms" -gt 0 ] && rate=$((total_calls * 1000 / total_ms))
wall=$(( $(date +%s) - wall_start ))
echo "guest fuzz: $total_calls calls in $wall s ($((total_calls / (wall > 0 ? wall : 1))) calls/s with $JOBS at a time; $rate calls/s per run), $seeds_run seeds, $failed failed (logs: $out)"
[ "$failed" = 0 ]
