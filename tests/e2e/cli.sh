#!/usr/bin/env bash
# The command line as a user meets it: statuses and one-line errors for bad input, --help/--version,
# --config, --timeout, --stats, --verbose denials, environment flags; the guest's own /proc, /sys and
# /dev (never the host's, whatever is granted); and the start-up check that refuses a machine whose
# /dev/kvm cannot work (missing, no permission, not KVM: exit 125, one line). The last two need root
# (mount namespaces, mknod), as in the nested machine; without it they are skipped.
set -u
KVMSERVER=${1:-${KVMSERVER:-build/kvmserver}}
GUESTS=${2:-${GUESTS:-build/guests}}
KVMSERVER=$(realpath "$KVMSERVER")
GUESTS=$(realpath "$GUESTS")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
e2e_init cli
work=$tmp

printf 'not an elf\n' > "$work/text"; chmod +x "$work/text"
head -c 40 /bin/busybox > "$work/truncated"; chmod +x "$work/truncated"
printf 'secret\n' > "$work/data.txt"
cat > "$work/config.toml" <<TOML
allow-read = ["$work"]
timeout = 30
TOML
printf 'bogus-key = 1\n' > "$work/bad.toml"
# /bin/true naming a dynamic loader that does not exist (same length, so the headers stay valid)
python3 -c 'import sys; d = open("/bin/true", "rb").read(); open(sys.argv[1], "wb").write(d.replace(b"/lib64/ld-linux-x86-64.so.2", b"/lib64/ld-linux-x86-64.so.9"))' "$work/no-interp"
chmod +x "$work/no-interp"

