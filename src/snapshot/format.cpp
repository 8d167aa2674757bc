// The snapshot file's bytes: one schema (fields()) both writes and reads the description, so the
// two can never disagree; the reader checks every count against the bytes left before allocating,
// and validate() checks what the values mean before anything else of kvmserver sees them.
//
// The encoding is ours rather than a serialization library's: the description is a flat list of
// integers, strings and arrays, and a hostile file must never make a reader allocate or recurse
// beyond what its size allows, which a ~200-line bounded reader guarantees more plainly than a
// general-purpose library (cereal, protobuf) configured to do so. Hashing is xxHash (Debian's
// libxxhash-dev, header-only use: XXH_INLINE_ALL), XXH3-64.
#include "snapshot/format.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kvm/layout.hpp"
#include "kvm/vm.hpp"
#include "linux/fd_table.hpp"
#include "linux/signal.hpp"
#include "linux/syscalls.hpp"

namespace kvms::snapshot {
namespace {

constexpr char kMagic[8] = {'K', 'V', 'M', 'S', 'S', 'N', 'A', 'P'};
constexpr size_t kVersionField = 64;
constexpr size_t kHeaderHashAt = kHeaderSize - 8;
constexpr uint64_t kMaxString = 1 << 20;
constexpr uint64_t kMaxPath = 4096;
constexpr uint64_t kMaxKernelSize = 1ull << 30;
constexpr int kMaxThreads = kvm::kMaxVcpus;
constexpr uint64_t kCanonicalUserEnd = 1ull << 47;

[[noreturn]] void refuse(const std::string& why) { throw SnapshotError(why); }

void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint64_t get_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t get_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Writes the description.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  template <typename T> void raw(T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void u8(uint8_t& v) { raw(v); }
  void boolean(bool& v) {
    uint8_t b = v;
    raw(b);
  }
  void u32(uint32_t& v) { raw(v); }
  void i32(int32_t& v) { raw(v); }
  template <typename T> void u64(T& v) {
    static_assert(sizeof(T) == 8);
    raw(v);
  }
  void i64(int64_t& v) { raw(v); }
  void str(std::string& s, uint64_t /*max*/) {
    uint64_t n = s.size();
    raw(n);
    out_.insert(out_.end(), s.begin(), s.end());
  }
  template <typename T, typename F> void vec(std::vector<T>& v, uint64_t /*max*/, uint64_t /*min_bytes*/, F&& each) {
    uint64_t n = v.size();
    raw(n);
    for (auto& e : v) each(e);
  }

 private:
  std::vector<uint8_t>& out_;
};

// Reads it back, refusing anything that runs past the end or asks for more than it could hold.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  template <typename T> void raw(T& v) {
    need(sizeof(T));
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
  }
  void u8(uint8_t& v) { raw(v); }
  void boolean(bool& v) {
    uint8_t b;
    raw(b);
    if (b > 1) refuse("description: a flag is neither 0 nor 1");
    v = b;
  }
  void u32(uint32_t& v) { raw(v); }
  void i32(int32_t& v) { raw(v); }
  template <typename T> void u64(T& v) {
    static_assert(sizeof(T) == 8);
    raw(v);
  }
  void i64(int64_t& v) { raw(v); }
  void str(std::string& s, uint64_t max) {
    uint64_t n;
    raw(n);
    if (n > max) refuse("description: a string is longer than " + std::to_string(max) + " bytes");
    need(n);
    s.assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
  }
  template <typename T, typename F> void vec(std::vector<T>& v, uint64_t max, uint64_t min_bytes, F&& each) {
    uint64_t n;
    raw(n);
    if (n > max) refuse("description: a table has " + std::to_string(n) + " entries (at most " + std::to_string(max) + ")");
    if (n * min_bytes > in_.size() - pos_) refuse("description: truncated (a table runs past its end)");
    v.clear();
    v.resize(n);
    for (auto& e : v) each(e);
  }
  bool at_end() const { return pos_ == in_.size(); }

 private:
  void need(uint64_t n) {
    if (n > in_.size() - pos_) refuse("description: truncated");
  }
  std::span<const uint8_t> in_;
  uint64_t pos_ = 0;
};

