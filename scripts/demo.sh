#!/usr/bin/env bash
# The demo: real programs running inside a KVM guest under kvmserver, every system call handled by
# our host code. Runs through tools/with-kvm, which uses /dev/kvm directly when it works and the
# nested KVM machine otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
exec tools/with-kvm bash scripts/demo-inside.sh
