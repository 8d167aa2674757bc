#!/usr/bin/env bash
# End-to-end: Debian's own dynamically linked runtimes, unmodified, print byte-identical stdout and
# exit with the same status natively and under kvmserver (single-threaded use).
#
#   native:  env -i PROGRAM ARGS...                         (cwd: the fixture directory)
#   kvm:     KVMSERVER --allow-read=FIXTURE --cwd=FIXTURE run -- PROGRAM ARGS...
#
# The runtimes' libraries and Python's standard library (/usr/lib/python3.*) are readable without a
# flag (README "Libraries"); only the fixture is granted.
#
# Usage: tests/e2e/dynamic.sh [KVMSERVER]   ("native" runs both sides natively)
# Environment: PYTHON (default /usr/bin/python3), RUNTIMES_FILTER (regex on case names),
#   CASE_TIMEOUT (default 300 s), KVMSERVER_FLAGS (extra flags).
# Output: "PASS name" / "FAIL name: reason" / "SKIP name: reason" per case, then "N passed, M failed".
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
KVMSERVER=${1:-${KVMSERVER:-$root/build/kvmserver}}
PYTHON=${PYTHON:-/usr/bin/python3}
RUNTIMES_FILTER=${RUNTIMES_FILTER:-}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}
read -r -a EXTRA_FLAGS <<<"${KVMSERVER_FLAGS:-}"
case $KVMSERVER in native | /*) ;; *) KVMSERVER=$PWD/$KVMSERVER ;; esac

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

T=$(mktemp -d "${TMPDIR:-/tmp}/kvms-runtimes.XXXXXX")
T=$(cd "$T" && pwd -P)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/fixture" "$T/out"
F=$T/fixture

printf 'alpha,1\nbeta,22\ngamma,333\n' >"$F/data.csv"
cat >"$F/script.py" <<'PY'
import collections, hashlib, json, math, os, re, sqlite3, struct, sys, zlib

rows = [line.split(",") for line in open("data.csv").read().splitlines()]
print("rows", rows)
print("sum", sum(int(n) for _, n in rows))
print("sha256", hashlib.sha256(open("data.csv", "rb").read()).hexdigest())
print("md5", hashlib.md5(b"kvmserver").hexdigest())
print("re", re.findall(r"[aeiou]+", "dynamically linked runtimes"))
print("json", json.dumps({"b": [1, 2.5, None], "a": "\u00e9"}, sort_keys=True))
print("counter", collections.Counter("mississippi").most_common(3))
print("math", math.factorial(30), round(math.pi, 12))
print("zlib", zlib.crc32(b"x" * 100000), len(zlib.compress(bytes(range(256)) * 100)))
print("struct", struct.pack("<Iq", 7, -1).hex())
db = sqlite3.connect(":memory:")
db.execute("create table t (k text, v integer)")
db.executemany("insert into t values (?, ?)", rows)
print("sqlite", db.execute("select k, v * 2 from t where v > 1 order by v desc").fetchall())
big = [i * i for i in range(200000)]
print("big", sum(big), len(big))
print("exe", os.readlink("/proc/self/exe") == os.path.realpath(sys.executable))
print("maps", "[stack]" in open("/proc/self/maps").read())
print("fds", "0" in os.listdir("/proc/self/fd"))
print("argv", sys.argv[1:])
sys.exit(3)
PY

# run NAME CMD... : native and kvm runs of CMD compared.
run_case() {
  local name=$1
  shift
  if [ -n "$RUNTIMES_FILTER" ] && ! [[ $name =~ $RUNTIMES_FILTER ]]; then return; fi
  local o=$T/out/$name
  (cd "$F" && timeout -s KILL "$CASE_TIMEOUT" env -i "$@" >"$o.native" 2>"$o.native.err" </dev/null)
  local native=$?
  if [ "$KVMSERVER" = native ]; then
    (cd "$F" && timeout -s KILL "$CASE_TIMEOUT" env -i "$@" >"$o.kvm" 2>"$o.kvm.err" </dev/null)
  else
    timeout -s KILL "$CASE_TIMEOUT" "$KVMSERVER" "${EXTRA_FLAGS[@]}" "--allow-read=$F" "--cwd=$F" run -- "$@" \
      >"$o.kvm" 2>"$o.kvm.err" </dev/null
  fi
  local kvm=$?
  if [ ! -s "$o.native" ]; then
    fail "$name" "native run printed nothing (status $native): $(head -c 300 "$o.native.err" | tr '\n' '|')"
  elif [ "$native" != "$kvm" ]; then
    fail "$name" "status native $native, kvm $kvm; stderr: $(head -c 400 "$o.kvm.err" | tr '\n' '|')"
  elif ! cmp -s "$o.native" "$o.kvm"; then
    fail "$name" "stdout differs: $(diff "$o.native" "$o.kvm" | head -c 400 | tr '\n' '|')"
  else
    pass "$name"
  fi
}

if [ -x "$PYTHON" ]; then
  run_case python-c "$PYTHON" -c 'import json,hashlib,re,sqlite3; print(json.dumps({"k": [1, 2]}), hashlib.sha1(b"abc").hexdigest(), re.sub("a+", "-", "baaad"), sqlite3.connect(":memory:").execute("select 6*7").fetchone()[0])'
  run_case python-script "$PYTHON" script.py one "two words"
  run_case python-error "$PYTHON" -c 'import sys; print("before"); sys.stdout.flush(); raise SystemExit("bye")'
else
  echo "SKIP python: no $PYTHON"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