template <typename IO> void segment(IO& io, kvm_segment& s) {
  io.u64(s.base);
  io.u32(s.limit);
  uint16_t selector = s.selector;
  io.raw(selector);
  s.selector = selector;
  for (uint8_t* b : {&s.type, &s.present, &s.dpl, &s.db, &s.s, &s.l, &s.g, &s.avl, &s.unusable}) io.u8(*b);
}

template <typename IO> void strings(IO& io, std::vector<std::string>& v, uint64_t max_count, uint64_t max_len) {
  io.vec(v, max_count, 8, [&](std::string& s) { io.str(s, max_len); });
}

// The one schema of the description.
template <typename IO> void fields(IO& io, Description& d) {
  io.str(d.kvmserver_version, kVersionField);
  io.i64(d.created_unix);
  io.u64(d.xcr0);
  io.vec(d.cpuid, 1024, 24, [&](CpuidLeaf& l) {
    for (uint32_t* r : {&l.function, &l.index, &l.eax, &l.ebx, &l.ecx, &l.edx}) io.u32(*r);
  });
  io.str(d.program, kMaxPath);
  io.str(d.exe_path, kMaxPath);
  strings(io, d.argv, 1 << 16, kMaxString);
  strings(io, d.envp, 1 << 16, kMaxString);
  io.str(d.cwd, kMaxPath);
  io.u64(d.wait_syscall);
  for (bool* b : {&d.allow_all, &d.read_all, &d.write_all, &d.listen_all, &d.connect_all}) io.boolean(*b);
  for (auto* list : {&d.read, &d.write, &d.listen, &d.connect, &d.always_readable}) strings(io, *list, 1 << 16, kMaxPath);
  io.vec(d.volumes, 1 << 16, 17, [&](Description::Volume& v) {
    io.str(v.host, kMaxPath);
    io.str(v.guest, kMaxPath);
    io.boolean(v.writable);
  });
  io.str(d.hostname, 64);
  io.u64(d.user_size);
  io.u64(d.kernel_size);
  io.vec(d.mappings, kvm::AddressSpace::kMaxMappings, 29, [&](MappingRecord& m) {
    io.u64(m.start);
    io.u64(m.end);
    io.i32(m.prot);
    io.u8(m.fork_flags);
    io.str(m.name, kMaxPath);
  });
  io.vec(d.extents, 1 << 24, 16, [&](ExtentRecord& e) {
    io.u64(e.gpa);
    io.u64(e.bytes);
  });
  io.vec(d.chunk_hashes, 1 << 24, 8, [&](uint64_t& h) { io.u64(h); });
  io.vec(d.threads, kMaxThreads, 4096, [&](ThreadRecord& t) {
    io.i32(t.tid);
    io.boolean(t.pending);
    for (__u64* r : {&t.regs.rax, &t.regs.rbx, &t.regs.rcx, &t.regs.rdx, &t.regs.rsi, &t.regs.rdi, &t.regs.rsp,
                        &t.regs.rbp, &t.regs.r8, &t.regs.r9, &t.regs.r10, &t.regs.r11, &t.regs.r12, &t.regs.r13,
                        &t.regs.r14, &t.regs.r15, &t.regs.rip, &t.regs.rflags})
      io.u64(*r);
    kvm_sregs& s = t.sregs;
    for (kvm_segment* seg : {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt}) segment(io, *seg);
    for (kvm_dtable* dt : {&s.gdt, &s.idt}) {
      io.u64(dt->base);
      uint16_t limit = dt->limit;
      io.raw(limit);
      dt->limit = limit;
    }
    for (__u64* r : {&s.cr0, &s.cr2, &s.cr3, &s.cr4, &s.cr8, &s.efer, &s.apic_base}) io.u64(*r);
    for (auto& w : s.interrupt_bitmap) io.raw(w);
    io.u64(t.xcr0);
    for (auto& w : t.xsave) io.u32(w);
    for (uint64_t* r : {&t.clear_child_tid, &t.robust_list, &t.robust_list_len, &t.rseq, &t.rseq_len, &t.sigmask,
                        &t.altstack_sp, &t.altstack_size})
      io.u64(*r);
    io.i32(t.altstack_flags);
    io.str(t.comm, 15);
  });
  for (int32_t* v : {&d.pid, &d.ppid, &d.main_tid}) io.i32(*v);
  for (uint32_t* v : {&d.uid, &d.gid, &d.umask}) io.u32(*v);
  io.i32(d.nice);
  for (uint64_t* v : {&d.brk_start, &d.brk_current, &d.stack_top, &d.stack_size, &d.vdso_base, &d.arg_start, &d.arg_end,
                      &d.env_start, &d.env_end})
    io.u64(*v);
  for (auto& a : d.sigactions)
    for (uint64_t* v : {&a.handler, &a.flags, &a.restorer, &a.mask}) io.u64(*v);
  for (auto& [soft, hard] : d.rlimits) {
    io.u64(soft);
    io.u64(hard);
  }
  io.i32(d.fd_limit);
  io.u64(d.guest_tsc);
  io.u64(d.tsc_khz);
  io.u32(d.clock_seq);
  io.u32(d.clock_shift);
  for (uint64_t* v : {&d.clock_mult, &d.clock_tsc_base, &d.clock_monotonic_base_ns}) io.u64(*v);
  io.i64(d.clock_realtime_offset_ns);
  io.i64(d.clock_boottime_offset_ns);
  io.vec(d.files, linux::FdTable::kMaxLimit, 48, [&](FileRecord& f) {
    uint8_t kind = uint8_t(f.kind);
    io.u8(kind);
    f.kind = FileRecord::Kind(kind);
    io.str(f.guest_path, kMaxPath);
    io.i32(f.status_flags);
    io.boolean(f.writable_grant);
    io.i32(f.stdio);
    for (uint64_t* v : {&f.offset, &f.dev, &f.ino, &f.size}) io.u64(*v);
    io.i64(f.mtime_ns);
    io.u64(f.pipe_id);
    io.str(f.data, kMaxPendingBytes);
    io.u64(f.count);
    io.boolean(f.semaphore);
    io.boolean(f.nonblocking);
    io.i32(f.clock);
    io.i64(f.interval_ns);
    io.i64(f.value_ns);
    for (int32_t* v : {&f.family, &f.type, &f.protocol}) io.i32(*v);
    io.str(f.address, sizeof(sockaddr_storage));
    for (bool* b : {&f.reuse_address, &f.reuse_port, &f.v6_only}) io.boolean(*b);
    io.vec(f.interest, 1 << 20, 16, [&](FileRecord::Interest& i) {
      io.i32(i.guest_fd);
      io.u32(i.events);
      io.u64(i.data);
    });
  });
  io.vec(d.fds, linux::FdTable::kMaxLimit, 9, [&](FdRecord& r) {
    io.i32(r.fd);
    io.u32(r.file);
    io.boolean(r.cloexec);
  });
  io.boolean(d.private_tmp);
  io.vec(d.tmp, 1 << 20, 21, [&](TmpEntry& e) {
    uint8_t type = uint8_t(e.type);
    io.u8(type);
    e.type = TmpEntry::Type(type);
    io.str(e.path, kMaxPath);
    io.u32(e.mode);
    io.str(e.data, kMaxDescriptionBytes);
  });
}