check version 0 "" -- "$KVMSERVER" --version
[[ $LAST_OUT == kvmserver\ * ]] || fail version-text "'$LAST_OUT'"
check help 0 "" -- "$KVMSERVER" --help
check bad-flag 2 "^kvmserver: " -- "$KVMSERVER" --no-such-flag run /bin/true
check bad-timeout 2 "^kvmserver: " -- "$KVMSERVER" --timeout=-1 run /bin/busybox true
check no-program 2 "^kvmserver: " -- "$KVMSERVER" run
check missing-file 127 "^kvmserver: .*(No such file|not found)" -- "$KVMSERVER" run /nonexistent/program
check missing-in-path 127 "^kvmserver: .*not found" -- "$KVMSERVER" run no-such-program-anywhere
check not-elf 126 "^kvmserver: .*text" -- "$KVMSERVER" run "$work/text"
check truncated-elf 126 "^kvmserver: .*truncated" -- "$KVMSERVER" run "$work/truncated"
check dynamic 0 "" -- "$KVMSERVER" run /bin/echo dynamic linking
[ "$LAST_OUT" = "dynamic linking" ] || fail dynamic-output "'$LAST_OUT'"
check missing-interpreter 127 "^kvmserver: .*interpreter /lib64/ld-linux-x86-64.so.9: No such file" -- "$KVMSERVER" run "$work/no-interp"
check exit-status 3 "" -- "$KVMSERVER" run /bin/busybox sh -c 'exit 3'
check timeout 124 "^kvmserver: .*timed out" -- "$KVMSERVER" --timeout=1.5 run "$GUESTS/hostile/infinite_loop"
check timeout-in-syscall 124 "^kvmserver: .*timed out" -- "$KVMSERVER" --timeout=1 run /bin/busybox sleep 30
ONE_LINE=0 check denied-read 1 "denied: $work/data.txt \(allow with --allow-read=$work/data.txt\)" -- "$KVMSERVER" -v run /bin/busybox cat "$work/data.txt"
check config-grants 0 "" -- "$KVMSERVER" --config "$work/config.toml" run /bin/busybox cat "$work/data.txt"
[ "$LAST_OUT" = secret ] || fail config-grants-output "'$LAST_OUT'"
check config-unknown-key 2 "bogus-key" -- "$KVMSERVER" --config "$work/bad.toml" run /bin/busybox true
# kvmserver.toml in the working directory is the config file when --config is not given.
mkdir -p "$work/cfgdir"
cp "$work/config.toml" "$work/cfgdir/kvmserver.toml"
check config-implicit 0 "" -- env -C "$work/cfgdir" "$KVMSERVER" run /bin/busybox cat "$work/data.txt"
[ "$LAST_OUT" = secret ] || fail config-implicit-output "'$LAST_OUT'"
check print-config 0 "" -- env -C "$work/cfgdir" "$KVMSERVER" --print-config -t 0 run /bin/busybox true
out_has_line() { grep -qE "$2" <<<"$LAST_OUT" || fail "$1" "no line matching '$2' in: $(tr '\n' '|' <<<"$LAST_OUT")"; }
out_has_line print-config-file "^# config file: $work/cfgdir/kvmserver.toml$"
out_has_line print-config-threads "^threads = $(nproc) +# command line \(0: one per CPU\)$"
out_has_line print-config-grant "^allow-read = \[\"$work\"\]"
# doctor: in a machine where KVM works it says so, with the probe guest's figures.
check doctor 0 "" -- "$KVMSERVER" doctor
out_has_line doctor-probe "^  KVM +/dev/kvm: API 12, probe guest reached ring 0"
out_has_line doctor-verdict "^kvmserver can run here\.$"
check stats 0 "stats: vm exits: syscall=[0-9]+" -- "$KVMSERVER" --stats run /bin/busybox true
check env-set 0 "" -- "$KVMSERVER" --env=GREETING=hi run /bin/busybox sh -c 'echo $GREETING'
[ "$LAST_OUT" = hi ] || fail env-set-output "'$LAST_OUT'"
check env-hidden 0 "" -- env SECRET_VAR=x "$KVMSERVER" run /bin/busybox sh -c 'echo "[$SECRET_VAR]"'
[ "$LAST_OUT" = "[]" ] || fail env-hidden-output "'$LAST_OUT'"
check env-allowed 0 "" -- env SECRET_VAR=x "$KVMSERVER" --allow-env=SECRET_VAR run /bin/busybox sh -c 'echo "[$SECRET_VAR]"'
[ "$LAST_OUT" = "[x]" ] || fail env-allowed-output "'$LAST_OUT'"
check bad-listen-entry 2 "^kvmserver: " -- "$KVMSERVER" --allow-listen=not:a:port run /bin/busybox true
expect_out() {  # NAME EXPECTED: LAST_OUT must be EXPECTED
  [ "$LAST_OUT" = "$2" ] || fail "$1-output" "'$(tr '\n' '|' <<<"$LAST_OUT")', expected '$(tr '\n' '|' <<<"$2")'"
}
out_has() {  # NAME REGEX [absent]: LAST_OUT must (not) match REGEX
  local found=0
  grep -Eq -- "$2" <<<"$LAST_OUT" && found=1
  [ "$found" = "$([ "${3:-}" = absent ] && echo 0 || echo 1)" ] ||
    fail "$1-output" "/$2/ ${3:-present} in '$(head -c 300 <<<"$LAST_OUT" | tr '\n' '|')'"
}

