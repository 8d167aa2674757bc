#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/syscall_fuzzer.cpp: one input per family of system calls,
each a plausible sequence (open, read, write, close; socket, bind, listen, connect, accept, send...)
in the harness's input format (see Reader and Input::arg there), so that libFuzzer starts from
inputs that reach past the argument checks. The paths, addresses and constants below mirror the
harness's.

Usage: tests/fuzz/make_corpus.py [DIR]   (default: tests/fuzz/corpus next to this script)
"""
import errno
import os
import re
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Syscall numbers from the headers kvmserver builds against.
NR = {}
with open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h") as f:
    for line in f:
        m = re.match(r"#define __NR_(\w+) (\d+)", line)
        if m:
            NR[m.group(1)] = int(m.group(2))

# The harness's guest memory (syscall_fuzzer.cpp).
DATA, DATA_SIZE = 0x100000, 0x40000
RO, NONE, CODE = 0x200000, 0x210000, 0x220000
BUILD = 0x300000
STACK, STACK_SIZE = 0x400000, 0x100000
HEAP = 0x800000
VVAR = 0x900000
USER_SIZE = 1 << 30
TOP = USER_SIZE - 4096
KERNEL = 0xFFFFFF8000000000

# The harness's path dictionary, in its order ("RW" is the granted scratch directory, "RO" the
# read-only one, "ROOT" their parent; /tmp is the guest's private /tmp, with t0 and td/ in it).
PATHS = [
    "f0", "d0", "d0/", "d0/new", "in", "out", "up", "up/data", "up/sub/x", "dangling", "new", "sock",
    ".", "..", "../ro/data", "../../../../../etc/passwd", "f0/", "./f0", "d0/../f0", "",
    "RW", "RW/f0", "RW/sock", "RO", "RO/data", "RO/sub", "ROOT", "ROOT/other",
    "/etc/passwd", "/etc", "/", "/tmp", "/tmp/kvms-fuzzer-escape", "/tmp/t0", "/tmp/td", "/tmp/td/new", "/tmp/new", "/usr/lib", "/usr/lib/os-release",
    "/proc", "/proc/self", "/proc/self/maps", "/proc/self/status", "/proc/self/stat", "/proc/self/statm",
    "/proc/self/cmdline", "/proc/self/comm", "/proc/self/exe", "/proc/self/cwd", "/proc/self/root",
    "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/3", "/proc/self/fd/4", "/proc/self/environ",
    "/proc/self/mem", "/proc/thread-self", "/proc/thread-self/comm", "/proc/2/maps", "/proc/2/task/2/stat",
    "/proc/1/cmdline", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu/online", "/sys",
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/stdin", "/dev/stdout",
    "/dev/stderr", "/dev/fd/1", "/dev/fd/5", "/dev/tty", "/dev/kvm", "@fuzz", "\x01\xff",
    "a" * 300, "b" * 5000,
]

AT_FDCWD = -100


# ---- argument encodings (Input::arg) ----
def I(v):
    """An integer: the smallest encoding that holds it."""
    if -32768 <= v < 32768:
        return struct.pack("<Bh", 0, v)
    if -(1 << 31) <= v < (1 << 31):
        return struct.pack("<Bi", 15, v)
    return struct.pack("<BQ", 7, v & 0xFFFFFFFFFFFFFFFF)


def FD(i):
    """The i-th fd an earlier call of the input returned."""
    return struct.pack("<BB", 1, i)


def D(off=0):
    """The read-write data buffer at off."""
    return struct.pack("<BI", 2, off)


def P(name, suffix=b""):
    return struct.pack("<BBB", 3, PATHS.index(name), len(suffix)) + suffix


def BAD(i, off=0):
    return struct.pack("<BBB", 4, i, off)


def B(data):
    """Bytes in the build area (a struct)."""
    return struct.pack("<BH", 8, len(data)) + data


LAST = struct.pack("<B", 9)


def IOV(*entries):
    """iovecs over the data buffer: (offset, length) pairs; an offset of None is a bad address."""
    out = struct.pack("<BB", 10, len(entries))
    for off, length in entries:
        out += struct.pack("<BII", 1, 0, length) if off is None else struct.pack("<BII", 0, off, length)
    return out


def SA(kind, **kw):
    """A sockaddr: unix (which=0 granted path, 1 relative, 2 denied), abstract, inet (ours=True:
    127.0.0.1:47001), inet6, unspec."""
    kinds = ["unix", "abstract", "inet", "inet6", "unspec", "raw"]
    out = struct.pack("<BB", 12, kinds.index(kind))
    if kind == "unix":
        out += struct.pack("<B", kw.get("which", 0))
    elif kind == "inet":
        if kw.get("ours", True):
            out += struct.pack("<B", 0)
        else:
            out += struct.pack("<BHI", 1, kw.get("port", 0), kw.get("addr", 0))
    elif kind == "raw":
        out += kw.get("data", b"").ljust(110, b"\0")
    return out


def MSG(name=None, rights=0, cred=False, control=b"", controllen=None, iov=((0, 16),), iovlen=1, flags=0):
    parts = (1 if name else 0) | (2 if rights else 0) | (4 if control else 0) | (8 if cred else 0)
    parts |= 16 if controllen is not None else 0
    out = struct.pack("<BB", 11, parts)
    if name:  # a sockaddr argument, without its kind byte
        out += name[1:] + struct.pack("<B", 110 if name[1] == 0 else 16)
    if rights:
        out += struct.pack("<B", rights - 1) + b"".join(struct.pack("<B", i) for i in range(rights))
    if control:
        out += struct.pack("<B", len(control)) + control
    if controllen is not None:
        out += struct.pack("<H", controllen)
    out += IOV(*iov)[1:]  # the msghdr's iovecs, without a kind byte
    return out + struct.pack("<Bi", iovlen, flags)


def TS(sec, nsec):
    return struct.pack("<Bqq", 13, sec, nsec)


def PLACE(i, off=0):
    return struct.pack("<BBB", 14, i, off)


# Where set_stack_pointer() puts the calling thread's stack pointer (index into its table).
SP_KEEP, SP_STACK, SP_STACK_LOW, SP_DATA_END, SP_DATA, SP_RO, SP_NONE, SP_LOW, SP_TOP, SP_VVAR, SP_KERNEL = range(11)


def call(name_or_nr, *args, thread=0, sp=SP_KEEP, sp_off=0):
    """thread: which thread calls (bit 7: listeners hidden, bit 6: the server takes waits over)."""
    nr = NR[name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
    args = list(args) + [I(0)] * (6 - len(args))
    return struct.pack("<BH", thread, nr << 3) + b"".join(args[:6]) + struct.pack("<BB", sp, sp_off)


def program(*calls, fill=b"kvmserver fuzz seed \x00\x01\x02\xff" * 8, verbose=False):
    """verbose: the process logs as under --verbose (its diagnostics on stderr)."""
    return struct.pack("<H", len(fill) | (0x8000 if verbose else 0)) + fill + b"".join(calls)


def u64s(*v):
    return b"".join(struct.pack("<Q", x & 0xFFFFFFFFFFFFFFFF) for x in v)


def i32s(*v):
    return b"".join(struct.pack("<i", x) for x in v)


O = os
S = socket
SEEDS = {}

SEEDS["files"] = program(
    call("openat", I(AT_FDCWD), P("f0"), I(O.O_RDWR), I(0)),
    call("read", FD(0), D(0), I(8)),
    call("pread64", FD(0), D(64), I(8), I(4)),
    call("write", FD(0), D(0), I(32)),
    call("pwrite64", FD(0), D(0), I(4), I(100)),
    call("lseek", FD(0), I(0), I(O.SEEK_SET)),
    call("readv", FD(0), IOV((0, 4), (100, 4), (None, 8)), I(3)),
    call("writev", FD(0), IOV((0, 4), (200, 8)), I(2)),
    call("preadv", FD(0), IOV((300, 16)), I(1), I(0)),
    call("pwritev", FD(0), IOV((0, 16)), I(1), I(2)),
    call("fstat", FD(0), D(512)),
    call("fcntl", FD(0), I(3)),  # F_GETFL
    call("fcntl", FD(0), I(4), I(O.O_APPEND | O.O_NONBLOCK)),  # F_SETFL
    call("fcntl", FD(0), I(1)),  # F_GETFD
    call("fcntl", FD(0), I(2), I(1)),  # F_SETFD
    call("fcntl", FD(0), I(0), I(10)),  # F_DUPFD
    call("fcntl", FD(0), I(5), B(struct.pack("<hhqqi", 1, 0, 0, 10, 0).ljust(32, b"\0"))),  # F_GETLK
    call("fcntl", FD(0), I(6), B(struct.pack("<hhqqi", 1, 0, 0, 10, 0).ljust(32, b"\0"))),  # F_SETLK
    call("dup", FD(0)),
    call("dup2", FD(0), I(20)),
    call("dup3", FD(0), I(21), I(O.O_CLOEXEC)),
    call("ioctl", FD(0), I(0x541B), D(0)),  # FIONREAD
    call("ioctl", FD(0), I(0x5421), B(i32s(1))),  # FIONBIO
    call("ioctl", FD(0), I(0x5451)),  # FIOCLEX
    call("ioctl", FD(0), I(0x5450)),  # FIONCLEX
    call("ioctl", I(0), I(0x5401), D(0)),  # TCGETS
    call("ioctl", I(1), I(0x5413), D(0)),  # TIOCGWINSZ
    call("ftruncate", FD(0), I(10)),
    call("fsync", FD(0)),
    call("fdatasync", FD(0)),
    call("fchmod", FD(0), I(0o600)),
    call("openat", I(AT_FDCWD), P("."), I(O.O_RDONLY | O.O_DIRECTORY)),
    call("getdents64", FD(5), D(0), I(4096)),
    call("getdents64", FD(5), D(0), I(10)),
    call("openat", I(AT_FDCWD), P("/dev/zero"), I(O.O_RDONLY)),
    call("sendfile", FD(0), FD(6), B(u64s(0)), I(100)),
    call("sendfile", FD(0), FD(6), I(0), I(100)),
    call("pipe2", D(0), I(O.O_NONBLOCK)),
    call("fcntl", FD(7), I(1032)),  # F_GETPIPE_SZ
    call("fcntl", FD(7), I(1031), I(65536)),  # F_SETPIPE_SZ
    call("write", FD(8), D(0), I(100)),
    call("read", FD(7), D(1000), I(200)),
    call("close", FD(7)),
    call("write", FD(8), D(0), I(10)),
    call("pipe", D(0)),
    call("close_range", I(20), I(30), I(4)),
    call("close_range", I(20), I(30), I(0)),
    call("close", FD(0)),
)

SEEDS["open"] = program(
    call("open", P("new"), I(O.O_CREAT | O.O_WRONLY | O.O_TRUNC), I(0o644)),
    call("creat", P("d0/new"), I(0o600)),
    call("open", P("in"), I(O.O_RDONLY)),
    call("open", P("out"), I(O.O_RDONLY)),
    call("open", P("up/data"), I(O.O_RDONLY)),
    call("open", P("up/data"), I(O.O_RDWR)),
    call("open", P("/etc/passwd"), I(O.O_RDONLY)),
    call("open", P("../../../../../etc/passwd"), I(O.O_RDONLY)),
    call("open", P("dangling"), I(O.O_CREAT | O.O_WRONLY), I(0o644)),
    call("open", P("in"), I(O.O_RDONLY | O.O_NOFOLLOW)),
    call("open", P("f0"), I(O.O_CREAT | O.O_EXCL | O.O_RDWR), I(0o644)),
    call("open", P("RW"), I(O.O_TMPFILE | O.O_RDWR), I(0o600)),
    call("open", P("d0"), I(O.O_PATH)),
    call("openat", FD(0), P("f0"), I(O.O_RDONLY)),
    call("openat", LAST, P("new"), I(O.O_RDONLY)),
    call("open", P("/dev/null"), I(O.O_RDWR)),
    call("open", P("/dev/full"), I(O.O_WRONLY)),
    call("open", P("/dev/urandom"), I(O.O_RDONLY)),
    call("open", P("/dev/stdout"), I(O.O_WRONLY)),
    call("open", P("/dev/fd/1"), I(O.O_WRONLY)),
    call("open", P("/proc/self/fd/0"), I(O.O_RDONLY)),
    call("open", P("/dev/kvm"), I(O.O_RDWR)),
    call("open", P("a" * 300), I(O.O_RDONLY)),
    call("open", P("b" * 5000), I(O.O_RDONLY)),
    call("open", BAD(0), I(O.O_RDONLY)),
    call("open", I(DATA + DATA_SIZE - 4), I(O.O_RDONLY)),
    call("openat", I(999), P("f0"), I(O.O_RDONLY)),
    call("openat", FD(1), P("f0"), I(O.O_RDONLY)),
)

SEEDS["meta"] = program(
    call("stat", P("f0"), D(0)),
    call("lstat", P("in"), D(0)),
    call("stat", P("out"), D(0)),
    call("stat", P("/etc"), D(0)),
    call("stat", P("ROOT"), D(0)),
    call("newfstatat", I(AT_FDCWD), P("up/data"), D(0), I(0)),
    call("newfstatat", I(AT_FDCWD), P(""), D(0), I(0x1000)),  # AT_EMPTY_PATH
    call("newfstatat", I(AT_FDCWD), P("in"), D(0), I(0x100)),  # AT_SYMLINK_NOFOLLOW
    call("statx", I(AT_FDCWD), P("f0"), I(0), I(0x7FF), D(0)),
    call("statx", I(AT_FDCWD), P(""), I(0x1000), I(0x7FF), D(0)),
    call("statx", I(AT_FDCWD), P("/proc/self/maps"), I(0), I(0x7FF), D(0)),
    call("statx", I(AT_FDCWD), P("/etc"), I(0), I(0x7FF), D(0)),
    call("readlink", P("in"), D(0), I(100)),
    call("readlink", P("out"), D(0), I(4)),
    call("readlink", P("/proc/self/exe"), D(0), I(100)),
    call("readlink", P("/proc/self/fd/0"), D(0), I(100)),
    call("readlink", P("/etc"), D(0), I(100)),
    call("readlinkat", I(AT_FDCWD), P("f0"), D(0), I(100)),
    call("access", P("f0"), I(O.R_OK | O.W_OK)),
    call("faccessat", I(AT_FDCWD), P("up/data"), I(O.W_OK)),
    call("faccessat2", I(AT_FDCWD), P(""), I(O.R_OK), I(0x1000)),
    call("getcwd", D(0), I(4096)),
    call("getcwd", D(0), I(2)),
    call("chdir", P("d0")),
    call("getcwd", D(0), I(4096)),
    call("chdir", P("..")),
    call("chdir", P("/etc")),
    call("openat", I(AT_FDCWD), P("d0"), I(O.O_RDONLY | O.O_DIRECTORY)),
    call("fchdir", FD(0)),
    call("chdir", P("RW")),
    call("umask", I(0o077)),
    call("mkdir", P("new"), I(0o755)),
    call("mkdir", P("new", b"/"), I(0o755)),
    call("mkdirat", I(AT_FDCWD), P("d0/new"), I(0o700)),
    call("mkdir", P("/tmp/kvms-fuzzer-escape"), I(0o755)),
    call("mkdir", P("up"), I(0o755)),
    call("rmdir", P("new")),
    call("rmdir", P("up")),
    call("unlink", P("in")),
    call("unlinkat", I(AT_FDCWD), P("d0/new"), I(0x200)),
    call("unlink", P("d0/")),
    call("symlink", P("f0"), P("new")),
    call("symlinkat", P("/etc/passwd"), I(AT_FDCWD), P("d0/new")),
    call("link", P("f0"), P("d0/new")),
    call("linkat", I(AT_FDCWD), P("f0"), I(AT_FDCWD), P("ROOT/other"), I(0)),
    call("rename", P("new"), P("d0/new")),
    call("renameat", I(AT_FDCWD), P("f0"), I(AT_FDCWD), P("RO/data")),
    call("renameat2", I(AT_FDCWD), P("d0/new"), I(AT_FDCWD), P("new"), I(1)),
    call("renameat2", I(AT_FDCWD), P("f0"), I(AT_FDCWD), P("d0"), I(2)),
    call("utimensat", I(AT_FDCWD), P("f0"), B(u64s(0, (1 << 30) - 1, 5, 0)), I(0)),
    call("utimensat", FD(0), I(0), I(0), I(0)),
    call("truncate", P("f0"), I(3)),
    call("truncate", P("up/data"), I(0)),
    call("chmod", P("f0"), I(0o600)),
    call("fchmodat", I(AT_FDCWD), P("d0"), I(0o700)),
    call("chmod", P("out"), I(0o600)),
    call("statfs", P("f0"), D(0)),
    call("fstatfs", FD(0), D(0)),
)

SEEDS["mmap"] = program(
    call("mmap", I(0), I(8192), I(3), I(0x22), I(-1), I(0)),
    call("mmap", I(0x5000000), I(4096), I(1), I(0x32), I(-1), I(0)),  # MAP_FIXED
    call("mmap", I(0x5000000), I(4096), I(1), I(0x100022), I(-1), I(0)),  # MAP_FIXED_NOREPLACE
    call("mmap", I(0), I(4096), I(3), I(0x62), I(-1), I(0)),  # MAP_32BIT
    call("mmap", I(0), I(4096), I(3), I(0x21), I(-1), I(0)),  # MAP_SHARED|MAP_ANONYMOUS
    call("openat", I(AT_FDCWD), P("f0"), I(O.O_RDONLY)),
    call("mmap", I(0), I(8192), I(1), I(2), FD(0), I(0)),
    call("mmap", I(0), I(4096), I(3), I(1), FD(0), I(0)),
    call("mmap", I(0), I(4096), I(1), I(3), FD(0), I(0)),
    call("mmap", I(0), I(4096), I(3), I(2), FD(0), I(4096)),
    call("openat", I(AT_FDCWD), P("/dev/zero"), I(O.O_RDWR)),
    call("mmap", I(0), I(4096), I(3), I(1), FD(1), I(0)),
    call("munmap", I(0x5000000), I(4096)),
    call("mprotect", I(DATA), I(4096), I(1)),
    call("mprotect", I(STACK + STACK_SIZE - 4096), I(4096), I(0x01000003)),  # PROT_GROWSDOWN
    call("mprotect", I(VVAR), I(4096), I(3)),
    call("mremap", I(DATA), I(4096), I(8192), I(0)),
    call("mremap", I(DATA), I(8192), I(4096), I(0)),
    call("mremap", I(DATA + 0x10000), I(4096), I(65536), I(1)),
    call("mremap", I(DATA + 0x20000), I(4096), I(4096), I(3), I(0x6000000)),
    call("mremap", I(DATA + 0x30000), I(4096), I(4096), I(5)),
    call("madvise", I(DATA), I(8192), I(4)),  # MADV_DONTNEED
    call("madvise", I(DATA), I(8192), I(8)),  # MADV_FREE
    call("madvise", I(DATA), I(8192), I(9)),  # MADV_REMOVE
    call("madvise", I(DATA), I(8192), I(22)),  # MADV_POPULATE_READ
    call("madvise", I(DATA), I(8192), I(23)),
    call("madvise", I(DATA), I(8192), I(18)),
    call("madvise", I(DATA), I(8192), I(100)),
    call("mlock", I(DATA), I(4096)),
    call("munlock", I(DATA), I(4096)),
    call("msync", I(DATA), I(4096), I(4)),
    call("mincore", I(DATA), I(16384), D(0x30000)),
    call("mlockall", I(1)),
    call("munlockall"),
    call("brk", I(0)),
    call("brk", I(HEAP + 0x100000)),
    call("brk", I(HEAP + 0x2000)),
    call("memfd_create", P("f0"), I(3)),
    call("write", FD(2), D(0), I(4096)),
    call("mmap", I(0), I(4096), I(1), I(1), FD(2), I(0)),
    call("fcntl", FD(2), I(1033), I(8)),  # F_ADD_SEALS
)

SEEDS["misc"] = program(
    *[call(n) for n in ["getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getpgrp", "setsid",
                        "sched_yield", "munlockall"]],
    call("getpgid", I(0)), call("getsid", I(2)), call("getgroups", I(0), D(0)),
    call("getresuid", D(0), D(4), D(8)), call("getresgid", D(0), D(4), I(0)),
    call("uname", D(0)), call("sysinfo", D(0)),
    call("getrandom", D(0), I(64), I(0)), call("getrandom", D(0), I(16), I(1)),
    call("prlimit64", I(0), I(7), B(u64s(512, 1024)), D(0)),
    call("getrlimit", I(3), D(0)), call("setrlimit", I(7), B(u64s(2048, 1024))),
    call("prlimit64", I(0), I(7), B(u64s(1 << 21, 1 << 21)), I(0)),
    call("getrusage", I(0), D(0)), call("getrusage", I(-1), D(0)),
    call("sched_getaffinity", I(0), I(8), D(0)), call("sched_setaffinity", I(0), I(8), B(u64s(1))),
    call("getpriority", I(0), I(0)), call("setpriority", I(0), I(0), I(5)), call("setpriority", I(0), I(0), I(-5)),
    call("prctl", I(15), P("f0")), call("prctl", I(16), D(0)), call("prctl", I(3)), call("prctl", I(4), I(1)),
    call("prctl", I(1), I(9)), call("prctl", I(2), D(0)), call("prctl", I(38), I(1)), call("prctl", I(39)),
    call("prctl", I(0x53564d41), I(0)), call("prctl", I(30)), call("prctl", I(29), I(1)), call("prctl", I(23), I(5)),
    call("prctl", I(21)), call("prctl", I(42)), call("prctl", I(41), I(1)), call("prctl", I(40), D(0)),
    call("prctl", I(35), I(1)), call("prctl", I(9999)),
    call("getcpu", D(0), D(4), I(0)),
    call("sched_getparam", I(0), D(0)), call("sched_getscheduler", I(0)),
    call("sched_setscheduler", I(0), I(0), B(i32s(0))), call("sched_setscheduler", I(0), I(1), B(i32s(10))),
    call("sched_get_priority_max", I(1)), call("sched_get_priority_min", I(0)),
    call("setuid", I(1000)), call("setgid", I(0)), call("setreuid", I(-1), I(1000)), call("setregid", I(5), I(-1)),
    call("setresuid", I(1000), I(-1), I(0)), call("setresgid", I(-1), I(-1), I(-1)), call("setgroups", I(1), D(0)),
    call("capget", B(i32s(0x20080522, 0)), D(0)), call("capget", B(i32s(1, 0)), D(0)),
    call("capset", B(i32s(0x19980330, 0)), B(i32s(0, 0, 0))),
    call("getitimer", I(0), D(0)), call("setitimer", I(0), B(u64s(0, 0, 0, 0)), D(0)),
    call("setitimer", I(1), B(u64s(0, 0, 1, 0)), I(0)),
)

SEEDS["threads"] = program(
    call("arch_prctl", I(0x1002), I(0x7F0000001000)),
    call("arch_prctl", I(0x1003), D(0)),
    call("arch_prctl", I(0x1001), I(0x5000)),
    call("arch_prctl", I(0x1004), D(8)),
    call("arch_prctl", I(0x1011)),
    call("set_tid_address", D(0)),
    call("set_robust_list", D(16), I(24)),
    call("get_robust_list", I(0), D(0), D(8)),
    call("rseq", D(0x100), I(32), I(0), I(0x53053053)),
    call("rseq", D(0x100), I(32), I(1), I(0x53053053)),
    call("clone", I(0x3D0F00), I(STACK + 0x8000), D(0), D(4), I(0)),  # a thread
    call("gettid", thread=1),
    call("tgkill", I(2), LAST, I(17)),  # SIGCHLD: ignored by default
    call("exit", I(0), thread=1),
    call("fork"),
    call("vfork"),
    call("wait4", I(-1), D(0), I(0), D(64)),
    call("waitid", I(0), I(0), D(0), I(4), I(0)),
    call("clone", I(17)),
    call("clone3", B(u64s(0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)), I(64)),
    call("clone3", B(u64s(0x3D0F00, 0, 0, 0, 0, STACK, 0x8000, 0, 0, 0, 0)), I(88)),
    call("wait4", I(-1), D(0), I(1), I(0)),
    call("kill", LAST, I(9)),
    call("execve", P("f0"), B(u64s(BUILD, 0)), I(0)),
    call("execveat", I(AT_FDCWD), P("/etc/passwd"), I(0), I(0), I(0)),
    call("execve", P("/proc/self/exe"), B(u64s(0)), B(u64s(0))),
)

SEEDS["futex_time"] = program(
    call("futex", D(0), I(1), I(1)),  # FUTEX_WAKE
    call("futex", D(0), I(0), I(1), TS(0, 1000)),  # FUTEX_WAIT, value differs
    call("futex", D(0), I(0), I(0x6b76), TS(0, 1000)),  # FUTEX_WAIT times out
    call("futex", D(0), I(9), I(0x6b76), TS(0, 1000), I(0), I(-1)),  # FUTEX_WAIT_BITSET
    call("futex", D(0), I(10), I(1), I(0), I(0), I(1)),  # FUTEX_WAKE_BITSET
    call("futex", D(0), I(3), I(1), I(1), D(4), I(0x6b76)),  # FUTEX_REQUEUE
    call("futex", D(0), I(4), I(1), I(1), D(4), I(0x6b76)),  # FUTEX_CMP_REQUEUE
    call("futex", D(0), I(5), I(1), I(1), D(8), I(0x1A000001)),  # FUTEX_WAKE_OP
    call("futex", D(0), I(6), I(0)),  # FUTEX_LOCK_PI
    call("futex", D(1), I(1), I(1)),
    call("membarrier", I(0)), call("membarrier", I(16)), call("membarrier", I(8)),
    call("clock_gettime", I(0), D(0)), call("clock_gettime", I(1), D(0)), call("clock_gettime", I(2), D(0)),
    call("clock_gettime", I(7), D(0)), call("clock_gettime", I(99), D(0)),
    call("clock_getres", I(1), D(0)),
    call("gettimeofday", D(0), D(16)),
    call("time", D(0)),
    call("nanosleep", TS(0, 1000), D(0)),
    call("nanosleep", TS(-1, 0), D(0)),
    call("clock_nanosleep", I(1), I(0), TS(0, 1000), D(0)),
    call("clock_nanosleep", I(1), I(1), TS(0, 0), D(0)),
    call("times", D(0)),
    call("futex", D(0), I(0), I(0x6b76), TS((1 << 63) - 1, 999999999)),  # a wait the watchdog ends
    call("mprotect", I(VVAR), I(4096), I(3)),  # the clock page, writable: the guest's to scribble on
    call("getrandom", I(VVAR), I(64), I(0)),
    call("clock_gettime", I(0), D(0)),
    call("clock_gettime", I(7), D(0)),
    call("gettimeofday", D(0), I(0)),
    call("munmap", I(VVAR), I(4096)),
    call("time", I(0)),
)

HANDLER, RESTORER = CODE, CODE + 0x80
SA_SIGINFO, SA_ONSTACK, SA_RESTART, SA_NODEFER, SA_RESETHAND, SA_RESTORER = 4, 0x08000000, 0x10000000, 0x40000000, 0x80000000, 0x04000000


def sigaction(handler, flags, mask=0):
    return B(u64s(handler, flags, RESTORER, mask))


SEEDS["signals"] = program(
    call("rt_sigaction", I(10), sigaction(HANDLER, SA_SIGINFO | SA_RESTORER), D(0), I(8)),
    call("rt_sigaction", I(12), sigaction(1, 0), I(0), I(8)),
    call("rt_sigaction", I(17), sigaction(0, 0), I(0), I(8)),
    call("rt_sigaction", I(9), sigaction(1, 0), I(0), I(8)),
    call("rt_sigaction", I(14), sigaction(HANDLER, SA_RESTORER | SA_ONSTACK | SA_NODEFER | SA_RESETHAND, 0xFFFF), I(0), I(8)),
    call("kill", I(2), I(10)),  # delivered: a frame below the stack pointer
    call("rt_sigreturn"),  # pops it
    call("sigaltstack", B(u64s(STACK + 0x1000, 0, 0x10000)), D(0)),
    call("kill", I(0), I(14)),  # on the alternate stack
    call("sigaltstack", I(0), D(0)),
    call("rt_sigreturn"),
    call("sigaltstack", B(u64s(0, 2, 0)), D(0)),
    call("rt_sigprocmask", I(0), B(u64s(1 << 9)), D(0), I(8)),
    call("kill", I(2), I(10)),  # blocked: pending
    call("rt_sigpending", D(0), I(8)),
    call("rt_sigprocmask", I(1), B(u64s(1 << 9)), D(0), I(8)),  # unblocked: delivered
    call("rt_sigreturn"),
    call("rt_sigprocmask", I(2), B(u64s(0)), D(0), I(8)),
    call("kill", I(-1), I(17)),
    call("kill", I(0), I(0)),
    call("kill", I(77), I(10)),
    call("tkill", I(2), I(10), sp=SP_STACK),
    call("rt_sigreturn"),
    call("tgkill", I(2), I(2), I(10), sp=SP_RO),  # no room for the frame: the end (SIGSEGV)
)

SEEDS["signals_end"] = program(
    call("rt_sigaction", I(10), sigaction(HANDLER, SA_SIGINFO | SA_RESTORER), D(0), I(8)),
    call("rt_sigreturn", sp=SP_DATA),  # a frame of garbage
    call("kill", I(2), I(15)),  # SIGTERM, default action: the end
)

# Message headers (struct mmsghdr) for sendmmsg/recvmmsg: each with one iovec, at DATA + 128, over
# 64 bytes at DATA + 512. MMSG_FILL puts two of them at the start of the data buffer.
MMSG = struct.pack("<QI4xQQQQi4xI4x", 0, 0, DATA + 128, 1, 0, 0, 0, 0)
MMSG_FILL = (MMSG * 2).ljust(128, b"\0") + struct.pack("<QQ", DATA + 512, 64) + b"x" * 880

SEEDS["sockets_inet"] = program(
    call("socket", I(S.AF_INET), I(S.SOCK_STREAM), I(0)),
    call("setsockopt", FD(0), I(S.SOL_SOCKET), I(S.SO_REUSEADDR), B(i32s(1)), I(4)),
    call("bind", FD(0), SA("inet"), I(16)),
    call("listen", FD(0), I(8)),
    call("getsockname", FD(0), D(0), B(i32s(16))),
    call("socket", I(S.AF_INET), I(S.SOCK_STREAM), I(0)),
    call("connect", FD(1), SA("inet"), I(16)),
    call("accept4", FD(0), D(0), B(i32s(16)), I(S.SOCK_NONBLOCK)),
    call("sendto", FD(1), D(0), I(100), I(0), I(0), I(0)),
    call("recvfrom", FD(2), D(1000), I(100), I(0), D(2000), B(i32s(16))),
    call("getpeername", FD(1), D(0), B(i32s(16))),
    call("getsockopt", FD(1), I(S.SOL_SOCKET), I(S.SO_TYPE), D(0), B(i32s(4))),
    call("getsockopt", FD(1), I(S.IPPROTO_TCP), I(S.TCP_NODELAY), D(0), B(i32s(4))),
    call("setsockopt", FD(1), I(S.IPPROTO_TCP), I(S.TCP_NODELAY), B(i32s(1)), I(4)),
    call("setsockopt", FD(1), I(S.SOL_SOCKET), I(26), B(struct.pack("<HQ", 1, DATA)), I(16)),  # SO_ATTACH_FILTER
    call("setsockopt", FD(1), I(S.SOL_SOCKET), I(25), B(b"lo\0"), I(3)),  # SO_BINDTODEVICE
    call("sendmsg", FD(1), MSG(iov=((0, 64), (100, 64)), iovlen=2), I(0)),
    call("recvmsg", FD(2), MSG(iov=((4000, 200),)), I(0)),
    call("shutdown", FD(1), I(1)),
    call("accept", FD(0), I(0), I(0)),
    call("socket", I(S.AF_INET), I(S.SOCK_DGRAM), I(0)),
    call("bind", LAST, SA("inet"), I(16)),
    call("socket", I(S.AF_INET), I(S.SOCK_DGRAM), I(0)),
    call("sendto", FD(4), D(0), I(10), I(0), SA("inet"), I(16)),
    call("sendto", FD(4), D(0), I(10), I(0), SA("inet", ours=False, port=53, addr=0x08080808), I(16)),
    call("sendmmsg", FD(4), B(MMSG), I(1), I(0)),
    call("recvmmsg", FD(3), I(DATA), I(2), I(0x10000), TS(0, 1000)),
    call("socket", I(S.AF_INET6), I(S.SOCK_STREAM), I(0)),
    call("connect", LAST, SA("inet6"), I(28)),
    call("connect", FD(1), SA("unspec"), I(16)),
    call("socket", I(S.AF_PACKET), I(S.SOCK_RAW), I(0)),
    call("socket", I(S.AF_NETLINK), I(S.SOCK_RAW), I(0)),
    call("socket", I(S.AF_INET), I(S.SOCK_RAW), I(1)),
    fill=MMSG_FILL,
)

SEEDS["sockets_unix"] = program(
    call("socketpair", I(S.AF_UNIX), I(S.SOCK_STREAM), I(0), D(0)),
    call("pipe2", D(8), I(0)),
    call("sendmsg", FD(0), MSG(rights=3), I(0)),
    call("recvmsg", FD(1), MSG(control=bytes(64), controllen=64), I(0x40000000)),
    call("sendmsg", FD(0), MSG(rights=1, cred=True), I(0)),
    call("recvmsg", FD(1), MSG(control=bytes(32)), I(0)),
    call("socketpair", I(S.AF_UNIX), I(S.SOCK_DGRAM), I(0), D(16)),
    call("sendto", FD(4), D(0), I(10), I(0), I(0), I(0)),
    call("recvfrom", FD(5), D(100), I(10), I(0), D(200), B(i32s(110))),
    call("socket", I(S.AF_UNIX), I(S.SOCK_STREAM), I(0)),
    call("bind", LAST, SA("unix", which=0), I(110)),
    call("listen", FD(6), I(4)),
    call("socket", I(S.AF_UNIX), I(S.SOCK_STREAM), I(0)),
    call("connect", FD(7), SA("unix", which=0), I(110)),
    call("accept", FD(6), D(0), B(i32s(110))),
    call("getsockname", FD(6), D(0), B(i32s(110))),
    call("getpeername", FD(7), D(0), B(i32s(110))),
    call("getsockopt", FD(7), I(S.SOL_SOCKET), I(S.SO_PEERCRED), D(0), B(i32s(12))),
    call("socket", I(S.AF_UNIX), I(S.SOCK_DGRAM), I(0)),
    call("bind", LAST, SA("abstract"), I(7)),
    call("socket", I(S.AF_UNIX), I(S.SOCK_DGRAM), I(0)),
    call("sendto", LAST, D(0), I(5), I(0), SA("abstract"), I(7)),
    call("bind", FD(4), SA("unix", which=2), I(110)),
    call("connect", FD(4), SA("unix", which=1), I(110)),
    call("bind", FD(5), SA("raw", data=b"\x01\x00"), I(2)),
)

SEEDS["wait"] = program(
    call("epoll_create1", I(0)),
    call("pipe2", D(0), I(O.O_NONBLOCK)),
    call("eventfd2", I(1), I(0)),
    call("epoll_ctl", FD(0), I(1), FD(1), B(struct.pack("<IQ", 1, 7))),
    call("epoll_ctl", FD(0), I(1), FD(3), B(struct.pack("<IQ", 1, 8))),
    call("epoll_ctl", FD(0), I(3), FD(3), B(struct.pack("<IQ", 5, 9))),
    call("epoll_wait", FD(0), D(0), I(8), I(0)),
    call("write", FD(2), D(0), I(1)),
    call("epoll_pwait", FD(0), D(0), I(8), I(1), B(u64s(0)), I(8)),
    call("epoll_pwait2", FD(0), D(0), I(8), TS(0, 1000), I(0), I(0)),
    call("epoll_ctl", FD(0), I(2), FD(1), I(0)),
    call("epoll_create", I(1)),
    call("epoll_ctl", FD(4), I(1), FD(0), B(struct.pack("<IQ", 1, 1))),
    call("poll", B(struct.pack("<ihhihh", 0, 1, 0, 5, 1, 0)), I(2), I(0)),
    call("ppoll", B(struct.pack("<ihhihh", 1, 1, 0, 99, 1, 0)), I(2), TS(0, 1000), B(u64s(0)), I(8)),
    call("select", I(8), B(u64s(0x3F)), B(u64s(0x3F)), I(0), B(u64s(0, 100))),
    call("pselect6", I(8), B(u64s(0x3F)), I(0), I(0), TS(0, 100), B(u64s(BUILD, 8))),
    call("read", FD(3), D(0), I(8)),
    call("write", FD(3), B(u64s(5)), I(8)),
    call("eventfd", I(0)),
    call("timerfd_create", I(1), I(0x800)),
    call("timerfd_settime", LAST, I(0), B(u64s(0, 0, 0, 1000)), D(0)),
    call("timerfd_gettime", FD(6), D(0)),
    call("timerfd_settime", FD(6), I(1), B(u64s(0, 0, 1, 0)), I(0)),
    call("read", FD(6), D(0), I(8)),
    call("epoll_wait", FD(0), D(0), I(-1), I(0)),
)

SEEDS["procfs"] = program(
    call("open", P("/proc/self/maps"), I(O.O_RDONLY)),
    call("read", FD(0), D(0), I(4096)),
    call("open", P("/proc/self/status"), I(O.O_RDONLY)),
    call("read", LAST, D(0), I(4096)),
    call("open", P("/proc/self/stat"), I(O.O_RDONLY)),
    call("open", P("/proc/self/statm"), I(O.O_RDONLY)),
    call("open", P("/proc/self/cmdline"), I(O.O_RDONLY)),
    call("open", P("/proc/thread-self/comm"), I(O.O_RDONLY)),
    call("open", P("/proc/self/fd"), I(O.O_RDONLY | O.O_DIRECTORY)),
    call("getdents64", LAST, D(0), I(4096)),
    call("lseek", FD(6), I(1), I(0)),
    call("getdents64", FD(6), D(0), I(24)),
    call("lseek", FD(6), I((1 << 63) - 1), I(1)),
    call("open", P("/proc/self/exe"), I(O.O_RDONLY)),
    call("open", P("/proc/self/fd/3"), I(O.O_RDONLY)),
    call("open", P("/proc/cpuinfo"), I(O.O_RDONLY)),
    call("open", P("/proc/meminfo"), I(O.O_RDONLY)),
    call("open", P("/sys/devices/system/cpu/online"), I(O.O_RDONLY)),
    call("open", P("/proc/2/maps"), I(O.O_RDONLY)),
    call("open", P("/proc/2/task/2/stat"), I(O.O_RDONLY)),
    call("open", P("/proc/self/environ"), I(O.O_RDONLY)),
    call("open", P("/proc/self/maps"), I(O.O_RDWR)),
    call("readlink", P("/proc/self"), D(0), I(64)),
    call("readlink", P("/proc/thread-self"), D(0), I(64)),
    call("readlink", P("/proc/self/cwd"), D(0), I(64)),
    call("readlink", P("/proc/self/root"), D(0), I(64)),
    call("stat", P("/proc/self"), D(0)),
    call("lstat", P("/proc/self/fd/0"), D(0)),
    call("stat", P("/proc/self/fd/0"), D(0)),
    call("stat", P("/proc/self/exe"), D(0)),
    call("lstat", P("/proc/thread-self"), D(0)),
    call("stat", P("/proc/self/fd"), D(0)),
)

# The private /tmp and its cap (the harness's --max-tmp-size is 1 MiB): writes cut short and
# refused, truncate, names created until ENOSPC (a page each), links, renames and unlinks giving
# it back, O_TMPFILE, a FIFO; a memfd's pages charged as memory.
O_TMPFILE = 0o20200000
SEEDS["private_tmp"] = program(
    call("open", P("/tmp/new"), I(O.O_CREAT | O.O_RDWR), I(0o600)),
    *[call("write", FD(0), D(0), I(DATA_SIZE)) for _ in range(4)],
    call("pwrite64", FD(0), D(0), I(4096), I(2 << 20)),
    *[c for i in range(12) for c in (call("creat", P("/tmp/td/new", bytes([65 + i % 26, 97 + i // 26])), I(0o600)),
                                      call("close", LAST))],
    call("ftruncate", FD(0), I(1 << 20)),
    call("ftruncate", FD(0), I(10)),
    call("fallocate", FD(0), I(0), I(0), I(1 << 20)),
    call("truncate", P("/tmp/t0"), I(200000)),
    call("truncate", P("/tmp/t0"), I(0)),
    call("mkdir", P("/tmp/td/new"), I(0o700)),
    call("symlink", P("/tmp/t0"), P("/tmp/td/new", b"/l")),
    call("link", P("/tmp/t0"), P("/tmp/new", b"2")),
    call("rename", P("/tmp/new"), P("/tmp/t0")),
    call("unlink", P("/tmp/new", b"2")),
    call("rmdir", P("/tmp/td/new")),
    call("unlink", P("/tmp/td/new", b"/l")),
    call("rmdir", P("/tmp/td/new")),
    call("unlink", P("/tmp/t0")),
    call("openat", I(AT_FDCWD), P("/tmp"), I(O_TMPFILE | O.O_RDWR), I(0o600)),
    call("write", LAST, D(0), I(8192)),
    call("mknod", P("/tmp/new", b"f"), I(0o10600), I(0)),
    call("memfd_create", P("f0"), I(0)),
    call("write", LAST, D(0), I(DATA_SIZE)),
    call("ftruncate", FD(2), I(100 << 20)),
    call("renameat2", I(AT_FDCWD), P("/tmp/td"), I(AT_FDCWD), P("/tmp/new", b"d"), I(0)),
    verbose=True,
)

# Each cap of the harness reached (limits.hpp; there: 6 threads, 48 fds, 8 pending signals, 12
# epoll registrations, 6 timers, 64 MiB of memory), with --verbose's one line per limit.
SIGRT = 40
SEEDS["limits"] = program(
    *[call("eventfd2", I(0), I(0)) for _ in range(13)],
    call("epoll_create1", I(0)),
    *[call("epoll_ctl", FD(13), I(1), FD(i), B(struct.pack("<IQ", 1, i))) for i in range(13)],
    *[call("timerfd_create", I(1), I(0)) for _ in range(7)],
    call("rt_sigprocmask", I(0), B(u64s(1 << (SIGRT - 1))), I(0), I(8)),
    *[c for _ in range(9) for c in (call("getpid"), call("rt_sigqueueinfo", LAST, I(SIGRT),
                                                            B(struct.pack("<iii", SIGRT, 0, -1).ljust(128, b"\0"))))],
    call("rt_sigpending", D(0), I(8)),
    call("mmap", I(0), I(40 << 20), I(3), I(0x22), I(-1), I(0)),
    call("fork"),
    call("mmap", I(0), I(40 << 20), I(3), I(0x22), I(-1), I(0)),
    call("brk", I(HEAP + (80 << 20))),
    *[call("clone", I(0x3D0F00), I(STACK + 0x8000 * (i + 1)), D(0), D(4), I(0)) for i in range(7)],
    *[call("dup", I(0)) for _ in range(26)],
    call("pipe2", D(0), I(0)),
    call("socket", I(S.AF_UNIX), I(S.SOCK_STREAM), I(0)),
    verbose=True,
)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"make_corpus: {len(SEEDS)} inputs in {out}")


if __name__ == "__main__":
    main()