bool is_wait_syscall(uint64_t nr) {
  switch (nr) {
    case SYS_epoll_wait: case SYS_epoll_pwait: case SYS_epoll_pwait2: case SYS_poll: case SYS_ppoll:
    case SYS_select: case SYS_pselect6: case SYS_accept: case SYS_accept4:
      return true;
    default:
      return false;
  }
}

bool page_aligned(uint64_t v) { return (v & kvm::kPageMask) == 0; }

void validate_threads(Description& d) {
  if (d.threads.empty()) refuse("no threads");
  std::set<int32_t> tids;
  for (size_t i = 0; i < d.threads.size(); ++i) {
    ThreadRecord& t = d.threads[i];
    const std::string which = "thread " + std::to_string(i);
    if (t.tid <= 0 || !tids.insert(t.tid).second) refuse(which + ": bad or repeated thread id");
    if (const std::string why = kvm::user_mode_violation(t.sregs); !why.empty()) refuse(which + ": not in user mode: " + why);
    if ((t.regs.rflags & ~kvm::kUserRflags) || !(t.regs.rflags & 0x2) || !(t.regs.rflags & 0x200))
      refuse(which + ": flags no user-mode thread has");
    if (t.regs.rip >= kCanonicalUserEnd) refuse(which + ": instruction pointer outside user memory");
    if (t.xcr0 != d.xcr0) refuse(which + ": XCR0 differs from the snapshot's");
    if (!linux::sanitize_xsave_area(t.xsave, d.xcr0)) refuse(which + ": FPU/XSAVE state the CPU would refuse");
    if (t.altstack_flags & ~(SS_ONSTACK | SS_DISABLE | int32_t(1u << 31) /* SS_AUTODISARM */)) refuse(which + ": bad signal stack flags");
  }
  if (d.threads.front().tid != d.main_tid) refuse("the first thread is not the main thread");
}