# ---- /proc, /sys and /dev are the guest's: made up from its state, never the host's
check grant-proc-refused 2 "^kvmserver: --allow-read: /proc: the guest's /proc and /sys are made up by kvmserver" -- "$KVMSERVER" --allow-read=/proc run /bin/busybox true
check grant-sys-refused 2 "^kvmserver: --allow-write: /sys/kernel: " -- "$KVMSERVER" --allow-write=/sys/kernel run /bin/busybox true
check grant-dev-refused 2 "^kvmserver: --allow-read: /dev/kvm: the guest's /dev holds only the devices kvmserver emulates" -- "$KVMSERVER" --allow-read=/dev/kvm run /bin/busybox true
check volume-proc-refused 2 "^kvmserver: --volume: /proc: " -- "$KVMSERVER" --volume=/proc:/hostproc run /bin/busybox true
printf 'allow-read = ["/proc/1"]\n' > "$work/proc.toml"
check config-proc-refused 2 "proc.toml:1: allow-read: /proc/1: " -- "$KVMSERVER" --config "$work/proc.toml" run /bin/busybox true
# /proc/self/environ is the environment the guest started with, not kvmserver's.
check environ-is-the-guests 0 "" -- env KVMS_SECRET=host-secret "$KVMSERVER" --allow-read --env=GUEST_VAR=guest run /bin/busybox sh -c 'tr "\000" "\n" < /proc/self/environ'
expect_out environ-is-the-guests GUEST_VAR=guest
check environ-allow-all 0 "" -- env KVMS_SECRET=host-secret "$KVMSERVER" -A --env=KVMS_SECRET=guest-value run /bin/busybox sh -c 'tr "\000" "\n" < /proc/self/environ'
out_has environ-allow-all "^KVMS_SECRET=guest-value$"
out_has environ-allow-all host-secret absent
check proc-1-absent 1 "No such file or directory" -- "$KVMSERVER" -A run /bin/busybox cat /proc/1/cmdline
check proc-mounts-absent 1 "No such file or directory" -- "$KVMSERVER" -A run /bin/busybox cat /proc/self/mounts
check proc-self-lists 0 "" -- "$KVMSERVER" run /bin/busybox ls /proc/self
expect_out proc-self-lists "$(printf '%s\n' cmdline comm cwd environ exe fd fdinfo limits maps root stat statm status task)"
check dev-lists-emulated 0 "" -- "$KVMSERVER" -A run /bin/busybox ls /dev
expect_out dev-lists-emulated "$(printf '%s\n' fd full null random stderr stdin stdout urandom zero)"
check dev-kvm-absent 1 "No such file or directory" -- "$KVMSERVER" -A run /bin/busybox cat /dev/kvm
check dev-shm-absent 1 "No such file or directory" -- "$KVMSERVER" -A run /bin/busybox ls /dev/shm
check dev-tty-not-granted 1 "No such file or directory" -- "$KVMSERVER" -A run /bin/busybox cat /dev/tty
check devices-work 0 "" -- "$KVMSERVER" run /bin/busybox sh -c 'echo gone > /dev/null && head -c 32 /dev/urandom | wc -c && head -c 2 /dev/zero | od -An -tx1 && readlink /dev/stdin'
expect_out devices-work "$(printf '32\n 00 00\n/proc/self/fd/0')"
if [ "$(id -u)" = 0 ]; then
  # A procfs mounted inside a grant (a chroot's /proc) and a device node under a grant stay out of reach.
  mkdir -p "$work/chroot/proc" "$work/devs"
  mknod "$work/devs/kvm" c 10 232
  check grant-inner-procfs 1 "Permission denied" -- unshare -m sh -c 'mount -t proc proc "$1/proc" && exec "$0" --allow-read="$1" run /bin/busybox cat "$1/proc/self/environ"' "$KVMSERVER" "$work/chroot"
  check grant-device-node 1 "Permission denied" -- "$KVMSERVER" --allow-read="$work/devs" run /bin/busybox cat "$work/devs/kvm"
  # /dev/tty when granted is kvmserver's controlling terminal (script(1) gives it one).
  LAST_OUT=$(timeout 60 script -qec "$KVMSERVER --allow-write=/dev/tty run /bin/busybox sh -c 'ls /dev | grep -x tty && echo hello-tty > /dev/tty'" /dev/null 2>&1)
  if [ $? = 0 ] && [ "$(grep -c -e '^tty' -e '^hello-tty' <<<"$(tr -d '\r' <<<"$LAST_OUT")")" = 2 ]; then pass dev-tty-granted; else fail dev-tty-granted "'$(tr '\r\n' '||' <<<"$LAST_OUT")'"; fi
else
  skip "grant-inner-procfs grant-device-node dev-tty-granted" "need root"
fi

