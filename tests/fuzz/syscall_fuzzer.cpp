// In-process libFuzzer harness over dispatch_syscall: the syscall handlers of src/linux/ on a
// Process over real guest memory and a vCPU without KVM (kvm::Vcpu::without_kvm), natively, at
// full speed, under ASan and UBSan. Built by -DKVMS_FUZZ=ON with clang (tests/fuzz/CMakeLists.txt),
// run by tests/fuzz/run_libfuzzer.sh.
//
// One input is a sequence of up to kMaxCalls system calls (the format: see Reader). The first bytes
// fill the guest's data buffers; then, for each call: which thread makes it, its number (mostly
// one kvmserver implements), and each argument as a kind plus a value: small
// integers, fds returned earlier, pointers into a read-write buffer whose bytes come from the
// input (and to its end, running into unmapped memory), read-only, PROT_NONE and executable pages,
// the top of user memory, the guest kernel area, non-canonical and unaligned addresses, paths from a
// dictionary (the granted scratch directory, ../ escapes, symlinks out, /proc/self/*, /dev/*,
// /etc/passwd which is denied), special numbers and flag bits, results of earlier calls, and structs
// built from input bytes (iovecs, msghdrs with SCM_RIGHTS, sockaddrs, timespecs).
//
// What stands in for the Guest: a ProcessHost whose forks end at once (so wait4/kill/waitid have
// children) and whose clone_thread adds a thread with a vCPU of its own (later calls pick which
// thread makes them); execve ends the input, as it would end the program. A watchdog thread ends a
// call blocked for more than kBlockedFor the way Guest stops a thread: Process::lock.stop, a notify
// of the process's condition variable, and Vcpu::kick.
//
// Besides ASan/UBSan reports, each call is checked for invariants the host relies on (see
// check_invariants): mappings sorted, disjoint and inside user memory, within --max-memory; every
// guest fd's host fd open and owned by one OpenFile only; the heap not below its start.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "kvm/layout.hpp"
#include "kvm/vm.hpp"
#include "../unit/guest_memory_test_access.hpp"
#include "linux/epoll.hpp"
#include "linux/guest.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/process_table.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"

namespace {

using namespace kvms;
using namespace kvms::linux;
namespace fs = std::filesystem;

constexpr size_t kMaxCalls = 96;
constexpr auto kBlockedFor = std::chrono::microseconds(200);
constexpr uint64_t kUserSize = 1ull << 30;
constexpr uint64_t kKernelSize = 16ull << 20;

// The guest's memory.
constexpr uint64_t kData = 0x100000, kDataSize = 0x40000;       // read-write, bytes from the input
constexpr uint64_t kRo = 0x200000, kRoSize = 0x4000;            // read-only, bytes from the input
constexpr uint64_t kNone = 0x210000, kNoneSize = 0x4000;        // PROT_NONE
constexpr uint64_t kCode = 0x220000;                            // read + execute, one page
constexpr uint64_t kBuild = 0x300000, kBuildSize = 0x10000;     // structs and strings built per call
constexpr uint64_t kStack = 0x400000, kStackSize = 0x100000;    // "[stack]"
constexpr uint64_t kHeap = 0x800000;                            // brk start
constexpr uint64_t kVvar = 0x900000;                            // the clock page, then the "vDSO"
constexpr uint64_t kTop = kUserSize - kvm::kPageSize;           // the last user page, read-write

struct Dirs {
  std::string root, rw, ro, tmp;  // tmp: the guest's private /tmp (a volume, charged to the tree)
};

Dirs& dirs() {
  static Dirs d = [] {
    char tmpl[] = "/tmp/kvms-syscall-fuzzer-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      std::abort();
    }
    Dirs d{tmpl, std::string(tmpl) + "/rw", std::string(tmpl) + "/ro", std::string(tmpl) + "/tmp"};
    fs::create_directories(d.rw);
    fs::create_directories(d.tmp);
    fs::create_directories(d.ro + "/sub");
    std::ofstream(d.ro + "/data") << "read-only data\n";
    std::ofstream(d.ro + "/sub/x") << "x\n";
    return d;
  }();
  return d;
}

