#!/usr/bin/env bash
# kvmserver's own sandbox, from outside, as root in the nested machine (it changes nothing there:
# other scripts run at the same time):
#   server     a -t 1 -e server (jailed by default; --seccomp): every thread of kvmserver and of its
#              two supervisors under seccomp (Seccomp: 2), NoNewPrivs 1, no capabilities; its namespaces
#              differ from ours (but the network: it listens on the host's); its root holds only
#              what it should (no /etc/shadow, /home, the project's sources...; /dev only kvm,
#              null, zero, full, random, urandom; a /proc with one process); the guest still
#              serves, writes its granted directory, and requests stay isolated; SIGINT stops it (0)
#   run        jailed run mode: exit statuses and a death by SIGTERM sent to the outer process pass
#              through unchanged, stdin/stdout pass through, grants work (a read grant, a write
#              grant of a new file, a path through a symlink), ungranted files stay unreadable, a
#              network namespace of its own without network grants
#   denied     a host call taken off the filter (KVMS_SECCOMP_DENY, for tests only) stops kvmserver
#              with one line naming the call and the thread, exit 125: in run mode and in a worker
#   refused    user namespaces disabled (in a user namespace of our own whose limit is 0): --jail
#              fails with one line and 125, the default falls back (-v says so) and serves
#              (seccomp off: the default when serving)
#   unprivileged  as nobody: jailed with its own uid mapped; refused: 125
#
# Usage: tests/e2e/jail.sh [KVMSERVER [GUESTS]]
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
KVMSERVER=$(realpath "${1:-${KVMSERVER:-$root/build/kvmserver}}")
GUESTS=$(realpath "${2:-${GUESTS:-$root/build/guests}}")
BUSYBOX=${BUSYBOX:-/bin/busybox}
SERVER_TIMEOUT=${SERVER_TIMEOUT:-600}
. "$here/lib.sh"

if [ "$(id -u)" != 0 ]; then
  echo "jail.sh: run me as root (tools/with-kvm does): the failure cases change sysctls" >&2
  exit 2
fi
e2e_init jail
chmod 755 "$tmp"  # the unprivileged cases run as nobody
# Nothing here changes the machine (other scripts of the suite run at the same time): user
# namespaces are disabled inside a user namespace of our own, and nobody gets a /dev/kvm it may
# open in a mount namespace of its own.
# NO_USERNS COMMAND... : COMMAND where creating a user namespace fails as where the administrator
# disabled them (max_user_namespaces 0: what a container may impose).
NO_USERNS=(unshare --user --map-root-user sh -c 'echo 0 >/proc/sys/user/max_user_namespaces && exec "$@"' sh)
# NOBODY COMMAND... : COMMAND as nobody, with a /dev/kvm of mode 0666.
cp -a /dev/kvm "$tmp/kvm" && chmod 666 "$tmp/kvm"
NOBODY=(unshare --mount sh -c 'mount --bind "$0" /dev/kvm && exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$@"' "$tmp/kvm")

# section NAME : prints how long the previous section took (CI shows where the time goes).
section_start=$(now_ms) section_name=""
section() {
  [ -z "$section_name" ] || info "$section_name: $(secs $(($(now_ms) - section_start))) s"
  section_name=$1 section_start=$(now_ms)
}

mkdir -p "$tmp/data" "$tmp/out" "$tmp/real"
echo granted >"$tmp/data/granted.txt"
echo secret >"$tmp/secret.txt"
echo behind >"$tmp/real/file.txt"
ln -s real "$tmp/link"

# The process ids of a jailed kvmserver started as $1: the outer one, the one in between, and
# kvmserver proper (PID 1 of its namespace). Sets OUTER MIDDLE INNER.
jail_pids() {
  OUTER=$1
  MIDDLE=$(pgrep -P "$OUTER" | head -n1)
  INNER=$([ -n "$MIDDLE" ] && pgrep -P "$MIDDLE" | head -n1)
}

# field DIR NAME : NAME's value in DIR/status (DIR: /proc/PID or /proc/PID/task/TID).
field() { sed -n "s/^$2:[[:space:]]*//p" "$1/status"; }