void validate_files(Description& d) {
  if (d.fd_limit < 1 || d.fd_limit > linux::FdTable::kMaxLimit) refuse("fd limit out of range");
  std::set<int32_t> fds;
  for (const FdRecord& r : d.fds) {
    if (r.fd < 0 || r.fd >= d.fd_limit || !fds.insert(r.fd).second) refuse("fd " + std::to_string(r.fd) + ": out of range or repeated");
    if (r.file >= d.files.size()) refuse("fd " + std::to_string(r.fd) + ": names no open file");
  }
  for (const FileRecord& f : d.files) {
    switch (f.kind) {
      case FileRecord::Kind::Stdio:
        if (f.stdio < 0 || f.stdio > 2) refuse("standard stream out of range");
        break;
      case FileRecord::Kind::Regular: case FileRecord::Kind::Directory: case FileRecord::Kind::Device:
        if (f.guest_path.empty() || f.guest_path[0] != '/') refuse("an open file without an absolute path");
        if (f.offset > uint64_t(INT64_MAX)) refuse("a file offset out of range");
        break;
      case FileRecord::Kind::PipeEnd: case FileRecord::Kind::EventFd:
        break;
      case FileRecord::Kind::SocketPairEnd:
        if (f.type != SOCK_STREAM && f.type != SOCK_DGRAM && f.type != SOCK_SEQPACKET) refuse("a socket pair of an unknown type");
        if (f.type != SOCK_STREAM && !f.data.empty()) refuse("a datagram socket pair with bytes saved");
        break;
      case FileRecord::Kind::TimerFd:
        if (f.clock != CLOCK_REALTIME && f.clock != CLOCK_MONOTONIC && f.clock != CLOCK_BOOTTIME)
          refuse("a timer on an unknown clock");
        if (f.interval_ns < 0 || f.value_ns < 0) refuse("a timer with a negative time");
        break;
      case FileRecord::Kind::Listener:
        if (f.family != AF_INET && f.family != AF_INET6 && f.family != AF_UNIX) refuse("a listening socket of an unknown family");
        if (f.address.size() < sizeof(sa_family_t)) refuse("a listening socket without an address");
        {
          sa_family_t family;
          std::memcpy(&family, f.address.data(), sizeof family);
          if (family != f.family) refuse("a listening socket whose address is of another family");
        }
        break;
      case FileRecord::Kind::Epoll:
        for (const auto& i : f.interest)
          if (i.guest_fd < 0 || i.guest_fd >= d.fd_limit) refuse("an epoll interest out of range");
        break;
      default:
        refuse("an open file of an unknown kind");
    }
  }
}