// The scratch directory as each input finds it: a file, a directory, and symlinks in and out; the
// private /tmp with a file and a directory.
void reset_scratch() {
  const Dirs& d = dirs();
  std::error_code ec;
  for (const auto& dir : {d.rw, d.tmp})
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
      fs::remove_all(e.path(), ec);
    }
  std::ofstream(d.tmp + "/t0") << "temporary\n";
  fs::create_directory(d.tmp + "/td", ec);
  std::ofstream(d.rw + "/f0") << "0123456789abcdef\n";
  fs::create_directory(d.rw + "/d0", ec);
  fs::create_symlink("f0", d.rw + "/in", ec);
  fs::create_symlink("/etc/passwd", d.rw + "/out", ec);
  fs::create_symlink("../ro", d.rw + "/up", ec);
  fs::create_symlink("/tmp/kvms-fuzzer-escape", d.rw + "/dangling", ec);
}

const std::vector<std::string>& paths() {
  static const std::vector<std::string> p = [] {
    const Dirs& d = dirs();
    return std::vector<std::string>{
        "f0", "d0", "d0/", "d0/new", "in", "out", "up", "up/data", "up/sub/x", "dangling", "new", "sock",
        ".", "..", "../ro/data", "../../../../../etc/passwd", "f0/", "./f0", "d0/../f0", "",
        d.rw, d.rw + "/f0", d.rw + "/sock", d.ro, d.ro + "/data", d.ro + "/sub", d.root, d.root + "/other",
        "/etc/passwd", "/etc", "/", "/tmp", "/tmp/kvms-fuzzer-escape", "/tmp/t0", "/tmp/td", "/tmp/td/new", "/tmp/new", "/usr/lib", "/usr/lib/os-release",
        "/proc", "/proc/self", "/proc/self/maps", "/proc/self/status", "/proc/self/stat", "/proc/self/statm",
        "/proc/self/cmdline", "/proc/self/comm", "/proc/self/exe", "/proc/self/cwd", "/proc/self/root",
        "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/3", "/proc/self/fd/4", "/proc/self/environ",
        "/proc/self/mem", "/proc/thread-self", "/proc/thread-self/comm", "/proc/2/maps", "/proc/2/task/2/stat",
        "/proc/1/cmdline", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu/online", "/sys",
        "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/stdin", "/dev/stdout",
        "/dev/stderr", "/dev/fd/1", "/dev/fd/5", "/dev/tty", "/dev/kvm", "@fuzz", "\x01\xff",
        std::string(300, 'a'), std::string(5000, 'b'),
    };
  }();
  return p;
}

const uint64_t kBadAddrs[] = {
    0, 1, 0x1000, 0xffff, kvm::kUserMin - 8, kData - 8, kData + kDataSize - 8, kRo + kRoSize - 4,
    kNone, kCode, kUserSize, kUserSize - 8, kUserSize + kvm::kPageSize, 0x1000000000ull, 0x7ffffffff000ull,
    0x800000000000ull, 0xffff800000000000ull, kvm::kKernelVirt, kvm::kKernelVirt + kvm::kEntryOffset,
    kvm::kKernelVirt + kvm::kPageTableOffset, kvm::kKernelPhys, kvm::kKernelPhys - 8, 0xfffffffffffff000ull,
    ~0ull, kTop + kvm::kPageSize - 8, kVvar, kStack + kStackSize - 8,
};

const uint64_t kSpecial[] = {
    0, 1, 2, 3, 4, 7, 8, 15, 16, 24, 32, 63, 64, 128, 255, 256, 1023, 1024, 4095, 4096, 4097, 65536,
    0x7ffff000, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull, 0x7fffffffffffffffull,
    0x8000000000000000ull, ~0ull, ~0ull - 1, uint64_t(-100), uint64_t(-4095), uint64_t(int64_t(INT32_MIN)),
    1ull << 40, 1ull << 47, kUserSize, 1u << 20, 999999999, 1000000000,
};

