#!/bin/bash
# Self-test of tools/with-kvm in nested mode (QEMU TCG machine).  Boots the
# machine 3 times (~5 s each here) and checks the contract: stdout/stderr
# separation and byte-exactness, argv/env/cwd passthrough, exit status,
# writable project tree, private /tmp, /dev/kvm, loopback, time-out -> 124,
# a machine without /dev/kvm -> 125.  Ends with "N passed, M failed".
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=${here%/*}
wk=$here/with-kvm
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
one_line() { # FILE REGEX: FILE is exactly one line matching REGEX
    [ "$(wc -l <"$1")" = 1 ] && grep -q "$2" "$1"
}
check() { # NAME COMMAND...
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

mkdir -p "$root/.cache"
t=$(mktemp -d "$root/.cache/with-kvm-test.XXXXXX")
hostmark=/tmp/with-kvm-test-host.$$
trap 'rm -rf "$t" "$hostmark" /tmp/with-kvm-test-guest.$$' EXIT
touch "$hostmark"

"$wk" --setup >/dev/null || { echo "with-kvm --setup failed"; echo "0 passed, 1 failed"; exit 1; }

# ---- boot 1: most of the contract in one machine
mkdir -p "$t/sub dir"
head -c 300000 /dev/urandom >"$t/blob.out"
head -c 200000 /dev/urandom >"$t/blob.err"
{ printf 'a\0b'; cat "$t/blob.out"; } >"$t/want.out"
{ printf 'e\0rr\r\n'; cat "$t/blob.err"; } >"$t/want.err"
cat >"$t/inside.sh" <<'EOF'
t=$1; shift
r=$t/results; : >"$r"
say() { echo "$1" >>"$r"; }
printf 'a\0b'; cat "$t/blob.out"
printf 'e\0rr\r\n' >&2; cat "$t/blob.err" >&2
printf '<%s>' "$@" >"$t/argv.txt"
pwd >"$t/pwd.txt"
printf '%s' "$WKT_VAR" >"$t/env.txt"
echo written-inside >"$t/written.txt"
[ -e "$WKT_HOSTMARK" ] && say "tmp-not-private" || say "tmp-private"
touch "/tmp/with-kvm-test-guest.$WKT_PID" && say "tmp-writable"
[ -c /dev/kvm ] && { exec 3<>/dev/kvm; } 2>/dev/null && say "dev-kvm"
exec 3>&-
grep -q 'QEMU' /proc/cpuinfo && say "in-qemu"
[ "$(id -u)" = 0 ] && say "root"
busybox nc -l -p 34567 >"$t/nc.txt" &
for i in $(seq 100); do
    { echo over-loopback >/dev/tcp/127.0.0.1/34567; } 2>/dev/null && break
    sleep 0.1
done
wait
grep -qx over-loopback "$t/nc.txt" && say "loopback"
exit 7
EOF
WKT_VAR=$'value with spaces\nand "quotes" $x' WKT_HOSTMARK=$hostmark WKT_PID=$$ \
    bash -c 'cd "$1/sub dir" && exec "$2" --nested bash "$1/inside.sh" "$1" "a b" "" "$(printf "c\nd")"' \
    _ "$t" "$wk" >"$t/got.out" 2>"$t/got.err"
rc=$?
check "exit status 7 passes through" [ "$rc" = 7 ]
check "stdout byte-exact (NUL, 300 kB binary)" cmp -s "$t/got.out" "$t/want.out"
check "stderr byte-exact and separate (NUL, CR, 200 kB binary)" cmp -s "$t/got.err" "$t/want.err"
check "argv passes through" [ "$(cat "$t/argv.txt" 2>/dev/null)" = "$(printf '<%s>' "a b" "" "$(printf 'c\nd')")" ]
check "same working directory" [ "$(cat "$t/pwd.txt" 2>/dev/null)" = "$t/sub dir" ]
check "environment passes through" [ "$(cat "$t/env.txt" 2>/dev/null)" = $'value with spaces\nand "quotes" $x' ]
check "project tree writable" [ "$(cat "$t/written.txt" 2>/dev/null)" = written-inside ]
for w in in-qemu tmp-private tmp-writable dev-kvm root loopback; do
    check "inside: $w" grep -qx "$w" "$t/results"
done
check "guest /tmp does not leak to the host" [ ! -e /tmp/with-kvm-test-guest.$$ ]

# ---- boot 2: time limit kills the machine -> 124 (probe failure forces nesting)
s=$SECONDS
WITH_KVM_PROBE=false "$wk" --timeout 20 sh -c 'echo started; sleep 600' >"$t/to.out" 2>"$t/to.err"
rc=$?
d=$((SECONDS - s))
check "time-out exits 124 (got $rc)" [ "$rc" = 124 ]
check "time-out within time (${d}s)" [ "$d" -lt 50 ]
check "time-out message is one 'with-kvm:' line" one_line "$t/to.err" '^with-kvm: '

check "output before time-out kept" grep -qx started "$t/to.out"

# ---- boot 3: a machine whose CPU has no SVM has no /dev/kvm -> 125
WITH_KVM_NESTED=1 WITH_KVM_CPU=qemu64,-svm "$wk" true >"$t/nk.out" 2>"$t/nk.err"
rc=$?
check "no /dev/kvm inside exits 125 (got $rc)" [ "$rc" = 125 ]
check "no /dev/kvm message is one 'with-kvm:' line" one_line "$t/nk.err" '^with-kvm: .*kvm'


# ---- no boot: usage errors, and the direct path when the host has KVM
"$wk" >/dev/null 2>&1
check "no command -> 125" [ $? = 125 ]
# Which path the host takes depends on whether its /dev/kvm runs our kind of guest (the built-in
# probe); either way status and output come back, and WITH_KVM_MACHINE says where it ran.
out=$("$wk" sh -c 'echo "$WITH_KVM_MACHINE"; exit 5')
rc=$?
if [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null && [ "$out" = host ]; then
    check "direct exec with host KVM (status + output)" [ "$rc" = 5 ]
else
    check "no usable host KVM: runs nested (status + output: $rc/$out)" [ "$rc/$out" = 5/nested ]
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
