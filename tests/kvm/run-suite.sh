#!/usr/bin/env bash
# Runs every KVM test (build/kvm-tests) where /dev/kvm works; tools/with-kvm puts us there.
set -u
build=${1:?usage: run-suite.sh BUILD_DIR}
if [ ! -c /dev/kvm ]; then
  echo "run-suite: no /dev/kvm here: run me through tools/with-kvm" >&2
  exit 125
fi
start=$(date +%s%N)
ctest --test-dir "$build/kvm-tests" --output-on-failure -j "${KVM_TEST_JOBS:-2}" --timeout 900
status=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "kvm suite: $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s on kernel $(uname -r)"
exit $status