// Stands in for the Guest: forks end at once, threads are vCPUs without KVM, execve ends the input.
class FakeHost : public ProcessHost {
 public:
  // Charged as Guest::fork charges (Process::charge_fork: a slot and a copy's memory, or EAGAIN/ENOMEM); the
  // child ends at once and gives them back.
  int64_t fork(Process& p, const CloneRequest& req) override {
    const uint64_t flags = req.flags;
    Charge slot, memory;
    if (int error = p.charge_fork(slot, memory)) return error;
    if (children_ >= 16) return -EAGAIN;
    const int pid = p.table->add_child(p.pid, [](const siginfo_t&) {});
    p.table->exited(pid, (flags & 0x80) ? signal_wait_status(int(flags & 0x7f)) : exit_wait_status(int(children_)));
    ++children_;
    return pid;
  }
  int64_t clone_thread(Process& p, const CloneRequest& req) override {
    if (p.threads.size() >= p.limits().threads) {  // as Guest::clone_thread
      p.log_cap("--max-threads", p.limits().threads, "clone: EAGAIN");
      return -EAGAIN;
    }
    if (vcpus_.size() >= 8) return -EAGAIN;
    auto vcpu = kvm::Vcpu::without_kvm(int(vcpus_.size()) + 1);
    ThreadContext ctx = p.thread();
    ctx.tid = p.table->allocate_id();
    ctx.vcpu = vcpu.get();
    ctx.clear_child_tid = (req.flags & CLONE_CHILD_CLEARTID) ? req.child_tid : 0;
    ctx.robust_list = ctx.robust_list_len = ctx.rseq = ctx.rseq_len = 0;
    ctx.pending_signals = 0;
    ctx.pending_queue.clear();
    ctx.altstack_sp = ctx.altstack_size = 0;
    ctx.altstack_flags = SS_DISABLE;
    ctx.exit_code.reset();
    if (req.flags & CLONE_SETTLS) vcpu->set_fs_base(req.tls);
    vcpu->regs().rsp = req.stack;
    p.threads[ctx.tid] = ctx;
    vcpus_.push_back(std::move(vcpu));
    return ctx.tid;
  }
  int64_t execve(Process&, const ExecName&, std::vector<std::string>, std::vector<std::string>) override {
    exec_requested = true;
    return 0;
  }
  bool exec_requested = false;

 private:
  uint64_t children_ = 0;
  std::vector<std::unique_ptr<kvm::Vcpu>> vcpus_;
};

// Stands in for the server layer: per call, the input decides whether listening sockets are hidden
// (an ephemeral worker busy with its connection) and whether the server takes a wait over.
class FakeServer : public ServerHooks {
 public:
  bool before_wait(Process& p, bool includes_listener, bool would_block) override {
    if (!take_over || !includes_listener || !would_block) return false;
    p.pause = true;
    return true;
  }
  bool listener_hidden(const Process&) const override { return hidden; }
  void on_accept(Process&, int) override {}
  bool take_over = false, hidden = false;
};

// Ends a call blocked for longer than kBlockedFor, as Guest::stop_other_threads stops a thread.
class Watchdog {
 public:
  Watchdog() : thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void arm(Process& p, kvm::Vcpu& v) {
    std::lock_guard lk(mu_);
    p_ = &p;
    v_ = &v;
    since_ = std::chrono::steady_clock::now();
    armed_ = true;
    ++generation_;
    cv_.notify_all();
  }
  void disarm() {
    std::lock_guard lk(mu_);
    armed_ = false;
  }