void validate(const Header& h, Description& d) {
  if (d.kvmserver_version != h.kvmserver_version) refuse("description and header disagree on the kvmserver version");
  if ((d.xcr0 & 3) != 3) refuse("XCR0 without x87 and SSE");
  if (d.program.empty() || d.argv.empty()) refuse("no program");
  if (d.cwd.empty() || d.cwd[0] != '/') refuse("working directory is not absolute");
  if (!is_wait_syscall(d.wait_syscall)) refuse("the template was not paused in a wait for connections");
  // Memory.
  if (d.user_size == 0 || d.user_size > kvm::kMaxUserSize || !page_aligned(d.user_size)) refuse("user memory size out of range");
  if (d.kernel_size < kvm::kPageTableOffset + kvm::kPageSize || d.kernel_size > kMaxKernelSize || !page_aligned(d.kernel_size))
    refuse("kernel area size out of range");
  uint64_t previous_end = kvm::kUserMin;
  for (const MappingRecord& m : d.mappings) {
    if (!page_aligned(m.start) || !page_aligned(m.end) || m.start < previous_end || m.end <= m.start || m.end > d.user_size)
      refuse("a mapping overlaps another, is unaligned or leaves user memory");
    if (m.prot & ~(kvm::kProtRead | kvm::kProtWrite | kvm::kProtExec)) refuse("a mapping with unknown protection");
    if (m.fork_flags & ~(kvm::kWipeOnFork | kvm::kDontFork)) refuse("a mapping with unknown fork flags");
    previous_end = m.end;
  }
  uint64_t total = 0;
  previous_end = 0;
  for (const ExtentRecord& e : d.extents) {
    if (!page_aligned(e.gpa) || !page_aligned(e.bytes) || e.bytes == 0 || e.gpa < previous_end || e.bytes > d.user_size ||
        e.gpa > d.user_size - e.bytes)
      refuse("a memory extent overlaps another, is unaligned or leaves user memory");
    previous_end = e.gpa + e.bytes;
    total += e.bytes;  // cannot overflow: disjoint ranges inside user memory
  }
  if (total != h.memory_size) refuse("the memory extents do not add up to the memory image");
  if (d.chunk_hashes.size() != (total + kChunkBytes - 1) / kChunkBytes) refuse("wrong number of memory-image hashes");
  validate_threads(d);
  // Process.
  if (d.pid <= 0 || d.ppid < 0 || d.main_tid <= 0) refuse("process ids out of range");
  if (d.umask & ~0777u) refuse("umask out of range");
  if (d.nice < -20 || d.nice > 19) refuse("nice value out of range");
  for (uint64_t a : {d.brk_start, d.brk_current, d.stack_top, d.vdso_base, d.arg_start, d.arg_end, d.env_start, d.env_end})
    if (a > d.user_size) refuse("a process address outside user memory");
  if (d.vdso_base && (!page_aligned(d.vdso_base) || d.vdso_base < kvm::kUserMin + kvm::kPageSize)) refuse("vDSO address out of range");
  if (d.tsc_khz == 0 || d.tsc_khz > 100'000'000) refuse("TSC rate out of range");
  // The host shifts a 128-bit product by it when it first re-bases the clock page (linux/time.cpp).
  if (d.clock_shift >= 64) refuse("clock page shift out of range");
  validate_files(d);
  for (const TmpEntry& e : d.tmp) {
    const std::string p = "/" + e.path + "/";
    if (e.path.empty() || e.path[0] == '/' || p.find("/../") != std::string::npos || p.find("/./") != std::string::npos ||
        p.find("//") != std::string::npos || e.path.find('\0') != std::string::npos)
      refuse("a /tmp entry with a bad path");
    if (e.type != TmpEntry::Type::Directory && e.type != TmpEntry::Type::File && e.type != TmpEntry::Type::Symlink)
      refuse("a /tmp entry of an unknown type");
    if (e.mode & ~07777u) refuse("a /tmp entry with a bad mode");
  }
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

}  // namespace

uint64_t hash_bytes(const void* data, size_t size) { return XXH3_64bits(data, size); }

uint64_t Description::memory_bytes() const {
  uint64_t total = 0;
  for (const auto& e : extents) total += e.bytes;
  return total;
}

