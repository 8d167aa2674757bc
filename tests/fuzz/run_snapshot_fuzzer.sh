#!/usr/bin/env bash
# Runs the snapshot file reader's fuzzer (tests/fuzz/snapshot_fuzzer.cpp) natively, under ASan and
# UBSan: first over every file of the corpus tests/fuzz/snapshot_corpus writes (more than 5,000
# truncated, extended, bit-flipped and hand-crafted snapshot files, each run once), then fuzzing for
# a fixed time from the valid file and the hand-crafted ones; then reports the line coverage of
# src/snapshot/format.cpp that both reached.
#
# Usage: tests/fuzz/run_snapshot_fuzzer.sh [BUILD_DIR [SECONDS]]
#   BUILD_DIR  a -DKVMS_FUZZ=ON build (clang) with the targets snapshot_fuzzer and snapshot_corpus,
#              default build-fuzz
#   SECONDS    fuzzing time, default 20 (0: only the corpus replay)
# Environment: FUZZ_OUT (default BUILD_DIR/snapshot-fuzz): the inputs the fuzzing found, crash
#   inputs, logs, coverage.
# Output: "snapshot fuzzer: ..." lines with the counts and timings; exit 1 when an input crashed,
#   leaked, timed out, threw anything but SnapshotError or broke the round trip (the input is kept:
#   its path and how to replay it are printed), 2 when the fuzzer cannot run.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${2:-20}
case $build in /*) ;; *) build=$PWD/$build ;; esac
fuzzer=$build/tests/fuzz/snapshot_fuzzer
corpus_writer=$build/tests/fuzz/snapshot_corpus
for tool in "$fuzzer" "$corpus_writer"; do
  [ -x "$tool" ] || { echo "run_snapshot_fuzzer: no $tool (tests/fuzz/build.sh builds it)" >&2; exit 2; }
done
llvm_profdata=$(command -v llvm-profdata-14 || command -v llvm-profdata)
llvm_cov=$(command -v llvm-cov-14 || command -v llvm-cov)

out=${FUZZ_OUT:-$build/snapshot-fuzz}
rm -rf "$out" && mkdir -p "$out/corpus" "$out/crashes" "$out/profiles"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/kvms-snapshot-corpus.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/all" "$scratch/seeds"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
# The corpus writer is instrumented too: its profile is of no use.
all=$(LLVM_PROFILE_FILE=/dev/null "$corpus_writer" "$scratch/all") &&
  seeds=$(LLVM_PROFILE_FILE=/dev/null "$corpus_writer" "$scratch/seeds" --seeds) ||
  { echo "run_snapshot_fuzzer: snapshot_corpus failed" >&2; exit 2; }

status=0
# failed NAME LOG: the finding, and how to replay it.
failed() {
  status=1
  echo "snapshot fuzzer: $1 FAILED:"
  grep -E 'ERROR|runtime error|invariant broken|terminate called|SUMMARY|Test unit written' "$2" | head -8 | sed 's/^/  /'
  for crash in "$out"/crashes/*; do
    [ -e "$crash" ] && echo "  replay: $fuzzer $crash"
  done
  echo "  log: $2"
}

# Each file of the corpus once (-runs=0: no mutation). -max_len above the largest file, or libFuzzer
# would cut the files short.
t=$(date +%s)
export LLVM_PROFILE_FILE="$out/profiles/replay-%p.profraw"
"$fuzzer" -runs=0 -max_len=1048576 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/crashes/" \
  "$scratch/all" >"$out/replay.log" 2>&1 || failed "replaying the corpus" "$out/replay.log"
edges=$(grep -o 'INITED cov: [0-9]*' "$out/replay.log" | grep -o '[0-9]*$')
echo "snapshot fuzzer: replayed $all corpus files ($(du -sm "$scratch/all" | cut -f1) MB) in $(($(date +%s) - t)) s, ${edges:-?} coverage points"
rm -rf "$scratch/all"

# Fuzzing: new inputs go to $out/corpus, the seeds stay as they are.
if [ "$seconds" != 0 ] && [ "$status" = 0 ]; then
  export LLVM_PROFILE_FILE="$out/profiles/fuzzing-%p.profraw"
  "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/crashes/" "$out/corpus" "$scratch/seeds" >"$out/fuzzing.log" 2>&1 ||
    failed "fuzzing" "$out/fuzzing.log"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/fuzzing.log" | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$out/fuzzing.log" | grep -o '[0-9]*$')
  echo "snapshot fuzzer: ${runs:-0} runs in $seconds s (${rate:-0} exec/s) from $seeds seeds, $(ls "$out/corpus" | wc -l) new inputs"
fi

# Line coverage of format.cpp (the reader and its checks) by the replay and the fuzzing.
if [ -n "$llvm_profdata" ] && [ -n "$llvm_cov" ] && ls "$out"/profiles/*.profraw >/dev/null 2>&1 &&
   "$llvm_profdata" merge -sparse "$out"/profiles/*.profraw -o "$out/snapshot.profdata" 2>/dev/null; then
  "$llvm_cov" report "$fuzzer" -instr-profile="$out/snapshot.profdata" "$root/src/snapshot/format.cpp" >"$out/coverage.txt" 2>/dev/null
  awk '$1 == "TOTAL" { printf "snapshot fuzzer: coverage of src/snapshot/format.cpp: %s of %s lines, %s\n", $8 - $9, $8, $10 }' "$out/coverage.txt"
fi
[ "$status" = 0 ] && echo "snapshot fuzzer: no findings"
exit "$status"