 private:
  void loop() {
    std::unique_lock lk(mu_);
    while (!quit_) {
      cv_.wait(lk, [&] { return quit_ || armed_; });
      const uint64_t gen = generation_;
      auto at = since_ + kBlockedFor;
      while (!quit_ && armed_ && generation_ == gen) {
        if (cv_.wait_until(lk, at, [&] { return quit_ || !armed_ || generation_ != gen; })) break;
        p_->lock.stop = true;
        p_->lock.changed.notify_all();
        v_->kick();
        at = std::chrono::steady_clock::now() + kBlockedFor;
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false, armed_ = false;
  uint64_t generation_ = 0;
  std::chrono::steady_clock::time_point since_;
  Process* p_ = nullptr;
  kvm::Vcpu* v_ = nullptr;
  std::thread thread_;
};

[[noreturn]] void broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "syscall_fuzzer: invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}

// What the host relies on after any syscall, whatever the guest asked.
void check_invariants(Process& p) {
  const auto& maps = p.mm().mappings();
  uint64_t prev_end = 0;
  for (const auto& [start, m] : maps) {
    if (start >= m.end) broken("empty or inverted mapping", std::to_string(start));
    if (start < prev_end) broken("overlapping mappings", std::to_string(start));
    if (start < kvm::kUserMin || m.end > p.mm().limit()) broken("mapping outside user memory", std::to_string(start));
    if ((start | m.end) & kvm::kPageMask) broken("unaligned mapping", std::to_string(start));
    prev_end = m.end;
  }
  if (p.mm().mapped_bytes() > p.memory_limit()) broken("accessible mappings above --max-memory", std::to_string(p.mm().mapped_bytes()));
  if (p.brk_current < p.brk_start) broken("brk below its start", std::to_string(p.brk_current));
  std::map<int, const OpenFile*> owner;
  for (int fd : p.fds.fds()) {
    auto f = p.fds.get(fd);
    if (::fcntl(f->host_fd, F_GETFD) < 0) broken("guest fd whose host fd is closed", std::to_string(fd));
    auto [it, fresh] = owner.emplace(f->host_fd, f.get());
    if (!fresh && it->second != f.get()) broken("two open files share a host fd", std::to_string(f->host_fd));
  }
}

// The input, read from the front; past its end every read is 0 (and the calls stop). The format is
// simple enough for tests/fuzz/make_corpus.py to write the seed corpus:
//   u16 n, (n & 0x7fff) % 4097 bytes: fill the read-write data buffer (repeated) and the read-only
//                            one; bit 15: --verbose (the handlers' diagnostics on stderr)
//   then per call: u8 thread, u16 selector (low 3 bits 0: syscall number selector >> 3, else
//   the (selector >> 3)-th implemented one), 6 arguments, each u8 kind + payload (see arg()).
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), left_(size) {}
  size_t left() const { return left_; }
  template <typename T> T get() {
    T v{};
    const size_t n = std::min(sizeof v, left_);
    std::memcpy(&v, p_, n);
    p_ += n;
    left_ -= n;
    return v;
  }
  std::string bytes(size_t n) {
    n = std::min(n, left_);
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    left_ -= n;
    return s;
  }
  template <typename T, size_t N> T pick(const T (&table)[N]) { return table[get<uint8_t>() % N]; }

 private:
  const uint8_t* p_;
  size_t left_;
};

class Input {
 public:
  Input(Reader& in, Process& p) : in_(in), p_(p) {}

  // One argument: u8 kind, then its payload.
  uint64_t arg() {
    switch (in_.get<uint8_t>() % 16) {
      case 0: return uint64_t(int64_t(in_.get<int16_t>()));
      case 1: return fd();
      case 2: return kData + in_.get<uint32_t>() % (kDataSize + 1);
      case 3: return path();
      case 4: return in_.pick(kBadAddrs) + in_.get<uint8_t>() % 17;
      case 5: return in_.pick(kSpecial);
      case 6: return 1ull << (in_.get<uint8_t>() % 64);
      case 7: return in_.get<uint64_t>();
      case 8: return bytes();
      case 9: return last_ok_;
      case 10: return iovecs();
      case 11: return msghdr();
      case 12: return sockaddr();
      case 13: return timespec();
      case 14: {
        static const uint64_t kPlaces[] = {kRo, kNone, kCode, kStack, kStack + kStackSize - 64, kTop, kTop + 4000,
                                           kHeap, kVvar, kVvar + kvm::kPageSize, kBuild, kData + kDataSize - 16};
        return in_.pick(kPlaces) + in_.get<uint8_t>();
      }
      default: return uint64_t(int64_t(in_.get<int32_t>()));
    }
  }

  void note_result(uint64_t nr, const SyscallArgs& a, int64_t r) {
    if (r < 0) return;
    last_ok_ = uint64_t(r);
    switch (nr) {
      case SYS_open: case SYS_openat: case SYS_creat: case SYS_dup: case SYS_dup2: case SYS_dup3: case SYS_socket:
      case SYS_accept: case SYS_accept4: case SYS_epoll_create: case SYS_epoll_create1: case SYS_eventfd:
      case SYS_eventfd2: case SYS_timerfd_create: case SYS_memfd_create:
        fds_.push_back(int(r));
        break;
      case SYS_fcntl:
        if (a.a[1] == F_DUPFD || a.a[1] == F_DUPFD_CLOEXEC) fds_.push_back(int(r));
        break;
      case SYS_pipe: case SYS_pipe2: case SYS_socketpair: {
        int32_t two[2];
        if (p_.mm().read(nr == SYS_socketpair ? a.a[3] : a.a[0], two)) fds_.insert(fds_.end(), {two[0], two[1]});
        break;
      }
      default: break;
    }
  }

