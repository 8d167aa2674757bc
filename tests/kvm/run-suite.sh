#!/usr/bin/env bash
# Runs the KVM tests (build/kvm-tests) where /dev/kvm works; tools/with-kvm puts us there.
# Usage: run-suite.sh BUILD_DIR [-R REGEX | -E REGEX]  (ctest's selection of tests by name)
set -u
build=${1:?usage: run-suite.sh BUILD_DIR [-R REGEX | -E REGEX]}
shift
if [ ! -c /dev/kvm ]; then
  echo "run-suite: no /dev/kvm here: run me through tools/with-kvm" >&2
  exit 125
fi
start=$(date +%s%N)
ctest --test-dir "$build/kvm-tests" --output-on-failure -j "${KVM_TEST_JOBS:-2}" --timeout 900 "$@"
status=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "kvm suite${1:+ ($*)}: $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s on kernel $(uname -r)"
exit $status