std::vector<uint8_t> encode(const Description& d_in) {
  Description d = d_in;
  std::vector<uint8_t> description;
  Writer w(description);
  fields(w, d);
  std::vector<uint8_t> out(kHeaderSize, 0);
  const uint64_t memory_offset = kvm::page_up(kHeaderSize + description.size());
  const uint64_t memory_size = d.memory_bytes();
  std::memcpy(out.data(), kMagic, sizeof kMagic);
  put_u32(out.data() + 8, kFormatVersion);
  put_u32(out.data() + 12, uint32_t(kHeaderSize));
  put_u64(out.data() + 16, memory_offset + memory_size);
  put_u64(out.data() + 24, kHeaderSize);
  put_u64(out.data() + 32, description.size());
  put_u64(out.data() + 40, hash_bytes(description.data(), description.size()));
  put_u64(out.data() + 48, memory_offset);
  put_u64(out.data() + 56, memory_size);
  std::memcpy(out.data() + 64, d.kvmserver_version.data(), std::min(d.kvmserver_version.size(), kVersionField - 1));
  put_u64(out.data() + kHeaderHashAt, hash_bytes(out.data(), kHeaderHashAt));
  out.insert(out.end(), description.begin(), description.end());
  out.resize(memory_offset, 0);
  return out;
}

Header decode_header(std::span<const uint8_t> b, uint64_t file_size) {
  if (b.size() < kHeaderSize || file_size < kHeaderSize) refuse("not a kvmserver snapshot (shorter than its header)");
  if (std::memcmp(b.data(), kMagic, sizeof kMagic) != 0) refuse("not a kvmserver snapshot (no snapshot header)");
  Header h;
  h.format = get_u32(b.data() + 8);
  const char* version = reinterpret_cast<const char*>(b.data() + 64);
  h.kvmserver_version.assign(version, strnlen(version, kVersionField - 1));
  for (char c : h.kvmserver_version)
    if (c < 0x20 || c > 0x7e) h.kvmserver_version = "?";
  if (h.format != kFormatVersion)
    refuse("snapshot format " + std::to_string(h.format) + " (made by kvmserver " + h.kvmserver_version +
           "); this kvmserver reads format " + std::to_string(kFormatVersion) + ": make the snapshot again");
  if (get_u64(b.data() + kHeaderHashAt) != hash_bytes(b.data(), kHeaderHashAt)) refuse("corrupted snapshot header (checksum mismatch)");
  if (get_u32(b.data() + 12) != kHeaderSize) refuse("snapshot header size is not " + std::to_string(kHeaderSize));
  for (size_t i = 64 + kVersionField; i < kHeaderHashAt; ++i)
    if (b[i]) refuse("snapshot header has bytes where none belong");
  h.file_size = get_u64(b.data() + 16);
  h.description_offset = get_u64(b.data() + 24);
  h.description_size = get_u64(b.data() + 32);
  h.description_hash = get_u64(b.data() + 40);
  h.memory_offset = get_u64(b.data() + 48);
  h.memory_size = get_u64(b.data() + 56);
  if (h.file_size != file_size)
    refuse("snapshot is " + std::to_string(file_size) + " bytes but its header says " + std::to_string(h.file_size) +
           " (truncated or extended)");
  if (h.description_offset != kHeaderSize || h.description_size == 0 || h.description_size > kMaxDescriptionBytes)
    refuse("snapshot description out of range");
  if (h.memory_offset != kvm::page_up(h.description_offset + h.description_size) || !page_aligned(h.memory_size) ||
      h.memory_size > kvm::kMaxUserSize || h.memory_offset + h.memory_size != h.file_size)
    refuse("snapshot memory image out of range");
  return h;
}

Description decode_description(const Header& h, std::span<const uint8_t> bytes) {
  if (bytes.size() != h.description_size) refuse("snapshot description truncated");
  if (hash_bytes(bytes.data(), bytes.size()) != h.description_hash) refuse("corrupted snapshot description (checksum mismatch)");
  Description d;
  Reader r(bytes);
  fields(r, d);
  if (!r.at_end()) refuse("description: bytes after its end");
  validate(h, d);
  return d;
}

void check_padding(std::span<const uint8_t> padding) {
  for (uint8_t b : padding)
    if (b) refuse("snapshot has bytes between its description and its memory image");
}

namespace {

void read_exactly(int fd, uint8_t* out, uint64_t size, uint64_t offset) {
  while (size > 0) {
    const ssize_t n = pread(fd, out, std::min<uint64_t>(size, 1 << 30), off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) refuse(std::string("cannot read: ") + strerror(errno));
    if (n == 0) refuse("truncated");
    out += n;
    offset += uint64_t(n);
    size -= uint64_t(n);
  }
}

}  // namespace