 private:
  // u8: the i-th fd an earlier call returned, or (with none yet) a number of the table below.
  uint64_t fd() {
    const uint8_t i = in_.get<uint8_t>();
    static const int64_t kFds[] = {0, 1, 2, 3, 4, 5, -1, AT_FDCWD, 1023, 1024, 1 << 20, INT32_MAX, INT32_MIN};
    if (!fds_.empty() && i < 128) return uint64_t(int64_t(fds_[i % fds_.size()]));
    return uint64_t(kFds[i % std::size(kFds)]);
  }

  // Room in the build area (a ring: long inputs reuse it).
  uint64_t alloc(size_t n) {
    n = std::min<size_t>((n + 15) & ~size_t(15), kBuildSize);
    if (build_used_ + n > kBuildSize) build_used_ = 0;
    const uint64_t at = kBuild + build_used_;
    build_used_ += n;
    return at;
  }
  uint64_t put(const void* data, size_t n) {
    const uint64_t at = alloc(n);
    p_.mm().poke(at, data, std::min<size_t>(n, kBuildSize));
    return at;
  }

  // u8 index into the dictionary, u8 count of input bytes appended.
  uint64_t path() {
    const auto& list = paths();
    std::string s = list[in_.get<uint8_t>() % list.size()];
    s += in_.bytes(in_.get<uint8_t>() % 17);
    return put(s.c_str(), s.size() + 1);
  }
  // u16 length, then the bytes (a struct of any kind).
  uint64_t bytes() {
    const std::string b = in_.bytes(in_.get<uint16_t>() % 1025);
    return put(b.data(), b.size() + 1);
  }
  // u8 count (at most 8), then per entry: u8 where (even: the data buffer at u32 offset; odd: an
  // address of the bad-address table), u32 length.
  uint64_t iovecs() {
    const size_t n = in_.get<uint8_t>() % 9;
    uint64_t v[16] = {};
    for (size_t i = 0; i < n; ++i) {
      v[2 * i] = (in_.get<uint8_t>() & 1) ? in_.pick(kBadAddrs) : kData + in_.get<uint32_t>() % (kDataSize + 1);
      v[2 * i + 1] = in_.get<uint32_t>();
    }
    return put(v, std::max<size_t>(n, 1) * 16);
  }
  // u8 variant: 0 Unix path (u8: 0 granted, 1 relative, 2 denied), 1 abstract "fuzz", 2 IPv4 (u8:
  // loopback:47001 or u16 port + u32 address), 3 IPv6 loopback:47001, 4 AF_UNSPEC, else 110 bytes.
  uint64_t sockaddr() {
    uint8_t b[128] = {};
    switch (in_.get<uint8_t>() % 6) {
      case 0: {
        auto* u = reinterpret_cast<sockaddr_un*>(b);
        u->sun_family = AF_UNIX;
        const uint8_t which = in_.get<uint8_t>() % 3;
        const std::string name = which == 0 ? dirs().rw + "/sock" : which == 1 ? "sock" : "/etc/x.sock";
        std::memcpy(u->sun_path, name.data(), std::min(name.size(), sizeof u->sun_path - 1));
        break;
      }
      case 1: {
        auto* u = reinterpret_cast<sockaddr_un*>(b);
        u->sun_family = AF_UNIX;
        std::memcpy(u->sun_path, "\0fuzz", 5);
        break;
      }
      case 2: {
        auto* in = reinterpret_cast<sockaddr_in*>(b);
        in->sin_family = AF_INET;
        const bool ours = in_.get<uint8_t>() % 2 == 0;
        in->sin_port = htons(ours ? 47001 : in_.get<uint16_t>());
        in->sin_addr.s_addr = ours ? htonl(INADDR_LOOPBACK) : in_.get<uint32_t>();
        break;
      }
      case 3: {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(b);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(47001);
        in6->sin6_addr.s6_addr[15] = 1;
        break;
      }
      case 4: b[0] = AF_UNSPEC; break;
      default: {
        const std::string raw = in_.bytes(110);
        std::memcpy(b, raw.data(), raw.size());
      }
    }
    return put(b, sizeof b);
  }
  // i64 sec, i64 nsec.
  uint64_t timespec() {
    const int64_t t[2] = {in_.get<int64_t>(), in_.get<int64_t>()};
    return put(t, sizeof t);
  }
  // u8 parts (bit 0: a name, then sockaddr() and u8 namelen; bit 1: SCM_RIGHTS of u8 n fds; bit 2:
  // control bytes, u8 length), then iovecs(), u8 iovlen, i32 flags.
  uint64_t msghdr() {
    struct {
      uint64_t name;
      uint32_t namelen, pad0;
      uint64_t iov, iovlen, control, controllen;
      int32_t flags, pad1;
    } m{};
    const uint8_t parts = in_.get<uint8_t>();
    if (parts & 1) {
      m.name = sockaddr();
      m.namelen = in_.get<uint8_t>();
    }
    std::vector<uint8_t> c;
    if (parts & 2) {
      const int n = 1 + in_.get<uint8_t>() % 4;
      cmsghdr h{};
      h.cmsg_len = CMSG_LEN(n * sizeof(int));
      h.cmsg_level = SOL_SOCKET;
      h.cmsg_type = (parts & 8) ? SCM_CREDENTIALS : SCM_RIGHTS;
      c.resize(CMSG_SPACE(n * sizeof(int)));
      std::memcpy(c.data(), &h, sizeof h);
      for (int i = 0; i < n; ++i) {
        const int f = int(fd());
        std::memcpy(c.data() + CMSG_LEN(0) + i * sizeof(int), &f, sizeof f);
      }
    }
    if (parts & 4) {
      const std::string raw = in_.bytes(in_.get<uint8_t>());
      c.insert(c.end(), raw.begin(), raw.end());
    }
    if (!c.empty()) {
      m.control = put(c.data(), c.size());
      m.controllen = (parts & 16) ? in_.get<uint16_t>() : c.size();
    }
    m.iov = iovecs();
    m.iovlen = in_.get<uint8_t>() % 10;
    m.flags = in_.get<int32_t>();
    return put(&m, sizeof m);
  }

