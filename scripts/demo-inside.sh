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

echo
echo "== a server with per-request isolation: tests/guests/servers/epoll_server keeps a global counter"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/kvmserver -t 2 -e --allow-listen=127.0.0.1:$port --stats run -- build/guests/servers/epoll_server "$port" &
server=$!
for i in $(seq 1 100); do
  /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null && break
  sleep 0.2
done
for i in 1 2 3 4 5; do
  printf 'GET /id/request%s -> ' "$i"
  /usr/bin/python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/id/request$i', timeout=30).read().decode(), end='')"
done
echo "(every request sees counter=1 and an empty prev: each connection got a fresh copy of the paused server)"
kill -INT "$server"
wait "$server" || true
