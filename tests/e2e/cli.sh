#!/usr/bin/env bash
# The command line as a user meets it: statuses and one-line errors for bad input, --help/--version,
# --config, --timeout, --stats, --verbose denials, environment flags.
set -u
KVMSERVER=${1:-${KVMSERVER:-build/kvmserver}}
GUESTS=${2:-${GUESTS:-build/guests}}
KVMSERVER=$(realpath "$KVMSERVER")
GUESTS=$(realpath "$GUESTS")
passed=0 failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() {  # NAME EXPECTED_STATUS STDERR_REGEX(or "") -- COMMAND...
  local name=$1 want=$2 pattern=$3
  shift 4
  local out err status
  out=$(timeout 60 "$@" 2>"$work/err")
  status=$?
  err=$(cat "$work/err")
  local why=""
  [ "$status" = "$want" ] || why="status $status, expected $want"
  if [ -n "$pattern" ] && ! grep -Eq -- "$pattern" <<<"$err"; then why="${why:+$why; }stderr does not match /$pattern/: $(head -c 300 <<<"$err" | tr '\n' '|')"; fi
  if [ "$want" != 0 ] && [ -n "$pattern" ] && [ "${ONE_LINE:-1}" = 1 ] && [ "$(grep -c . <<<"$err")" -gt 1 ]; then why="${why:+$why; }more than one stderr line: $(tr '\n' '|' <<<"$err")"; fi
  if [ -z "$why" ]; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name: $why"; failed=$((failed + 1)); fi
  LAST_OUT=$out
}

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
[[ $LAST_OUT == kvmserver\ * ]] || { echo "FAIL version-text: '$LAST_OUT'"; failed=$((failed + 1)); }
check help 0 "" -- "$KVMSERVER" --help
check bad-flag 2 "^kvmserver: " -- "$KVMSERVER" --no-such-flag run /bin/true
check bad-timeout 2 "^kvmserver: " -- "$KVMSERVER" --timeout=-1 run /bin/busybox true
check no-program 2 "^kvmserver: " -- "$KVMSERVER" run
check missing-file 127 "^kvmserver: .*(No such file|not found)" -- "$KVMSERVER" run /nonexistent/program
check missing-in-path 127 "^kvmserver: .*not found" -- "$KVMSERVER" run no-such-program-anywhere
check not-elf 126 "^kvmserver: .*text" -- "$KVMSERVER" run "$work/text"
check truncated-elf 126 "^kvmserver: .*truncated" -- "$KVMSERVER" run "$work/truncated"
check dynamic 0 "" -- "$KVMSERVER" run /bin/echo dynamic linking
[ "$LAST_OUT" = "dynamic linking" ] || { echo "FAIL dynamic-output: '$LAST_OUT'"; failed=$((failed + 1)); }
check missing-interpreter 127 "^kvmserver: .*interpreter /lib64/ld-linux-x86-64.so.9: No such file" -- "$KVMSERVER" run "$work/no-interp"
check exit-status 3 "" -- "$KVMSERVER" run /bin/busybox sh -c 'exit 3'
check timeout 124 "^kvmserver: .*timed out" -- "$KVMSERVER" --timeout=1.5 run "$GUESTS/hostile/infinite_loop"
check timeout-in-syscall 124 "^kvmserver: .*timed out" -- "$KVMSERVER" --timeout=1 run /bin/busybox sleep 30
ONE_LINE=0 check denied-read 1 "denied: $work/data.txt \(allow with --allow-read=$work/data.txt\)" -- "$KVMSERVER" -v run /bin/busybox cat "$work/data.txt"
check config-grants 0 "" -- "$KVMSERVER" --config "$work/config.toml" run /bin/busybox cat "$work/data.txt"
[ "$LAST_OUT" = secret ] || { echo "FAIL config-grants-output: '$LAST_OUT'"; failed=$((failed + 1)); }
check config-unknown-key 2 "bogus-key" -- "$KVMSERVER" --config "$work/bad.toml" run /bin/busybox true
check stats 0 "stats: vm exits: syscall=[0-9]+" -- "$KVMSERVER" --stats run /bin/busybox true
check env-set 0 "" -- "$KVMSERVER" --env=GREETING=hi run /bin/busybox sh -c 'echo $GREETING'
[ "$LAST_OUT" = hi ] || { echo "FAIL env-set-output: '$LAST_OUT'"; failed=$((failed + 1)); }
check env-hidden 0 "" -- env SECRET_VAR=x "$KVMSERVER" run /bin/busybox sh -c 'echo "[$SECRET_VAR]"'
[ "$LAST_OUT" = "[]" ] || { echo "FAIL env-hidden-output: '$LAST_OUT'"; failed=$((failed + 1)); }
check env-allowed 0 "" -- env SECRET_VAR=x "$KVMSERVER" --allow-env=SECRET_VAR run /bin/busybox sh -c 'echo "[$SECRET_VAR]"'
[ "$LAST_OUT" = "[x]" ] || { echo "FAIL env-allowed-output: '$LAST_OUT'"; failed=$((failed + 1)); }
check bad-listen-entry 2 "^kvmserver: " -- "$KVMSERVER" --allow-listen=not:a:port run /bin/busybox true
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