  Reader& in_;
  Process& p_;
  std::vector<int> fds_;
  uint64_t last_ok_ = 0;
  size_t build_used_ = 0;
};

std::vector<uint64_t>& implemented() {
  static std::vector<uint64_t> v = [] {
    std::vector<uint64_t> out;
    for (uint64_t nr = 0; nr < 512; ++nr)
      if (syscall_implemented(nr)) out.push_back(nr);
    return out;
  }();
  return v;
}

std::shared_ptr<const PathPolicy> policy() {
  static auto p = [] {
    PolicyConfig c;
    c.write = {dirs().rw};
    c.read = {dirs().ro};
    c.always_readable = system_library_paths();
    c.volumes = {{dirs().tmp, "/tmp", true}};  // as an ephemeral server's private /tmp (server/private_tmp.cpp)
    return std::make_shared<const PathPolicy>(c);
  }();
  return p;
}

std::shared_ptr<const NetPolicy> net_policy() {
  static auto p = [] {
    NetPolicyConfig c;
    c.listen = {"127.0.0.1:47001", "[::1]:47001", dirs().rw + "/sock", "@fuzz"};
    c.connect = c.listen;
    return std::make_shared<const NetPolicy>(c);
  }();
  return p;
}

// One guest memory for every input (creating and unmapping 1 GiB for each was most of the time),
// zeroed in between: the user slot and the page-table pages are punched out, so the next input
// finds it as fresh as a new one.
std::shared_ptr<kvm::AddressSpace> fresh_address_space() {
  static const auto memory = kvm::GuestMemory::create(kUserSize, kKernelSize);
  kvm::GuestMemoryTestAccess::zero(*memory, 0, kUserSize);
  kvm::GuestMemoryTestAccess::zero(*memory, kvm::kKernelPhys + kvm::kPageTableOffset, kKernelSize - kvm::kPageTableOffset);
  return std::make_shared<kvm::AddressSpace>(memory);
}

Watchdog& watchdog() {
  static Watchdog w;
  return w;
}

void map_memory(kvm::AddressSpace& as, Reader& in, uint16_t n) {
  using kvm::kProtExec, kvm::kProtNone, kvm::kProtRead, kvm::kProtWrite;
  const int rw = kProtRead | kProtWrite;
  bool ok = as.map(kData, kDataSize, rw, "") == 0 && as.map(kRo, kRoSize, kProtRead, "") == 0 &&
            as.map(kNone, kNoneSize, kProtNone, "") == 0 && as.map(kCode, kvm::kPageSize, kProtRead | kProtExec, "/fuzz") == 0 &&
            as.map(kBuild, kBuildSize, rw, "") == 0 && as.map(kStack, kStackSize, rw, "[stack]") == 0 &&
            as.map(kHeap, kvm::kPageSize, rw, "[heap]") == 0 && as.map(kVvar, kvm::kPageSize, kProtRead, "[vvar]") == 0 &&
            as.map(kVvar + kvm::kPageSize, kvm::kPageSize, kProtRead | kProtExec, "[vdso]") == 0 &&
            as.map(kTop, kvm::kPageSize, rw, "") == 0;
  if (!ok) broken("setting up guest memory", "map failed");
  const std::string data = in.bytes(n % 4097);
  for (uint64_t off = 0; !data.empty() && off < 4 * data.size() && off < kDataSize; off += data.size())
    as.poke(kData + off, data.data(), std::min<uint64_t>(data.size(), kDataSize - off));
  if (!data.empty()) as.poke(kRo, data.data(), std::min<uint64_t>(data.size(), kRoSize));
}

// KVMS_FUZZ_TRACE=1: each call and its result on stderr (for a crash's input, or a seed's).
bool tracing() {
  static const bool on = std::getenv("KVMS_FUZZ_TRACE") != nullptr;
  return on;
}

// u8: where the calling thread's stack pointer is (0: where it was), u8 offset. Signal frames are
// pushed below it and rt_sigreturn reads one at it.
void set_stack_pointer(kvm::Vcpu& vcpu, Reader& in) {
  static const uint64_t kStacks[] = {0, kStack + kStackSize - 256, kStack + 512, kData + kDataSize - 8, kData + 0x1000,
                                     kRo + 0x1000, kNone + 0x100, 0x1000, kTop + kvm::kPageSize - 8, kVvar,
                                     kvm::kKernelVirt + kvm::kStackOffset, 0x800000000000ull, kCode + 0x100};
  const uint64_t sp = in.pick(kStacks) + in.get<uint8_t>();
  if (sp >= 256) vcpu.regs().rsp = sp;
}

// What the vCPU loop does after a handler (Guest::complete_syscall, deliver_signal, sigreturn), as
// far as src/linux/signal.cpp is concerned: rt_sigreturn pops the frame at the stack pointer, and a
// pending unblocked signal is taken and its frame pushed (the handler's stack pointer is then just
// past the return address, where its rt_sigreturn would find the frame). False: the process ended.
bool after_call(Process& p, ThreadContext& t, kvm::Vcpu& vcpu, uint64_t nr) {
  static std::array<uint32_t, 1024> xsave{};
  kvm_regs& r = vcpu.regs();
  // XCR0 of a guest with x87, SSE and AVX state (KVM is not opened here to ask).
  constexpr uint64_t kXfeatures = 0x7;
  if (nr == SYS_rt_sigreturn && !pop_signal_frame(p, t, r.rsp, r, xsave, kXfeatures)) return false;
  if (!(t.pending_signals & ~t.sigmask)) return true;
  auto d = take_signal(p, t);
  if (!d) return true;
  if (p.exit_status) return false;  // its default action ends the process
  const uint64_t frame = push_signal_frame(p, t, *d, r, xsave, FaultDetail{});
  if (!frame) return false;  // no room: SIGSEGV
  r.rsp = frame + 8;
  r.rip = d->act.handler;
  r.rdi = uint64_t(d->sig);
  return true;
}

// What a worker's fork does with the template's epoll, eventfd and timerfd descriptors (the server
// layer): copies over new host objects, from the interest lists the guest made.
void copy_for_a_worker(Process& p) {
  for (int fd : p.fds.fds()) {
    auto f = p.fds.get(fd);
    if (f->kind == OpenFile::Kind::Epoll) clone_epoll(p, *f);
    if (f->kind == OpenFile::Kind::EventFd) clone_eventfd(*f);
    if (f->kind == OpenFile::Kind::TimerFd) clone_timerfd(*f);
  }
  for (int fd : p.fds.fds()) epoll_forget_fd(p, fd);
}

}  // namespace