Description read_description(int fd, Header* header_out) {
  struct stat st{};
  if (fstat(fd, &st) != 0) refuse(std::string("cannot stat: ") + strerror(errno));
  if (!S_ISREG(st.st_mode)) refuse("not a regular file");
  std::vector<uint8_t> head(kHeaderSize);
  if (uint64_t(st.st_size) < kHeaderSize) refuse("not a kvmserver snapshot (shorter than its header)");
  read_exactly(fd, head.data(), kHeaderSize, 0);
  const Header h = decode_header(head, uint64_t(st.st_size));
  std::vector<uint8_t> description(h.description_size);
  read_exactly(fd, description.data(), description.size(), h.description_offset);
  Description d = decode_description(h, description);
  // The padding up to the memory image is covered by no checksum: it must be zeros.
  std::vector<uint8_t> padding(h.memory_offset - h.description_offset - h.description_size);
  read_exactly(fd, padding.data(), padding.size(), h.description_offset + h.description_size);
  check_padding(padding);
  if (header_out) *header_out = h;
  return d;
}

void verify_memory(int fd, const Header& h, const Description& d) {
  std::vector<uint8_t> chunk(kChunkBytes);
  for (uint64_t i = 0, done = 0; done < h.memory_size; ++i, done += kChunkBytes) {
    const uint64_t n = std::min(kChunkBytes, h.memory_size - done);
    read_exactly(fd, chunk.data(), n, h.memory_offset + done);
    if (hash_bytes(chunk.data(), n) != d.chunk_hashes[i])
      refuse("corrupted memory image: chunk " + std::to_string(i) + " (bytes " + std::to_string(done) + "..." +
             std::to_string(done + n) + " of the image) does not match its checksum");
  }
}

std::string missing_cpu_features(const Description& d, const std::vector<CpuidLeaf>& host, uint64_t host_xcr0) {
  struct Register {
    uint32_t function, index;
    int reg;  // 0 eax, 1 ebx, 2 ecx, 3 edx
    uint32_t ignore;
    const char* name;
  };
  // The feature leaves user code tests before using an instruction set (glibc's ifuncs, V8's JIT).
  // OSXSAVE and "running under a hypervisor" describe the setup, not the CPU.
  static const Register kFeatureRegisters[] = {
      {1, 0, 2, (1u << 27) | (1u << 31), "CPUID.1:ECX"}, {1, 0, 3, 0, "CPUID.1:EDX"},
      {7, 0, 1, 0, "CPUID.7:EBX"}, {7, 0, 2, 0, "CPUID.7:ECX"}, {7, 0, 3, 0, "CPUID.7:EDX"},
      {7, 1, 0, 0, "CPUID.7.1:EAX"}, {0xd, 1, 0, 0, "CPUID.D.1:EAX"},
      {0x80000001, 0, 2, 0, "CPUID.80000001:ECX"}, {0x80000001, 0, 3, 0, "CPUID.80000001:EDX"},
  };
  auto find = [](const std::vector<CpuidLeaf>& leaves, uint32_t function, uint32_t index) -> const CpuidLeaf* {
    for (const auto& l : leaves)
      if (l.function == function && (l.index == index || function == 1 || function == 0x80000001)) return &l;
    return nullptr;
  };
  auto reg = [](const CpuidLeaf& l, int r) { return r == 0 ? l.eax : r == 1 ? l.ebx : r == 2 ? l.ecx : l.edx; };
  std::string missing;
  auto add = [&](const std::string& s) { missing += (missing.empty() ? "" : ", ") + s; };
  for (const Register& r : kFeatureRegisters) {
    const CpuidLeaf* saved = find(d.cpuid, r.function, r.index);
    if (!saved) continue;
    const CpuidLeaf* here = find(host, r.function, r.index);
    const uint32_t lacking = (reg(*saved, r.reg) & ~r.ignore) & ~(here ? reg(*here, r.reg) : 0);
    for (int bit = 0; bit < 32; ++bit)
      if (lacking & (1u << bit)) add(std::string(r.name) + " bit " + std::to_string(bit));
  }
  if (d.xcr0 & ~host_xcr0) add("XSAVE components 0x" + hex(d.xcr0 & ~host_xcr0).substr(8));
  // The XSAVE area's layout must be the same for every component the guest uses.
  for (uint32_t c = 2; c < 64; ++c) {
    if (!(d.xcr0 & (1ull << c)) || !(host_xcr0 & (1ull << c))) continue;
    const CpuidLeaf* saved = find(d.cpuid, 0xd, c);
    const CpuidLeaf* here = find(host, 0xd, c);
    if (saved && (!here || saved->eax != here->eax || saved->ebx != here->ebx))
      add("XSAVE component " + std::to_string(c) + " at another offset or size");
  }
  return missing;
}

