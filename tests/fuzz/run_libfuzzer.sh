#!/usr/bin/env bash
# Runs the in-process syscall fuzzer (tests/fuzz/syscall_fuzzer.cpp) natively for a fixed time,
# starting from the seed corpus (tests/fuzz/corpus, written by make_corpus.py), then reports the line
# coverage of src/linux/ that the corpus (seeds plus what this run found) reaches.
#
# Usage: tests/fuzz/run_libfuzzer.sh [BUILD_DIR [SECONDS | --coverage-only]]
#   BUILD_DIR        a -DKVMS_FUZZ=ON build (clang), default build-fuzz
#   SECONDS          fuzzing time, default 60
#   --coverage-only  no fuzzing: the coverage report of the corpus an earlier run left (its
#                    profile, with FUZZ_GUEST_PROFILE's, typically after tests/fuzz/guest_fuzz.sh)
# Environment: FUZZ_OUT (default BUILD_DIR/libfuzzer): the grown corpus, crash inputs, coverage;
#   FUZZ_GUEST_PROFILE: a profile (.profdata) of kvmserver from tests/fuzz/guest_fuzz.sh, whose
#   coverage is then reported together with the corpus's (that is how guest.cpp gets counted).
# Output: "libfuzzer: N runs in S s (R exec/s), corpus C inputs", the coverage per file of
#   src/linux/ and the totals with and without guest.cpp; exit 1 when the fuzzer found a crash,
#   a leak, a timeout or a broken invariant (the input is kept: its path and how to replay it
#   are printed).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${2:-60}
case $build in /*) ;; *) build=$PWD/$build ;; esac
fuzzer=$build/tests/fuzz/syscall_fuzzer
[ -x "$fuzzer" ] || { echo "run_libfuzzer: no $fuzzer (configure with CC=clang CXX=clang++ -DKVMS_FUZZ=ON, build target syscall_fuzzer)" >&2; exit 2; }
llvm_profdata=$(command -v llvm-profdata-14 || command -v llvm-profdata)
llvm_cov=$(command -v llvm-cov-14 || command -v llvm-cov)
[ -n "$llvm_profdata" ] && [ -n "$llvm_cov" ] || { echo "run_libfuzzer: no llvm-profdata/llvm-cov (apt-get install llvm-14)" >&2; exit 2; }

out=${FUZZ_OUT:-$build/libfuzzer}
seeds=$(mktemp -d "${TMPDIR:-/tmp}/kvms-seeds.XXXXXX")
trap 'rm -rf "$seeds"' EXIT
python3 "$here/make_corpus.py" "$seeds" >/dev/null || { echo "run_libfuzzer: make_corpus.py failed" >&2; exit 2; }
# Fuzzing: new inputs go to $out/corpus, the seeds stay as they are. -rss_limit_mb: the harness maps
# 1 GiB of guest memory, of which it touches little.
fuzz() {
  rm -rf "$out/corpus" "$out/profiles" "$out/crashes"
  mkdir -p "$out/corpus" "$out/profiles" "$out/crashes"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
  export LLVM_PROFILE_FILE="$out/profiles/fuzzing-%p.profraw"
  local log=$out/fuzzing.log
  (cd "$out" && "$fuzzer" -max_total_time="$seconds" -max_len=16384 -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
     -artifact_prefix="$out/crashes/" "$out/corpus" "$seeds") >"$log" 2>&1
  status=$?
  local runs rate corpus
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
  corpus=$(ls "$out/corpus" | wc -l)
  echo "libfuzzer: ${runs:-0} runs in $seconds s (${rate:-0} exec/s), corpus $((corpus + $(ls "$seeds" | wc -l))) inputs ($corpus new)"
  if [ "$status" != 0 ]; then
    echo "libfuzzer: FAILED (status $status):"
    grep -E 'ERROR|runtime error|invariant broken|SUMMARY|Test unit written' "$log" | head -8 | sed 's/^/  /'
    for crash in "$out"/crashes/*; do
      [ -e "$crash" ] && echo "  replay: KVMS_FUZZ_TRACE=1 $fuzzer $crash"
    done
    echo "  log: $log"
  fi
}

status=0
if [ "$seconds" = --coverage-only ]; then
  [ -d "$out/corpus" ] || { echo "run_libfuzzer: no corpus in $out (run me without --coverage-only first)" >&2; exit 2; }
else
  fuzz
fi

# Coverage of the corpus: each input once, with the profile written at exit (--coverage-only uses
# the profile the fuzzing run left, when there is one: replaying takes a while).
if [ "$seconds" != --coverage-only ] || [ ! -f "$out/corpus.profdata" ]; then
  rm -f "$out"/profiles/corpus-*.profraw
  export LLVM_PROFILE_FILE="$out/profiles/corpus-%p.profraw"
  (cd "$out" && "$fuzzer" -runs=0 -timeout=30 -rss_limit_mb=4096 "$out/corpus" "$seeds") >"$out/corpus-run.log" 2>&1 ||
    echo "libfuzzer: replaying the corpus failed: see $out/corpus-run.log"
  "$llvm_profdata" merge -sparse "$out"/profiles/corpus-*.profraw -o "$out/corpus.profdata" || exit 1
fi

# coverage PROFDATA [extra llvm-cov arguments...]: the line coverage of src/linux/ per file
# ($out/coverage.txt) and in total, with and without guest.cpp (the vCPU loop: it needs KVM, so only
# a guest run under a -DKVMS_FUZZ kvmserver reaches it).
coverage() {
  local profile=$1
  shift
  "$llvm_cov" report "$fuzzer" "$@" -instr-profile="$profile" "$root/src/linux/" >"$out/coverage.txt" 2>/dev/null
  with=$(awk '$1 == "TOTAL" { printf "%s of %s lines, %s", $8 - $9, $8, $10 }' "$out/coverage.txt")
  without=$("$llvm_cov" report "$fuzzer" "$@" -instr-profile="$profile" -ignore-filename-regex='linux/guest\.(cpp|hpp)$' \
    "$root/src/linux/" 2>/dev/null | awk '$1 == "TOTAL" { printf "%s of %s lines, %s", $8 - $9, $8, $10 }')
}
per_file() {
  awk 'NR > 2 && $1 != "TOTAL" && NF > 10 { printf "  %-20s %5s of %5s lines  %7s\n", $1, $8 - $9, $8, $10 }' "$out/coverage.txt"
}

coverage "$out/corpus.profdata"
echo "libfuzzer: coverage of src/linux/ by the corpus: $without without guest.cpp (the vCPU loop, which needs KVM); $with with it"
if [ -n "${FUZZ_GUEST_PROFILE:-}" ] && [ -f "$FUZZ_GUEST_PROFILE" ] &&
   "$llvm_profdata" merge -sparse "$out/corpus.profdata" "$FUZZ_GUEST_PROFILE" -o "$out/both.profdata"; then
  coverage "$out/both.profdata" -object "$build/kvmserver"
  echo "libfuzzer: coverage of src/linux/ by the corpus and the guest fuzzer's run (guest_fuzz.sh): $with (guest.cpp included), $without without guest.cpp; per file:"
else
  echo "libfuzzer: per file:"
fi
per_file
exit "$status"