# Every thread of PID: Seccomp 2 (filter), NoNewPrivs 1, no effective/permitted/bounding capability.
hardened() { # CASE PID
  local c=$1 pid=$2 t bad=""
  for t in /proc/"$pid"/task/*; do
    [ "$(field "$t" Seccomp)" = 2 ] || bad+=" $(cat "$t/comm"): Seccomp=$(field "$t" Seccomp)"
    [ "$(field "$t" NoNewPrivs)" = 1 ] || bad+=" $(cat "$t/comm"): NoNewPrivs=$(field "$t" NoNewPrivs)"
    for cap in CapEff CapPrm CapBnd CapAmb; do
      [ "$(field "$t" $cap)" = 0000000000000000 ] || bad+=" $(cat "$t/comm"): $cap=$(field "$t" $cap)"
    done
  done
  if [ -z "$bad" ] && [ -d "/proc/$pid/task" ]; then pass "$c"; else fail "$c" "pid $pid:${bad:- gone}"; fi
}

# ---------------------------------------------------------------------------------------- server
section server
port=$(free_port)
start_kvm server -t 1 -e -v --seccomp --allow-listen=127.0.0.1:"$port" --allow-write="$tmp/out" -- \
  "$GUESTS/servers/epoll_server" "$port" "$tmp/out"
if ! wait_ready; then
  fail server.ready "$WHY"
else
  pass server.ready
  jail_pids "$SPID"
  if grep -q '^kvmserver: jailed: user, mount, PID, IPC, UTS namespaces' "$SLOG.err" && [ -n "$INNER" ]; then
    pass server.jailed_by_default
  else
    fail server.jailed_by_default "no 'jailed' line or no jailed process (outer $OUTER middle $MIDDLE inner $INNER); stderr: $(tail_of "$SLOG.err")"
  fi
  if [ -n "$INNER" ]; then
    hardened server.kvmserver_threads "$INNER"
    hardened server.middle_process "$MIDDLE"
    hardened server.outer_process "$OUTER"
    # Workers' threads and the signal thread: the filter stack (2 on the main thread: Process and
    # SignalThread).
    [ "$(field /proc/"$INNER" Seccomp_filters)" = 2 ] && pass server.signal_thread_filter ||
      fail server.signal_thread_filter "main thread has $(field /proc/"$INNER" Seccomp_filters) filters"
    different="" same=""
    for ns in user mnt pid ipc uts; do
      [ "$(readlink /proc/"$INNER"/ns/$ns)" != "$(readlink /proc/self/ns/$ns)" ] || same+=" $ns"
    done
    [ "$(readlink /proc/"$INNER"/ns/net)" = "$(readlink /proc/self/ns/net)" ] || different+=" net"
    if [ -z "$same$different" ]; then pass server.namespaces; else
      fail server.namespaces "same as ours:${same:- -}; different (should be the host's):${different:- -}"; fi
    r=/proc/$INNER/root
    top=$(ls -A "$r" | tr '\n' ' ')
    want_top=" dev etc lib lib64 proc sys tmp usr $(cut -d/ -f2 <<<"$root") "
    extra=""
    for e in $top; do [[ $want_top == *" $e "* ]] || extra+=" $e"; done
    [ -z "$extra" ] && pass server.root_top || fail server.root_top "unexpected at the jail's root:$extra (all: $top)"
    leaks=""
    for p in /etc/shadow /etc/passwd /etc/hostname /home /root /var /boot "$root/src" "$root/README.md" \
      "$root/build/kvmserver" "$tmp/secret.txt" "$tmp/data"; do
      [ -e "$r$p" ] && leaks+=" $p"
    done
    [ -z "$leaks" ] && pass server.root_holds_no_more || fail server.root_holds_no_more "visible in the jail:$leaks"
    missing=""
    for p in "$GUESTS/servers/epoll_server" "$tmp/out" /etc/ld.so.cache /dev/kvm /dev/null /proc/1/status; do
      [ -e "$r$p" ] || missing+=" $p"
    done
    [ -z "$missing" ] && pass server.root_holds_its_needs || fail server.root_holds_its_needs "missing in the jail:$missing"
    devs=$(ls "$r/dev" | tr '\n' ' ')
    [ "$devs" = "full kvm null random urandom zero " ] && pass server.dev || fail server.dev "/dev holds: $devs"
    pids=$(ls "$r/proc" | grep -E '^[0-9]+$' | tr '\n' ' ')
    [ "$pids" = "1 " ] && pass server.proc_own_pid_namespace || fail server.proc_own_pid_namespace "/proc shows pids: $pids"
    # Read-only where not granted: the jail's root tmpfs, the program's bind.
    if touch "$r/newfile" 2>/dev/null || touch "$r$GUESTS/servers/epoll_server" 2>/dev/null; then
      fail server.read_only "could write into the jail's root or the program"
    else
      pass server.read_only
    fi
  fi
  expect_fetch server.serves "$port" / 'hello\n'
  expect_fetch server.writes_granted_dir "$port" /secret/s3cr3t 'stored\n'
  [ "$(cat "$tmp/out/secret.txt" 2>/dev/null)" = s3cr3t ] && pass server.write_reaches_host ||
    fail server.write_reaches_host "$tmp/out/secret.txt: $(cat "$tmp/out/secret.txt" 2>&1)"
  expect_fetch server.isolated "$port" /check 'buffer= heap=(null) file=exists fd=closed\n'
  stop INT
  [ "$STATUS" = 0 ] && pass server.sigint_exit_0 || fail server.sigint_exit_0 "status $STATUS; stderr: $(tail_of "$SLOG.err")"
fi

# ------------------------------------------------------------------------------------------- run
section run
J=("$KVMSERVER" --jail)
check run.exit_status_and_stdio 7 "" -- sh -c 'echo through stdin | "$@"' sh "${J[@]}" run "$BUSYBOX" sh -c 'cat; exit 7'
[ "$LAST_OUT" = "through stdin" ] || fail run.stdio "got '$LAST_OUT'"
# Grants: a read grant, one through a symlink, a write grant of a new file; then an ungranted file.
check run.grants 1 "secret.txt.*Permission denied" -- "${J[@]}" --allow-read="$tmp/data" --allow-read="$tmp/link/file.txt" \
  --allow-write="$tmp/new.txt" run "$BUSYBOX" sh -c "cat $tmp/data/granted.txt $tmp/link/file.txt && echo new >$tmp/new.txt && cat $tmp/secret.txt"
[ "$LAST_OUT" = "$(printf 'granted\nbehind')" ] || fail run.grants.output "'$LAST_OUT'"
[ "$(cat "$tmp/new.txt" 2>/dev/null)" = new ] && pass run.write_new_file.on_host || fail run.write_new_file.on_host "$(ls -l "$tmp")"

# A SIGTERM to the process we started reaches kvmserver (PID 1 in the jail, which would ignore it
# by default), and we see death by SIGTERM, as without a jail; meanwhile: its own network namespace.
start sleeper "$KVMSERVER" --jail run "$BUSYBOX" sleep 60
for _ in $(seq 100); do jail_pids "$SPID"; [ -n "$INNER" ] && break; sleep 0.1; done
sleep 1
if [ -n "$INNER" ] && [ "$(readlink /proc/"$INNER"/ns/net)" != "$(readlink /proc/self/ns/net)" ]; then
  pass run.own_network_namespace
else
  fail run.own_network_namespace "inner '$INNER'"
fi
stop TERM
[ "$STATUS" = 143 ] && pass run.sigterm_passes_through || fail run.sigterm_passes_through "status $STATUS (want 143)"

# ---------------------------------------------------------------------------------------- denied
section denied
deny_line='^kvmserver: seccomp: denied host system call getrandom \(318\) in thread "kvmserver": stopping$'
KVMS_SECCOMP_DENY=getrandom check denied.run_mode 125 "$deny_line" -- "$KVMSERVER" run "$GUESTS/misc.gcc-static"
KVMS_SECCOMP_DENY=getrandom check denied.jailed 125 "$deny_line" -- "$KVMSERVER" --jail run "$GUESTS/misc.gcc-static"
port=$(free_port)
KVMS_SECCOMP_DENY=accept4 start_kvm denied_worker -t 1 -e --seccomp --allow-listen=127.0.0.1:"$port" -- "$GUESTS/servers/epoll_server" "$port"
if wait_ready; then
  client fetch --port "$port" --timeout 10 / >/dev/null 2>&1
  stop INT
  lines=$(grep -c . "$SLOG.err")
  line=$(grep 'seccomp' "$SLOG.err")
  if [ "$STATUS" = 125 ] && [[ $line =~ ^kvmserver:\ seccomp:\ denied\ host\ system\ call\ accept4\ \(288\)\ in\ thread\ \"worker\ [01]\":\ stopping$ ]]; then
    pass denied.worker
  else
    fail denied.worker "status $STATUS, line '$line' ($lines lines)"
  fi
else
  fail denied.worker "$WHY"
fi

# --------------------------------------------------------------------------------------- refused
section refused
refused='^kvmserver: --jail: cannot create namespaces \(unshare: No space left on device\): user namespaces are disabled'
check refused.explicit 125 "$refused" -- "${NO_USERNS[@]}" "$KVMSERVER" --jail run "$BUSYBOX" true
check refused.explicit_server 125 "$refused" -- "${NO_USERNS[@]}" "$KVMSERVER" --jail -t 2 -e --allow-listen=127.0.0.1:1 run "$GUESTS/servers/epoll_server" 1
port=$(free_port)
start fallback "${NO_USERNS[@]}" "$KVMSERVER" -v -t 1 --allow-listen=127.0.0.1:"$port" run -- "$GUESTS/servers/epoll_server" "$port"
if wait_ready; then
  grep -q '^kvmserver: not jailed: cannot create namespaces' "$SLOG.err" && pass refused.default_falls_back ||
    fail refused.default_falls_back "no 'not jailed' line: $(tail_of "$SLOG.err")"
  expect_fetch refused.default_serves "$port" / 'hello\n'
  # seccomp is off by default when serving (README: its cost per request is above 2 %).
  [ "$(field /proc/"$SPID" Seccomp)" = 0 ] && pass refused.server_seccomp_off_by_default ||
    fail refused.server_seccomp_off_by_default "Seccomp: $(field /proc/"$SPID" Seccomp)"
  # Unjailed: no supervisor in between, our mount and PID namespaces.
  if [ -z "$(pgrep -P "$SPID")" ] && [ "$(readlink /proc/"$SPID"/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ] &&
    [ "$(readlink /proc/"$SPID"/ns/pid)" = "$(readlink /proc/self/ns/pid)" ]; then
    pass refused.not_jailed
  else
    fail refused.not_jailed "children '$(pgrep -P "$SPID" | tr '\n' ' ')', mnt $(readlink /proc/"$SPID"/ns/mnt), pid $(readlink /proc/"$SPID"/ns/pid)"
  fi
  stop INT
else
  fail refused.default_falls_back "$WHY"
fi

# ---------------------------------------------------------------------------------- unprivileged
section unprivileged
check unprivileged.jailed 0 "" -- "${NOBODY[@]}" "$KVMSERVER" --jail --allow-read="$tmp/data" run "$BUSYBOX" cat "$tmp/data/granted.txt"
[ "$LAST_OUT" = granted ] || fail unprivileged.jailed.output "'$LAST_OUT'"
start nobody "${NOBODY[@]}" "$KVMSERVER" --jail run "$BUSYBOX" sleep 60
for _ in $(seq 100); do jail_pids "$SPID"; [ -n "$INNER" ] && break; sleep 0.1; done
sleep 1
map=$(tr -s ' ' <"/proc/${INNER:-0}/uid_map" 2>/dev/null)
if [ "$map" = " 65534 65534 1" ] && [ "$(field "/proc/$INNER" Uid | cut -f1)" = 65534 ]; then
  pass unprivileged.own_uid_mapped
else
  fail unprivileged.own_uid_mapped "uid_map '$map', Uid $(field "/proc/${INNER:-0}" Uid 2>&1)"
fi
hardened unprivileged.hardened "${INNER:-0}"
stop TERM
[ "$STATUS" = 143 ] && pass unprivileged.sigterm || fail unprivileged.sigterm "status $STATUS"
check unprivileged.refused 125 "$refused" -- "${NOBODY[@]}" "${NO_USERNS[@]}" "$KVMSERVER" --jail run "$BUSYBOX" true

section ""
e2e_summary