std::string describe(const Header& h, const Description& d) {
  std::string s;
  auto line = [&](const std::string& key, const std::string& value) { s += key + ": " + value + "\n"; };
  auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& e : v) out += (out.empty() ? "" : " ") + e;
    return out;
  };
  line("format", std::to_string(h.format) + " (kvmserver " + d.kvmserver_version + ")");
  char when[64] = "?";
  const time_t t = time_t(d.created_unix);
  if (tm parts{}; gmtime_r(&t, &parts)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &parts);
  line("created", when);
  line("program", d.program + " (" + d.exe_path + ")");
  line("argv", join(d.argv));
  line("cwd", d.cwd);
  line("environment", std::to_string(d.envp.size()) + " variables");
  std::vector<std::string> grants;
  if (d.allow_all) grants.push_back("--allow-all");
  if (d.read_all) grants.push_back("--allow-read");
  if (d.write_all) grants.push_back("--allow-write");
  for (const auto& p : d.read) grants.push_back("--allow-read=" + p);
  for (const auto& p : d.write) grants.push_back("--allow-write=" + p);
  for (const auto& v : d.volumes) grants.push_back("--volume=" + v.host + ":" + v.guest + (v.writable ? ":rw" : ":ro"));
  if (d.listen_all) grants.push_back("--allow-listen");
  if (d.connect_all) grants.push_back("--allow-connect");
  for (const auto& a : d.listen) grants.push_back("--allow-listen=" + a);
  for (const auto& a : d.connect) grants.push_back("--allow-connect=" + a);
  line("grants", grants.empty() ? "(none)" : join(grants));
  std::vector<std::string> listeners;
  for (const auto& f : d.files)
    if (f.kind == FileRecord::Kind::Listener) {
      sockaddr_storage ss{};
      std::memcpy(&ss, f.address.data(), std::min(f.address.size(), sizeof ss));
      char host[INET6_ADDRSTRLEN] = "?";
      uint16_t port = 0;
      if (ss.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        listeners.push_back(std::string(host) + ":" + std::to_string(port));
      } else if (ss.ss_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        listeners.push_back("[" + std::string(host) + "]:" + std::to_string(port));
      }
    }
  line("listeners", listeners.empty() ? "(none)" : join(listeners));
  const char* wait = linux::syscall_name(d.wait_syscall);
  line("waiting in", wait ? wait : "syscall " + std::to_string(d.wait_syscall));
  uint64_t mapped = 0;
  for (const auto& m : d.mappings)
    if (m.prot) mapped += m.end - m.start;
  line("memory", std::to_string(h.memory_size >> 10) + " KiB saved in " + std::to_string(d.extents.size()) + " extents; " +
                     std::to_string(mapped >> 10) + " KiB mapped in " + std::to_string(d.mappings.size()) +
                     " mappings; address space " + std::to_string(d.user_size >> 30) + " GiB");
  line("threads", std::to_string(d.threads.size()));
  line("open files", std::to_string(d.fds.size()) + " fds, " + std::to_string(d.files.size()) + " open files" +
                         (d.private_tmp ? ", private /tmp with " + std::to_string(d.tmp.size()) + " entries" : ""));
  line("cpu", "XCR0 0x" + hex(d.xcr0).substr(8) + ", " + std::to_string(d.cpuid.size()) + " CPUID leaves");
  line("file", std::to_string(h.file_size) + " bytes; description checksum " + hex(h.description_hash) + " (XXH3-64), " +
                   std::to_string(d.chunk_hashes.size()) + " memory chunk checksums");
  return s;
}

}  // namespace kvms::snapshot
