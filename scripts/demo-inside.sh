#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${WITH_KVM_MACHINE:-}" = nested ]; then
  echo "== no usable /dev/kvm on this machine: running inside the nested KVM machine (QEMU TCG, ~15x slower)"
else
  echo "== using this machine's /dev/kvm"
fi
demo=$(mktemp -d)
printf 'hello from the host\n' > "$demo/hello.txt"
run() { echo "\$ $*"; "$@"; echo; }
run build/kvmserver --allow-read="$demo" run -- /bin/busybox sha256sum "$demo/hello.txt"
echo "natively:"; sha256sum "$demo/hello.txt"; echo
run build/kvmserver --allow-read="$demo" --stats run -- /bin/busybox wc "$demo/hello.txt"
echo "\$ build/kvmserver run -- /bin/busybox cat /etc/shadow   # not granted"
build/kvmserver run -- /bin/busybox cat /etc/shadow || echo "(exit status $?)"
