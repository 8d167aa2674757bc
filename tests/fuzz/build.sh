#!/usr/bin/env bash
# Builds build-fuzz/ (or $1): clang, -DKVMS_FUZZ=ON (kvmserver with ASan, UBSan and source-based
# coverage, for tests/fuzz/guest_fuzz.sh, the in-process fuzzer tests/fuzz/syscall_fuzzer for
# run_libfuzzer.sh, and the snapshot reader's fuzzer and corpus writer for run_snapshot_fuzzer.sh),
# only the targets the fuzzing needs (the guest programs come from build/).
# libFuzzer (clang's runtime, libclang-rt-14-dev) and source-based coverage need clang.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVMS_FUZZ=ON >/dev/null
cmake --build "$dir" -j"$(nproc)" --target kvmserver syscall_fuzzer snapshot_fuzzer snapshot_corpus
