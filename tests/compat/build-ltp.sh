#!/usr/bin/env bash
# Builds LTP's syscall tests (static, the harness unmodified) from the source snapshot in the
# third-party directory into .cache/compat/ltp, for tests/compat/run-ltp.sh. Only the families a
# server uses (FAMILIES below, overridable) are built. Safe to run again: configure and make only
# redo what is missing.
#
#   tests/compat/build-ltp.sh            KVMS_THIRD_PARTY (default ../shared/third-party): where
#                                        ltp-*.tar.xz is; KVMS_COMPAT_DIR (default .cache/compat)
# Needs autoconf, automake, m4 (scripts/setup.sh installs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
third_party=${KVMS_THIRD_PARTY:-$root/../shared/third-party}
out=$(realpath -m -- "${KVMS_COMPAT_DIR:-$root/.cache/compat}")  # absolute: the build changes directory
# LTP directories under testcases/kernel/syscalls, by the families issue 12 names.
FAMILIES=${FAMILIES:-"read write pread pwrite readv writev open openat creat close stat fstat lstat fstatat
  mmap mprotect munmap mremap madvise brk pipe pipe2 dup dup2 dup3 fcntl epoll_create epoll_create1 epoll_ctl
  epoll_wait poll ppoll select socket socketpair bind listen accept accept4 connect futex clone fork vfork
  execve execl wait wait4 waitpid waitid sigaction rt_sigaction sigprocmask rt_sigprocmask sigaltstack
  sigsuspend rt_sigsuspend sigtimedwait rt_sigtimedwait kill tgkill clock_gettime clock_getres
  clock_nanosleep nanosleep timerfd setitimer getitimer alarm timer_create timer_settime getrandom prctl
  uname getrlimit setrlimit prlimit64 eventfd eventfd2 sendfile getpid getppid gettid chown fchown lchown
  setpgid getpgid setsid"}

command -v autoconf >/dev/null && command -v automake >/dev/null ||
  { echo "build-ltp.sh: needs autoconf and automake (scripts/setup.sh installs them)" >&2; exit 1; }
. "$root/tests/compat/lib.sh"
tarball=$(snapshot_tarball 'ltp-*.tar.xz') || exit 1
t0=$(date +%s)
mkdir -p "$out"
src=$out/ltp
extract_snapshot "$tarball" ltp "$src"
cd "$src"
if [ ! -f include/config.h ]; then
  make autotools >"$out/ltp-autotools.log" 2>&1 || { echo "build-ltp.sh: make autotools failed: $out/ltp-autotools.log" >&2; exit 1; }
  ./configure LDFLAGS=-static >"$out/ltp-configure.log" 2>&1 || { echo "build-ltp.sh: configure failed: $out/ltp-configure.log" >&2; exit 1; }
fi
make -j"$(nproc)" -C lib >"$out/ltp-lib.log" 2>&1 || { echo "build-ltp.sh: make -C lib failed: $out/ltp-lib.log" >&2; exit 1; }
built=0 failed=()
for family in $FAMILIES; do
  dir=testcases/kernel/syscalls/$family
  [ -d "$dir" ] || continue
  if make -j"$(nproc)" -C "$dir" >"$out/ltp-$family.log" 2>&1; then
    built=$((built + 1))
  else
    failed+=("$family")  # some tests of a family may still have built
  fi
done
echo "build-ltp.sh: $built families built${failed:+, with errors: ${failed[*]}} in $(($(date +%s) - t0)) s ($src)"