// The vCPU loop (guest.cpp) needs KVM and is never reached from here; linking it anyway puts it in
// the coverage report, at the 0 % it gets (run_libfuzzer.sh reports src/linux/ with and without it).
[[gnu::used]] std::string (*const kvms_fuzzer_keeps_guest_cpp)(const std::string&) = &kvms::linux::find_program;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);  // as kvmserver's main does
  dirs();
  watchdog();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  reset_scratch();
  auto as = fresh_address_space();
  const uint16_t head = in.get<uint16_t>();
  map_memory(*as, in, head & 0x7fff);

  // Caps low enough for inputs to reach them (limits.hpp), each refusal then taken as Linux would.
  ProcessConfig config;
  config.verbose = head & 0x8000;
  config.limits.memory = 64ull << 20;
  config.limits.processes = 4;
  config.limits.threads = 6;
  config.limits.fds = 48;
  config.limits.tmp_bytes = 1 << 20;
  config.limits.pending_signals = 8;
  config.limits.epoll_watches = 12;
  config.limits.timers = 6;
  auto p = std::make_unique<Process>(as, policy(), config);
  FakeHost host;
  p->host = &host;
  FakeServer server;
  p->server = &server;
  p->table = std::make_shared<ProcessTable>(p->pid);
  p->net_policy = net_policy();
  p->cwd = dirs().rw;
  p->has_private_tmp = true;
  p->exe_path = "/proc/self/exe";
  p->brk_start = p->brk_current = kHeap + kvm::kPageSize;
  p->stack_top = kStack + kStackSize;
  p->stack_size = kStackSize;
  p->vdso_base = kVvar + kvm::kPageSize;
  p->arg_start = kStack + kStackSize - 64;
  p->arg_end = kStack + kStackSize - 32;
  p->clock.tsc_khz = 1000000;
  const char* stdio[] = {"/dev/stdin", "/dev/stdout", "/dev/stderr"};
  const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd < 3; ++fd)
    if (auto f = inherit_host_fd(devnull, stdio[fd])) p->fds.install_at(fd, std::move(f), false);
  ::close(devnull);
  auto main_vcpu = kvm::Vcpu::without_kvm(0);
  main_vcpu->regs().rsp = kStack + kStackSize - 256;
  p->attach(main_vcpu.get());
  refresh_clock_page(*p);

  Input args(in, *p);
  for (size_t n = 0; n < kMaxCalls && in.left() > 0; ++n) {
    // Which thread: the calls of one input may come from each thread the input made.
    // u8: the thread (low bits), listeners hidden (bit 7), the server taking waits over (bit 6).
    const uint8_t who = in.get<uint8_t>();
    server.hidden = who & 0x80;
    server.take_over = who & 0x40;
    auto t = p->threads.begin();
    std::advance(t, (who & 0x3f) % p->threads.size());
    p->make_current(&t->second);
    kvm::Vcpu& vcpu = *t->second.vcpu;
    vcpu.bind_to_this_thread();

    SyscallArgs a;
    const auto& nrs = implemented();
    const uint16_t pick = in.get<uint16_t>();
    a.nr = (pick & 7) ? nrs[(pick >> 3) % nrs.size()] : (pick >> 3) % 600;
    for (auto& v : a.a) v = args.arg();
    set_stack_pointer(vcpu, in);

    vcpu.run_area()->immediate_exit = 0;
    int64_t r;
    {
      std::unique_lock lk(p->lock.mutex);
      Process::holds_lock = true;
      watchdog().arm(*p, vcpu);
      r = dispatch_syscall(*p, a);
      watchdog().disarm();
      Process::holds_lock = false;
    }
    ::syscall(SYS_getpid);  // a kernel exit: a kick sent just before the disarm lands now
    vcpu.run_area()->immediate_exit = 0;
    p->lock.stop = false;
    if (tracing())
      std::fprintf(stderr, "syscall_fuzzer: [%d] %s(%#llx, %#llx, %#llx, %#llx, %#llx, %#llx) = %lld\n", t->second.tid,
                   syscall_name(a.nr) ? syscall_name(a.nr) : "?", (unsigned long long)a.a[0], (unsigned long long)a.a[1],
                   (unsigned long long)a.a[2], (unsigned long long)a.a[3], (unsigned long long)a.a[4],
                   (unsigned long long)a.a[5], (long long)r);
    args.note_result(a.nr, a, r);
    p->pause = false;  // what the server layer would resume
    if (!after_call(*p, t->second, vcpu, a.nr)) break;
    check_invariants(*p);

    // What Guest does after the call: a thread that called exit(2) goes; exit_group and a
    // successful execve end the program.
    if (t->second.exit_code && !p->exit_status) {
      p->threads.erase(t);
      p->make_current(nullptr);
      if (p->threads.empty()) break;
    }
    if (p->exit_status || host.exec_requested) break;
  }
  p->make_current(nullptr);
  copy_for_a_worker(*p);
  return 0;
}
