#pragma once
// Snapshot files for tests (no KVM): a valid Description of a small server, the whole file it
// makes, and a corpus of files kvmserver must refuse (truncated, extended, bit-flipped, and
// hand-crafted ones whose hashes are right, so that the checks behind the hashes are reached).
// Shared by tests/unit/test_snapshot_format.cpp, which checks that each is refused, and
// tests/fuzz/snapshot_corpus.cpp, which writes them out as the snapshot fuzzer's corpus.
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/layout.hpp"
#include "snapshot/format.hpp"

namespace kvms::snapshot::samples {

// File layout (src/snapshot/format.cpp), to craft headers by hand.
inline constexpr size_t kMagicAt = 0, kFormatAt = 8, kHeaderSizeAt = 12, kFileSizeAt = 16, kDescriptionOffsetAt = 24,
                        kDescriptionSizeAt = 32, kDescriptionHashAt = 40, kMemoryOffsetAt = 48, kMemorySizeAt = 56,
                        kVersionAt = 64, kHeaderHashAt = kHeaderSize - 8;

inline uint64_t get_u64(std::span<const uint8_t> b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
inline void put_u64(std::vector<uint8_t>& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }
inline void put_u32(std::vector<uint8_t>& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }

// The header hash again, after a header field was patched.
inline void reseal_header(std::vector<uint8_t>& file) {
  put_u64(file, kHeaderHashAt, hash_bytes(file.data(), kHeaderHashAt));
}
// Both hashes again, after description bytes were patched (the description's size unchanged).
inline void reseal(std::vector<uint8_t>& file) {
  const uint64_t size = get_u64(file, kDescriptionSizeAt);
  put_u64(file, kDescriptionHashAt, hash_bytes(file.data() + kHeaderSize, size));
  reseal_header(file);
}

// A whole file around any description bytes: a correct header (sizes, offsets, both hashes), the
// description, padding to a page, then `memory_size` bytes of memory image.
inline std::vector<uint8_t> seal(std::span<const uint8_t> description, uint64_t memory_size,
                                 const std::string& version = "test-1.0") {
  const uint64_t memory_offset = kvm::page_up(kHeaderSize + description.size());
  std::vector<uint8_t> file(memory_offset + memory_size, 0);
  std::memcpy(file.data() + kMagicAt, "KVMSSNAP", 8);
  put_u32(file, kFormatAt, kFormatVersion);
  put_u32(file, kHeaderSizeAt, uint32_t(kHeaderSize));
  put_u64(file, kFileSizeAt, file.size());
  put_u64(file, kDescriptionOffsetAt, kHeaderSize);
  put_u64(file, kDescriptionSizeAt, description.size());
  put_u64(file, kMemoryOffsetAt, memory_offset);
  put_u64(file, kMemorySizeAt, memory_size);
  std::memcpy(file.data() + kVersionAt, version.data(), std::min<size_t>(version.size(), 63));
  std::copy(description.begin(), description.end(), file.begin() + kHeaderSize);
  reseal(file);
  return file;
}

// The whole file a description makes: encode()'s bytes, then its memory image (zeros).
inline std::vector<uint8_t> file_of(const Description& d) {
  std::vector<uint8_t> file = encode(d);
  file.resize(file.size() + d.memory_bytes(), 0);
  return file;
}

// What kvmserver does with a file: the header, the description it points at, the padding. Throws
// SnapshotError.
inline Description decode_file(std::span<const uint8_t> file, Header* header = nullptr) {
  const Header h = decode_header(file, file.size());
  Description d = decode_description(h, file.subspan(h.description_offset, h.description_size));
  const uint64_t padding_at = h.description_offset + h.description_size;
  check_padding(file.subspan(padding_at, h.memory_offset - padding_at));
  if (header) *header = h;
  return d;
}

// A thread in 64-bit user mode as kvmserver sets one up (kvm::user_mode_sregs needs /dev/kvm).
inline kvm_sregs user_sregs() {
  kvm_sregs s{};
  s.cs = {.base = 0, .limit = 0xffffffff, .selector = kvm::kUserCs, .type = 0xb, .present = 1, .dpl = 3, .db = 0,
          .s = 1, .l = 1, .g = 1};
  s.ss = {.base = 0, .limit = 0xffffffff, .selector = kvm::kUserDs, .type = 3, .present = 1, .dpl = 3, .db = 1, .s = 1,
          .l = 0, .g = 1};
  s.ds = s.es = s.ss;
  // A thread-local storage base (arch_prctl(ARCH_SET_FS)); gs unused.
  s.fs = {.base = 0x7f00'0000'1000, .limit = 0xffffffff, .selector = 0, .type = 3, .present = 1, .dpl = 3, .db = 1,
          .s = 1, .l = 0, .g = 1};
  s.gs.unusable = 1;
  s.tr = {.base = kvm::kKernelVirt + kvm::kTssOffset, .limit = kvm::kTssSize - 1, .selector = kvm::kTssSelBase,
          .type = 0xb, .present = 1};
  s.ldt.unusable = 1;
  s.gdt = {.base = kvm::kKernelVirt + kvm::kGdtOffset, .limit = kvm::kGdtLimit};
  s.idt = {.base = kvm::kKernelVirt + kvm::kIdtOffset, .limit = 32 * 16 - 1};
  s.cr0 = 0x80010033;  // PE MP ET NE WP PG
  s.cr3 = 0x80'0001'0000;
  s.cr4 = 0x406a0;     // PAE PGE OSFXSR OSXMMEXCPT OSXSAVE
  s.efer = 0xd01;      // SCE LME LMA NXE
  s.apic_base = 0xfee00900;
  return s;
}

// An XSAVE area XRSTOR takes with XCR0 = x87|SSE|AVX: FCW and MXCSR at their reset values, x87 and
// SSE state present (XSTATE_BV 3), standard format.
inline std::array<uint32_t, 1024> user_xsave() {
  std::array<uint32_t, 1024> a{};
  a[0] = 0x37f;        // FCW
  a[6] = 0x1f80;       // MXCSR
  a[40] = 0x12345678;  // XMM0's low bits
  a[128] = 0x3;        // XSTATE_BV
  return a;
}

inline sockaddr_in inet_address(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// A paused single-threaded HTTP server: every field set (to values validation takes) so that a
// field the schema dropped would show in a round trip.
inline Description valid_description() {
  Description d;
  d.kvmserver_version = "test-1.0";
  d.created_unix = 1'700'000'000;
  d.xcr0 = 0x7;
  d.cpuid = {{0, 0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69},
             {1, 0, 0x906ea, 0x00100800, 0x7ffafbff, 0xbfebfbff},
             {7, 0, 0, 0x029c6fbf, 0x40000000, 0xbc000400},
             {0xd, 0, 0x7, 0x340, 0x340, 0},
             {0xd, 1, 0xf, 0, 0, 0},
             {0xd, 2, 0x100, 0x240, 0, 0},
             {0x80000001, 0, 0, 0, 0x121, 0x2c100800}};
  d.program = "/srv/app/server";
  d.exe_path = "/srv/app/server";
  d.argv = {"/srv/app/server", "--port", "8080"};
  d.envp = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8"};
  d.cwd = "/";
  d.wait_syscall = SYS_epoll_wait;
  d.read_all = true;
  d.listen_all = false;
  d.read = {"/srv/app"};
  d.write = {"/srv/data"};
  d.listen = {"127.0.0.1:8080"};
  d.connect = {"127.0.0.1:5432"};
  d.always_readable = {"/etc/localtime"};
  d.volumes = {{"/var/www", "/www", false}, {"/var/cache/app", "/cache", true}};
  d.hostname = "kvms-test";
  d.user_size = 64ull << 30;
  d.kernel_size = 64ull << 20;
  d.mappings = {{0x10000, 0x11000, kvm::kProtRead, 0, "[vvar]"},
                {0x11000, 0x13000, kvm::kProtRead | kvm::kProtExec, 0, "[vdso]"},
                {0x400000, 0x480000, kvm::kProtRead | kvm::kProtExec, 0, "/srv/app/server"},
                {0x480000, 0x490000, kvm::kProtRead | kvm::kProtWrite, kvm::kWipeOnFork, "[heap]"},
                {0xf'ff00'0000, 0xf'ff10'0000, kvm::kProtRead | kvm::kProtWrite, kvm::kDontFork, "[stack]"}};
  d.extents = {{0x10000, 0x1000}, {0x400000, 0x1000}, {0xf'ff0f'f000, 0x1000}};
  const std::vector<uint8_t> image(d.memory_bytes(), 0);
  d.chunk_hashes = {hash_bytes(image.data(), image.size())};
  ThreadRecord t;
  t.tid = 41;
  t.pending = true;
  t.regs.rax = uint64_t(-4);  // EINTR, say
  t.regs.rbx = 2, t.regs.rcx = 0x401234, t.regs.rdx = 64, t.regs.rsi = 0x480100, t.regs.rdi = 5;
  t.regs.rsp = 0xf'ff0f'ff00, t.regs.rbp = 0xf'ff0f'ff80, t.regs.r8 = 8, t.regs.r9 = 9, t.regs.r10 = 1000;
  t.regs.r11 = 0x246, t.regs.r12 = 12, t.regs.r13 = 13, t.regs.r14 = 14, t.regs.r15 = 15;
  t.regs.rip = 0x401234;
  t.regs.rflags = 0x246;  // IF ZF PF
  t.sregs = user_sregs();
  t.xcr0 = d.xcr0;
  t.xsave = user_xsave();
  t.clear_child_tid = 0x480200, t.robust_list = 0x480300, t.robust_list_len = 24, t.rseq = 0x480400, t.rseq_len = 32;
  t.sigmask = 1ull << (SIGPIPE - 1), t.altstack_sp = 0x480800, t.altstack_size = 0x2000, t.altstack_flags = 0;
  t.comm = "server";
  d.threads = {t};
  d.pid = 41, d.ppid = 1, d.main_tid = 41;
  d.uid = 1000, d.gid = 1000, d.umask = 022, d.nice = 5;
  d.brk_start = 0x480000, d.brk_current = 0x490000, d.stack_top = 0xf'ff10'0000, d.stack_size = 8 << 20;
  d.vdso_base = 0x11000;
  d.arg_start = 0xf'ff0f'fa00, d.arg_end = 0xf'ff0f'fa20, d.env_start = 0xf'ff0f'fa20, d.env_end = 0xf'ff0f'fa60;
  d.sigactions[SIGINT] = {0x401000, 0x04000000 /* SA_RESTORER */, 0x401100, 1ull << (SIGTERM - 1)};
  d.sigactions[SIGPIPE] = {1 /* SIG_IGN */, 0, 0, 0};
  for (size_t r = 0; r < d.rlimits.size(); ++r) d.rlimits[r] = {1000 + r, 2000 + r};
  d.fd_limit = 1024;
  d.guest_tsc = 123'456'789'000, d.tsc_khz = 2'000'000;
  d.clock_seq = 6, d.clock_shift = 32, d.clock_mult = 2147483648, d.clock_tsc_base = 123'000'000'000;
  d.clock_monotonic_base_ns = 61'500'000'000, d.clock_realtime_offset_ns = 1'699'999'000'000'000'000;
  d.clock_boottime_offset_ns = 1'000;

  using Kind = FileRecord::Kind;
  auto stdio = [](int n) {
    FileRecord f;
    f.kind = Kind::Stdio;
    f.guest_path = n == 0 ? "/dev/stdin" : n == 1 ? "/dev/stdout" : "/dev/stderr";
    f.status_flags = n == 0 ? 0 : 1;
    f.stdio = n;
    return f;
  };
  FileRecord regular;
  regular.kind = Kind::Regular;
  regular.guest_path = "/srv/app/index.html";
  regular.offset = 512, regular.dev = 0x803, regular.ino = 123456, regular.size = 4096, regular.mtime_ns = 1'690'000'000'123'456'789;
  FileRecord directory;
  directory.kind = Kind::Directory;
  directory.guest_path = "/srv/app";
  directory.status_flags = 0200000;  // O_DIRECTORY
  directory.offset = 3;
  FileRecord device;
  device.kind = Kind::Device;
  device.guest_path = "/dev/urandom";
  FileRecord pipe_read, pipe_write;
  pipe_read.kind = pipe_write.kind = Kind::PipeEnd;
  pipe_read.guest_path = pipe_write.guest_path = "pipe:[7]";
  pipe_read.pipe_id = pipe_write.pipe_id = 7;
  pipe_write.status_flags = 1;
  pipe_read.nonblocking = true;
  FileRecord eventfd;
  eventfd.kind = Kind::EventFd;
  eventfd.guest_path = "anon_inode:[eventfd]";
  eventfd.count = 3, eventfd.semaphore = true, eventfd.nonblocking = true;
  FileRecord timer;
  timer.kind = Kind::TimerFd;
  timer.guest_path = "anon_inode:[timerfd]";
  timer.clock = CLOCK_MONOTONIC, timer.interval_ns = 1'000'000'000, timer.value_ns = 250'000'000, timer.count = 1;
  FileRecord listener;
  listener.kind = Kind::Listener;
  listener.guest_path = "socket:[9]";
  listener.status_flags = 04000;  // O_NONBLOCK
  listener.nonblocking = true;
  listener.family = AF_INET, listener.type = SOCK_STREAM, listener.protocol = 0;
  const sockaddr_in address = inet_address(8080);
  listener.address.assign(reinterpret_cast<const char*>(&address), sizeof address);
  listener.reuse_address = true, listener.reuse_port = true;
  FileRecord listener6 = listener;
  listener6.guest_path = "socket:[10]";
  listener6.family = AF_INET6, listener6.v6_only = true;
  sockaddr_in6 address6{};
  address6.sin6_family = AF_INET6;
  address6.sin6_port = htons(8443);
  address6.sin6_addr = in6addr_loopback;
  listener6.address.assign(reinterpret_cast<const char*>(&address6), sizeof address6);
  FileRecord epoll;
  epoll.kind = Kind::Epoll;
  epoll.guest_path = "anon_inode:[eventpoll]";
  epoll.interest = {{3, EPOLLIN, 3}, {7, EPOLLIN | EPOLLET, 0xdeadbeef}, {9, EPOLLIN, 9}};
  d.files = {stdio(0), stdio(1), stdio(2), listener, epoll, regular, directory, device, pipe_read, pipe_write, eventfd, timer,
             listener6};
  d.fds = {{0, 0, false}, {1, 1, false}, {2, 2, false}, {3, 3, true}, {4, 4, true}, {5, 5, true}, {6, 6, true},
           {7, 7, true}, {8, 8, true}, {9, 9, true}, {10, 10, true}, {11, 11, true}, {12, 12, true}, {20, 1, false}};
  d.private_tmp = true;
  d.tmp = {{TmpEntry::Type::Directory, "cache", 0755, ""},
           {TmpEntry::Type::File, "cache/session", 0600, "token=abc"},
           {TmpEntry::Type::Symlink, "latest", 0777, "cache/session"}};
  return d;
}

// A file kvmserver must refuse.
struct BadFile {
  std::string kind;      // which family of corruption (truncated, extended, flip, crafted...)
  std::string what;      // what exactly was done (a failure message, part of a corpus file's name)
  std::string expected;  // a part of the error message it must be refused with ("": any SnapshotError)
  std::vector<uint8_t> bytes;
};

namespace detail {

// Where, in the file of `d`, the first byte differs from the file of `changed` (past the header):
// with `changed` differing from `d` in one table's length or one string's length, the offset of that
// length field (little-endian: its low byte comes first).
inline size_t first_difference(const Description& d, const Description& changed) {
  const auto a = encode(d), b = encode(changed);
  for (size_t i = kHeaderSize; i < std::min(a.size(), b.size()); ++i)
    if (a[i] != b[i]) return i;
  return a.size();
}

inline std::vector<uint8_t> patched_u64(const std::vector<uint8_t>& file, size_t at, uint64_t value) {
  std::vector<uint8_t> f = file;
  put_u64(f, at, value);
  reseal(f);
  return f;
}

}  // namespace detail

// Every bad file made from the valid description `d` (valid_description()): `visit` is called once
// for each (several thousand). `flip_stride` and `truncate_stride` space the bit flips in the
// description and the truncation lengths (every byte of the header is flipped in any case).
inline void for_each_bad_file(const Description& d, const std::function<void(const BadFile&)>& visit,
                              size_t flip_stride = 2, size_t truncate_stride = 3) {
  const std::vector<uint8_t> good = file_of(d);
  const uint64_t description_size = get_u64(good, kDescriptionSizeAt);
  const uint64_t description_end = kHeaderSize + description_size;
  const uint64_t memory_offset = get_u64(good, kMemoryOffsetAt);

  // Truncated: every length (in steps) across the header and the description, then a few into the
  // memory image; extended by a byte, a page, more.
  for (size_t n = 0; n < description_end; n += truncate_stride)
    visit({"truncated", "to " + std::to_string(n) + " bytes", "", {good.begin(), good.begin() + ptrdiff_t(n)}});
  for (size_t n : {description_end, memory_offset - 1, memory_offset, memory_offset + 1, good.size() - 4096, good.size() - 1})
    visit({"truncated", "to " + std::to_string(n) + " bytes", "", {good.begin(), good.begin() + ptrdiff_t(n)}});
  for (size_t extra : {size_t(1), size_t(8), size_t(4096), size_t(65536)}) {
    std::vector<uint8_t> f = good;
    f.resize(f.size() + extra, 0x5a);
    visit({"extended", "by " + std::to_string(extra) + " bytes", "(truncated or extended)", f});
  }
  // A truncated file whose header was made to agree with its size.
  for (size_t n : {memory_offset, good.size() - 4096}) {
    std::vector<uint8_t> f(good.begin(), good.begin() + ptrdiff_t(n));
    put_u64(f, kFileSizeAt, n);
    reseal_header(f);
    visit({"crafted", "truncated to " + std::to_string(n) + " bytes, header's file size patched", "memory image out of range", f});
  }

  // One bit flipped: at every byte of the header, at every flip_stride-th byte of the description.
  for (size_t i = 0; i < description_end; i += (i < kHeaderSize ? 1 : flip_stride)) {
    std::vector<uint8_t> f = good;
    const int bit = int((i * 5 + i / 8) % 8);
    f[i] ^= uint8_t(1u << bit);
    visit({"flip", "bit " + std::to_string(bit) + " of byte " + std::to_string(i), "", f});
  }

  // Header fields patched, with the header hash made right again.
  struct HeaderPatch {
    const char* what;
    size_t at;
    uint64_t value;
    int width;
    const char* expected;
  };
  const HeaderPatch header_patches[] = {
      {"format 2", kFormatAt, 2, 4, "format 2"},
      {"format 0", kFormatAt, 0, 4, "format 0"},
      {"format 0xffffffff", kFormatAt, 0xffffffff, 4, "format"},
      {"magic", kMagicAt, 0x50414e53534d564cull /* "LVMSSNAP" */, 8, "not a kvmserver snapshot"},
      {"header size 4097", kHeaderSizeAt, 4097, 4, "header size"},
      {"header size 0", kHeaderSizeAt, 0, 4, "header size"},
      {"file size + 1", kFileSizeAt, good.size() + 1, 8, "truncated or extended"},
      {"file size 0", kFileSizeAt, 0, 8, "truncated or extended"},
      {"description offset 0", kDescriptionOffsetAt, 0, 8, "description out of range"},
      {"description offset 8192", kDescriptionOffsetAt, 8192, 8, "description out of range"},
      {"description size 0", kDescriptionSizeAt, 0, 8, "description out of range"},
      {"description size 2^63", kDescriptionSizeAt, 1ull << 63, 8, "description out of range"},
      {"description size 257 MiB", kDescriptionSizeAt, 257ull << 20, 8, "description out of range"},
      {"description size + 1 page", kDescriptionSizeAt, description_size + 4096, 8, "memory image out of range"},
      {"description size - 1", kDescriptionSizeAt, description_size - 1, 8, ""},
      {"description hash", kDescriptionHashAt, 0x1234, 8, "checksum mismatch"},
      {"memory offset + 1", kMemoryOffsetAt, memory_offset + 1, 8, "memory image out of range"},
      {"memory offset + 1 page", kMemoryOffsetAt, memory_offset + 4096, 8, "memory image out of range"},
      {"memory offset 0", kMemoryOffsetAt, 0, 8, "memory image out of range"},
      {"memory size + 1", kMemorySizeAt, d.memory_bytes() + 1, 8, "memory image out of range"},
      {"memory size 2^63", kMemorySizeAt, 1ull << 63, 8, "memory image out of range"},
      {"memory size ~0", kMemorySizeAt, ~0ull, 8, "memory image out of range"},
      {"memory size - 1 page", kMemorySizeAt, d.memory_bytes() - 4096, 8, "memory image out of range"},
      {"a reserved byte", 200, 1, 1, "bytes where none belong"},
      {"the last reserved byte", kHeaderHashAt - 1, 0x80, 1, "bytes where none belong"},
      {"the version", kVersionAt, 'X', 1, "disagree on the kvmserver version"},
  };
  for (const HeaderPatch& p : header_patches) {
    std::vector<uint8_t> f = good;
    std::memcpy(f.data() + p.at, &p.value, size_t(p.width));
    reseal_header(f);
    visit({"crafted", std::string("header: ") + p.what, p.expected, f});
    if (p.at == kFormatAt) {  // another format is named as such even when the hash does not match
      f[kHeaderHashAt] ^= 1;
      visit({"crafted", std::string("header: ") + p.what + ", header hash wrong", p.expected, f});
    }
  }

  // Descriptions cut short (or lengthened) with both hashes right: the reader's bounds.
  const std::span<const uint8_t> description(good.data() + kHeaderSize, description_size);
  for (size_t n = 0; n < description_size; n += truncate_stride * 4)
    visit({"sealed", "description cut to " + std::to_string(n) + " bytes", "", seal(description.first(n), d.memory_bytes())});
  for (size_t n = description_size - 64; n < description_size; ++n)
    visit({"sealed", "description cut to " + std::to_string(n) + " bytes", "", seal(description.first(n), d.memory_bytes())});
  {
    std::vector<uint8_t> longer(description.begin(), description.end());
    longer.push_back(0);
    visit({"sealed", "a byte after the description", "bytes after its end", seal(longer, d.memory_bytes())});
    visit({"sealed", "memory image a page longer than the extents", "do not add up", seal(description, d.memory_bytes() + 4096)});
    visit({"sealed", "memory image a page shorter than the extents", "do not add up", seal(description, d.memory_bytes() - 4096)});
    visit({"sealed", "no memory image", "do not add up", seal(description, 0)});
  }

  // Length fields patched to what no file of this size can hold, or to one more or less.
  struct Length {
    const char* what;
    std::function<void(Description&)> change;  // changes that length only
  };
  const Length lengths[] = {
      {"version string", [](Description& x) { x.kvmserver_version += "x"; }},
      {"cpuid table", [](Description& x) { x.cpuid.pop_back(); }},
      {"program string", [](Description& x) { x.program += "x"; }},
      {"argv table", [](Description& x) { x.argv.pop_back(); }},
      {"argv[0] string", [](Description& x) { x.argv[0] += "x"; }},
      {"envp table", [](Description& x) { x.envp.pop_back(); }},
      {"cwd string", [](Description& x) { x.cwd += "x"; }},
      {"read-grant table", [](Description& x) { x.read.clear(); }},
      {"always-readable table", [](Description& x) { x.always_readable.clear(); }},
      {"volume table", [](Description& x) { x.volumes.pop_back(); }},
      {"hostname string", [](Description& x) { x.hostname += "x"; }},
      {"mapping table", [](Description& x) { x.mappings.pop_back(); }},
      {"mapping name string", [](Description& x) { x.mappings[0].name += "x"; }},
      {"extent table", [](Description& x) { x.extents.pop_back(); }},
      {"chunk hash table", [](Description& x) { x.chunk_hashes.pop_back(); }},
      {"thread table", [](Description& x) { x.threads.clear(); }},
      {"thread name string", [](Description& x) { x.threads[0].comm += "x"; }},
      {"file table", [](Description& x) { x.files.pop_back(); }},
      {"file path string", [](Description& x) { x.files[0].guest_path += "x"; }},
      {"listener address string", [](Description& x) { x.files[3].address += "x"; }},
      {"epoll interest table", [](Description& x) { x.files[4].interest.pop_back(); }},
      {"fd table", [](Description& x) { x.fds.pop_back(); }},
      {"tmp table", [](Description& x) { x.tmp.pop_back(); }},
      {"tmp data string", [](Description& x) { x.tmp[1].data += "x"; }},
  };
  for (const Length& l : lengths) {
    Description changed = d;
    l.change(changed);
    const size_t at = detail::first_difference(d, changed);
    const uint64_t now = get_u64(good, at);
    for (uint64_t value : {now + 1, now - 1, now + 2, now * 2 + 1, uint64_t(129), uint64_t(65531), uint64_t(65537),
                           uint64_t(1) << 20 | 1, uint64_t(1) << 24 | 1, uint64_t(0xffffffff), uint64_t(1) << 32,
                           uint64_t(1) << 59, uint64_t(1) << 63, ~uint64_t(0), ~uint64_t(0) / 4096 + 1}) {
      if (value == now) continue;
      visit({"patched", std::string(l.what) + " at description byte " + std::to_string(at - kHeaderSize) + " set to " +
                            std::to_string(value),
             "", detail::patched_u64(good, at, value)});
    }
  }
  // A flag that is neither 0 nor 1.
  {
    Description changed = d;
    changed.allow_all = true;
    const size_t at = detail::first_difference(d, changed);
    for (uint8_t value : {2, 0x80, 0xff}) {
      std::vector<uint8_t> f = good;
      f[at] = value;
      reseal(f);
      visit({"patched", "--allow-all flag " + std::to_string(value), "neither 0 nor 1", f});
    }
  }

  // Descriptions kvmserver could encode but must not load (encode() makes the hashes right).
  struct Crafted {
    const char* what;
    const char* expected;
    std::function<void(Description&)> change;
  };
  using Kind = FileRecord::Kind;
  const Crafted crafted[] = {
      // Strings past their bounds.
      // (a 64-byte version fits the description but not the header's field, which keeps 63)
      {"version of 64 characters", "disagree", [](Description& x) { x.kvmserver_version = std::string(64, 'v'); }},
      {"version of 65 characters", "longer than 64", [](Description& x) { x.kvmserver_version = std::string(65, 'v'); }},
      {"program path of 4097 bytes", "longer than 4096", [](Description& x) { x.program = "/" + std::string(4096, 'p'); }},
      {"hostname of 65 bytes", "longer than 64", [](Description& x) { x.hostname = std::string(65, 'h'); }},
      {"thread name of 16 bytes", "longer than 15", [](Description& x) { x.threads[0].comm = std::string(16, 'c'); }},
      {"listener address of 129 bytes", "longer than 128", [](Description& x) { x.files[3].address.resize(129); }},
      // The program.
      {"XCR0 without SSE", "XCR0 without x87 and SSE", [](Description& x) { x.xcr0 = x.threads[0].xcr0 = 1; }},
      {"no program", "no program", [](Description& x) { x.program.clear(); }},
      {"no argv", "no program", [](Description& x) { x.argv.clear(); }},
      {"relative working directory", "working directory", [](Description& x) { x.cwd = "srv"; }},
      {"empty working directory", "working directory", [](Description& x) { x.cwd.clear(); }},
      {"paused in read", "not paused in a wait", [](Description& x) { x.wait_syscall = SYS_read; }},
      {"paused in syscall ~0", "not paused in a wait", [](Description& x) { x.wait_syscall = ~0ull; }},
      // Memory sizes.
      {"no user memory", "user memory size", [](Description& x) { x.user_size = 0; }},
      {"user memory into the kernel area", "user memory size", [](Description& x) { x.user_size = kvm::kMaxUserSize + 4096; }},
      {"user memory of 2^64 - 4096", "user memory size", [](Description& x) { x.user_size = ~0ull << 12; }},
      {"unaligned user memory", "user memory size", [](Description& x) { x.user_size += 1; }},
      {"kernel area of a page", "kernel area size", [](Description& x) { x.kernel_size = 4096; }},
      {"kernel area of 2 GiB", "kernel area size", [](Description& x) { x.kernel_size = 2ull << 30; }},
      {"unaligned kernel area", "kernel area size", [](Description& x) { x.kernel_size += 8; }},
      // Mappings.
      {"overlapping mappings", "a mapping overlaps", [](Description& x) { x.mappings[2].start = x.mappings[1].end - 4096; }},
      {"the same mapping twice", "a mapping overlaps",
       [](Description& x) { x.mappings.insert(x.mappings.begin() + 2, x.mappings[2]); }},
      {"mappings out of order", "a mapping overlaps", [](Description& x) { std::swap(x.mappings[0], x.mappings[2]); }},
      {"mapping below the lowest user address", "a mapping overlaps",
       [](Description& x) { x.mappings[0].start = 0; }},
      {"mapping past user memory", "leaves user memory", [](Description& x) { x.mappings.back().end = x.user_size + 4096; }},
      {"mapping at the kernel area", "leaves user memory",
       [](Description& x) { x.mappings.push_back({x.user_size, x.user_size + 4096, kvm::kProtRead, 0, "k"}); }},
      {"mapping at the kernel area's guest-physical base", "leaves user memory",
       [](Description& x) { x.mappings.push_back({kvm::kKernelPhys, kvm::kKernelPhys + 4096, kvm::kProtRead, 0, "k"}); }},
      {"mapping at the kernel's virtual address", "leaves user memory",
       [](Description& x) { x.mappings.push_back({kvm::kKernelVirt, kvm::kKernelVirt + 4096, kvm::kProtRead, 0, "k"}); }},
      {"mapping wrapping around", "leaves user memory",
       [](Description& x) { x.mappings.push_back({~0ull << 12, 4096, kvm::kProtRead, 0, "w"}); }},
      {"unaligned mapping start", "unaligned", [](Description& x) { x.mappings[2].start += 1; }},
      {"unaligned mapping end", "unaligned", [](Description& x) { x.mappings[2].end -= 1; }},
      {"empty mapping", "a mapping overlaps", [](Description& x) { x.mappings[2].end = x.mappings[2].start; }},
      {"mapping with protection 8", "unknown protection", [](Description& x) { x.mappings[2].prot = 8; }},
      {"mapping with protection -1", "unknown protection", [](Description& x) { x.mappings[2].prot = -1; }},
      {"mapping with fork flags 4", "unknown fork flags", [](Description& x) { x.mappings[2].fork_flags = 4; }},
      // Memory extents.
      {"overlapping extents", "memory extent", [](Description& x) { x.extents[1].gpa = x.extents[0].gpa; }},
      {"extents out of order", "memory extent", [](Description& x) { std::swap(x.extents[0], x.extents[1]); }},
      {"extent past user memory", "memory extent", [](Description& x) { x.extents.back().gpa = x.user_size; }},
      {"extent running past user memory", "memory extent",
       [](Description& x) { x.extents.back() = {x.user_size - 4096, 8192}; }},
      {"extent in the kernel area", "memory extent", [](Description& x) { x.extents.back().gpa = kvm::kKernelPhys; }},
      {"extent wrapping around", "memory extent", [](Description& x) { x.extents.back().gpa = ~0ull << 12; }},
      {"empty extent", "memory extent", [](Description& x) { x.extents.insert(x.extents.begin() + 1, ExtentRecord{0x300000, 0}); }},
      {"unaligned extent", "memory extent", [](Description& x) { x.extents[1].gpa += 512; }},
      {"unaligned extent sizes", "memory extent",
       [](Description& x) { x.extents[1].bytes = 0x800, x.extents[2].bytes = 0x1800; }},
      {"a chunk hash too many", "memory-image hashes", [](Description& x) { x.chunk_hashes.push_back(1); }},
      {"no chunk hashes", "memory-image hashes", [](Description& x) { x.chunk_hashes.clear(); }},
      // Threads.
      {"no threads", "no threads", [](Description& x) { x.threads.clear(); }},
      {"ring-0 code segment (dpl 0)", "code segment", [](Description& x) { x.threads[0].sregs.cs.dpl = 0; }},
      {"ring-0 code segment (selector 0x08)", "code segment", [](Description& x) { x.threads[0].sregs.cs.selector = kvm::kKernelCs; }},
      {"ring-0 code segment (selector 0x08, dpl 0)", "code segment",
       [](Description& x) { x.threads[0].sregs.cs.selector = kvm::kKernelCs, x.threads[0].sregs.cs.dpl = 0; }},
      {"32-bit code segment", "code segment", [](Description& x) { x.threads[0].sregs.cs.l = 0; }},
      {"data segment as code segment", "code segment", [](Description& x) { x.threads[0].sregs.cs.type = 3; }},
      {"ring-0 stack segment (dpl 0)", "stack segment", [](Description& x) { x.threads[0].sregs.ss.dpl = 0; }},
      {"ring-0 stack segment (selector 0x10)", "stack segment", [](Description& x) { x.threads[0].sregs.ss.selector = kvm::kKernelDs; }},
      {"ring-0 data segment", "data segment", [](Description& x) { x.threads[0].sregs.ds.dpl = 0; }},
      {"code selector in fs", "data segment",
       [](Description& x) { x.threads[0].sregs.fs.selector = kvm::kKernelCs, x.threads[0].sregs.fs.dpl = 0; }},
      {"paging off", "CR0", [](Description& x) { x.threads[0].sregs.cr0 &= ~0x80000000ull; }},
      {"write protection off", "CR0", [](Description& x) { x.threads[0].sregs.cr0 &= ~0x10000ull; }},
      {"CR4 without OSXSAVE", "CR4", [](Description& x) { x.threads[0].sregs.cr4 &= ~0x40000ull; }},
      {"CR4 with VMXE", "CR4", [](Description& x) { x.threads[0].sregs.cr4 |= 1ull << 13; }},
      {"EFER without NX", "EFER", [](Description& x) { x.threads[0].sregs.efer &= ~0x800ull; }},
      {"another GDT", "GDT", [](Description& x) { x.threads[0].sregs.gdt.base = 0x10000; }},
      {"a longer GDT", "GDT", [](Description& x) { x.threads[0].sregs.gdt.limit += 16; }},
      {"another IDT", "IDT", [](Description& x) { x.threads[0].sregs.idt.base = 0x10000; }},
      {"another TSS", "task register", [](Description& x) { x.threads[0].sregs.tr.base = 0x10000; }},
      {"TSS not present", "task register", [](Description& x) { x.threads[0].sregs.tr.present = 0; }},
      {"fs base in the kernel half", "fs or gs base", [](Description& x) { x.threads[0].sregs.fs.base = kvm::kKernelVirt; }},
      {"an interrupt pending", "interrupts pending", [](Description& x) { x.threads[0].sregs.interrupt_bitmap[1] = 4; }},
      {"another APIC base", "APIC base", [](Description& x) { x.threads[0].sregs.apic_base = 0x1000; }},
      {"rip at 2^47", "instruction pointer", [](Description& x) { x.threads[0].regs.rip = 1ull << 47; }},
      {"rip in the kernel", "instruction pointer", [](Description& x) { x.threads[0].regs.rip = kvm::kKernelVirt + kvm::kEntryOffset; }},
      {"rip ~0", "instruction pointer", [](Description& x) { x.threads[0].regs.rip = ~0ull; }},
      {"IOPL 3", "flags", [](Description& x) { x.threads[0].regs.rflags |= 0x3000; }},
      {"IOPL 1", "flags", [](Description& x) { x.threads[0].regs.rflags |= 0x1000; }},
      {"interrupts off", "flags", [](Description& x) { x.threads[0].regs.rflags &= ~0x200ull; }},
      {"rflags bit 1 clear", "flags", [](Description& x) { x.threads[0].regs.rflags &= ~0x2ull; }},
      {"nested task", "flags", [](Description& x) { x.threads[0].regs.rflags |= 0x4000; }},
      {"virtual-8086 mode", "flags", [](Description& x) { x.threads[0].regs.rflags |= 0x20000; }},
      {"thread XCR0 other than the snapshot's", "XCR0 differs", [](Description& x) { x.threads[0].xcr0 = 3; }},
      {"XSTATE_BV with a component XCR0 lacks", "FPU/XSAVE", [](Description& x) { x.threads[0].xsave[128] |= 0x8; }},
      {"XSTATE_BV with a reserved bit", "FPU/XSAVE", [](Description& x) { x.threads[0].xsave[129] = 0x80000000; }},
      {"compacted XSAVE area (XCOMP_BV)", "FPU/XSAVE", [](Description& x) { x.threads[0].xsave[131] = 0x80000000; }},
      {"XCOMP_BV's low bits", "FPU/XSAVE", [](Description& x) { x.threads[0].xsave[130] = 0x3; }},
      {"MXCSR reserved bits", "FPU/XSAVE", [](Description& x) { x.threads[0].xsave[6] = 0xffff1f80; }},
      {"bad signal stack flags", "signal stack flags", [](Description& x) { x.threads[0].altstack_flags = 4; }},
      {"thread id 0", "thread id", [](Description& x) { x.threads[0].tid = x.main_tid = 0; }},
      {"negative thread id", "thread id", [](Description& x) { x.threads[0].tid = x.main_tid = -5; }},
      {"repeated thread ids", "repeated thread id", [](Description& x) { x.threads.push_back(x.threads[0]); }},
      {"first thread not the main thread", "not the main thread", [](Description& x) { x.main_tid = 42; }},
      {"main thread second", "not the main thread",
       [](Description& x) {
         x.threads.insert(x.threads.begin(), x.threads[0]);
         x.threads[0].tid = 43;
       }},
      {"129 threads", "129 entries",
       [](Description& x) {
         for (int32_t tid = 42; x.threads.size() < 129; ++tid) {
           x.threads.push_back(x.threads[0]);
           x.threads.back().tid = tid;
         }
       }},
      // The process.
      {"pid 0", "process ids", [](Description& x) { x.pid = 0; }},
      {"negative ppid", "process ids", [](Description& x) { x.ppid = -1; }},
      {"umask 01000", "umask", [](Description& x) { x.umask = 01000; }},
      {"nice 20", "nice", [](Description& x) { x.nice = 20; }},
      {"nice -21", "nice", [](Description& x) { x.nice = -21; }},
      {"heap past user memory", "process address", [](Description& x) { x.brk_current = x.user_size + 4096; }},
      {"stack top in the kernel", "process address", [](Description& x) { x.stack_top = kvm::kKernelVirt; }},
      {"unaligned vDSO", "vDSO", [](Description& x) { x.vdso_base += 8; }},
      {"vDSO at the lowest user page", "vDSO", [](Description& x) { x.vdso_base = kvm::kUserMin; }},
      {"TSC rate 0", "TSC rate", [](Description& x) { x.tsc_khz = 0; }},
      {"TSC rate 200 GHz", "TSC rate", [](Description& x) { x.tsc_khz = 200'000'000; }},
      {"clock shift 64", "clock", [](Description& x) { x.clock_shift = 64; }},
      {"clock shift ~0", "clock", [](Description& x) { x.clock_shift = ~0u; }},
      // Open files.
      {"fd limit 0", "fd limit", [](Description& x) { x.fd_limit = 0; }},
      {"fd limit 2^21", "fd limit", [](Description& x) { x.fd_limit = 1 << 21; }},
      {"fd at the fd limit", "out of range", [](Description& x) { x.fds.push_back({x.fd_limit, 0, false}); }},
      {"fd beyond the fd limit", "out of range", [](Description& x) { x.fds.push_back({1 << 20, 0, false}); }},
      {"fd limit below an open fd", "out of range", [](Description& x) { x.fd_limit = 20; }},
      {"negative fd", "out of range", [](Description& x) { x.fds.push_back({-1, 0, false}); }},
      {"repeated fd", "repeated", [](Description& x) { x.fds.push_back(x.fds[3]); }},
      {"fd naming a missing file", "names no open file",
       [](Description& x) { x.fds.push_back({30, uint32_t(x.files.size()), false}); }},
      {"fd naming file 2^32-1", "names no open file", [](Description& x) { x.fds[0].file = ~0u; }},
      {"file kind 100", "unknown kind", [](Description& x) { x.files[5].kind = Kind(100); }},
      {"file kind 255", "unknown kind", [](Description& x) { x.files[5].kind = Kind(255); }},
      {"standard stream 3", "standard stream", [](Description& x) { x.files[0].stdio = 3; }},
      {"standard stream -1", "standard stream", [](Description& x) { x.files[0].stdio = -1; }},
      {"relative path of a regular file", "absolute path", [](Description& x) { x.files[5].guest_path = "index.html"; }},
      {"device without a path", "absolute path", [](Description& x) { x.files[7].guest_path.clear(); }},
      {"file offset 2^63", "offset out of range", [](Description& x) { x.files[5].offset = 1ull << 63; }},
      {"timer on CLOCK_PROCESS_CPUTIME_ID", "unknown clock", [](Description& x) { x.files[11].clock = CLOCK_PROCESS_CPUTIME_ID; }},
      {"timer on clock -1", "unknown clock", [](Description& x) { x.files[11].clock = -1; }},
      {"timer with a negative interval", "negative time", [](Description& x) { x.files[11].interval_ns = -1; }},
      {"timer with a negative value", "negative time", [](Description& x) { x.files[11].value_ns = INT64_MIN; }},
      {"listener of family AF_PACKET", "unknown family", [](Description& x) { x.files[3].family = AF_PACKET; }},
      {"listener of AF_INET with an AF_INET6 address", "another family",
       [](Description& x) {
         const sa_family_t family = AF_INET6;
         std::memcpy(x.files[3].address.data(), &family, sizeof family);
       }},
      {"listener of AF_INET6 with an AF_INET address", "another family", [](Description& x) { x.files[3].family = AF_INET6; }},
      {"listener without an address", "without an address", [](Description& x) { x.files[3].address.clear(); }},
      {"listener with a 1-byte address", "without an address", [](Description& x) { x.files[3].address.resize(1); }},
      {"epoll interest in fd -1", "epoll interest", [](Description& x) { x.files[4].interest[0].guest_fd = -1; }},
      {"epoll interest past the fd limit", "epoll interest", [](Description& x) { x.files[4].interest[0].guest_fd = 1024; }},
      // A private /tmp.
      {"/tmp entry with ..", "bad path", [](Description& x) { x.tmp[1].path = "cache/../../etc/passwd"; }},
      {"/tmp entry ..", "bad path", [](Description& x) { x.tmp[0].path = ".."; }},
      {"/tmp entry with an absolute path", "bad path", [](Description& x) { x.tmp[1].path = "/etc/passwd"; }},
      {"/tmp entry without a path", "bad path", [](Description& x) { x.tmp[1].path.clear(); }},
      {"/tmp entry with a NUL", "bad path", [](Description& x) { x.tmp[1].path = std::string("a\0b", 3); }},
      {"/tmp entry of type 3", "unknown type", [](Description& x) { x.tmp[1].type = TmpEntry::Type(3); }},
      {"/tmp entry of mode 010000", "bad mode", [](Description& x) { x.tmp[1].mode = 010000; }},
  };
  for (const Crafted& c : crafted) {
    Description bad = d;
    c.change(bad);
    visit({"crafted", c.what, c.expected, file_of(bad)});
  }
}

}  // namespace kvms::snapshot::samples