# ---- `run` without server flags runs the program as natively: a program that waits for a
# connection is not paused into a server ("ready:"), it takes the connection itself and kvmserver
# exits with its status (issue 12). busybox nc -l blocks in accept (on [::], dual-stack); a client
# sends one line to 127.0.0.1.
port=$(free_port)
"$KVMSERVER" --allow-listen="[::]:$port" run /bin/busybox sh -c "busybox nc -l -p $port; exit 7" \
  >"$work/listen.out" 2>"$work/listen.err" </dev/null &
listener=$!
sent=0
for _ in $(seq 100); do
  if python3 -c 'import socket, sys; s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1); s.sendall(b"one line\n"); s.close()' "$port" 2>/dev/null; then
    sent=1
    break
  fi
  sleep 0.2
done
timeout 30 tail --pid="$listener" -f /dev/null
kill -KILL "$listener" 2>/dev/null  # still running (a server waiting for more): fail, never hang
wait "$listener"
status=$?
if [ "$sent" = 1 ] && [ "$status" = 7 ] && [ "$(cat "$work/listen.out")" = "one line" ] && ! grep -q "ready:" "$work/listen.err"; then
  pass plain-run-is-not-a-server
else
  fail plain-run-is-not-a-server "sent=$sent status=$status stdout=$(tail_of "$work/listen.out") stderr=$(tail_of "$work/listen.err")"
fi

# ---- refuse what cannot work, up front: exit 125 and one line naming cause and remedy
check host-check-stats 0 "stats: host check: vms=1 vcpus=1 runs=1 exits=1 " -- "$KVMSERVER" --stats run /bin/busybox true
if [ "$(id -u)" = 0 ]; then
  : >"$work/empty"
  mknod "$work/kvm-0600" c 10 232 && chmod 0600 "$work/kvm-0600"
  mknod "$work/kvm-0660" c 10 232 && chgrp users "$work/kvm-0660" && chmod 0660 "$work/kvm-0660"
  nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  check kvm-missing 125 "^kvmserver: /dev/kvm does not exist; load the KVM module" -- unshare -m sh -c 'mount -t tmpfs none /dev && exec "$0" run /bin/busybox true' "$KVMSERVER"
  check kvm-permission 125 "^kvmserver: cannot open /dev/kvm: permission denied \(mode 0600, owner root:root\); ask an administrator" -- unshare -m sh -c 'mount --bind "$1" /dev/kvm && shift && exec "$@"' "$KVMSERVER" "$work/kvm-0600" "${nobody[@]}" "$KVMSERVER" run /bin/busybox true
  check kvm-permission-group 125 "^kvmserver: cannot open /dev/kvm: permission denied; add yourself to the users group" -- unshare -m sh -c 'mount --bind "$1" /dev/kvm && shift && exec "$@"' "$KVMSERVER" "$work/kvm-0660" "${nobody[@]}" "$KVMSERVER" run /bin/busybox true
  check kvm-not-kvm 125 "^kvmserver: /dev/kvm is not a KVM device \(KVM_GET_API_VERSION: Inappropriate ioctl for device\)" -- unshare -m sh -c 'mount --bind /dev/null /dev/kvm && exec "$0" run /bin/busybox true' "$KVMSERVER"
  check kvm-regular-file 125 "^kvmserver: /dev/kvm is not a KVM device \(not a character device\)" -- unshare -m sh -c 'mount --bind "$1" /dev/kvm && exec "$0" run /bin/busybox true' "$KVMSERVER" "$work/empty"
  check kvm-server-missing 125 "^kvmserver: /dev/kvm does not exist" -- unshare -m sh -c 'mount -t tmpfs none /dev && exec "$0" -t 2 -e --allow-listen=127.0.0.1:0 run /bin/busybox true' "$KVMSERVER"
else
  skip "kvm-missing kvm-permission kvm-permission-group kvm-not-kvm kvm-regular-file kvm-server-missing" "need root"
fi
e2e_summary
