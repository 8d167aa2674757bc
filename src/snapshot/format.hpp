#pragma once
// The snapshot file: a paused, warmed server template saved once and served from many times
// (`kvmserver snapshot`, `kvmserver serve FILE`, `kvmserver inspect FILE`).
//
// Layout (all integers little-endian):
//   [0, 4096)             header: magic, format version, kvmserver version, the offsets and sizes of
//                         the other two parts, the hash of the description, and a hash of itself
//   [4096, memory_offset) description: everything kvmserver interprets (program, grants, CPU
//                         features, mappings, memory extents, threads, process, fds, /tmp files)
//   [memory_offset, end)  memory image: the user slot's non-zero runs, packed, page-aligned, in the
//                         order of the extent table; nothing else follows (the size must match)
//
// The header and the description are checked (xxHash's XXH3-64, and strict bounds on every field)
// every time a file is read; the memory image has one hash per 1 MiB chunk, checked only on request
// (`inspect --verify`, `serve --verify`) so that serving never reads the whole file: its pages are
// mapped copy-on-write and come in on first touch. Page tables and the guest's kernel area are not
// in the file: they are rebuilt from the mapping table at load, so no file decides what the guest
// can reach or at what privilege it runs.
//
// A change to anything saved here, to the clock page the vDSO reads (kvm/clock_page.h) or to the
// vDSO's place in guest memory must bump kFormatVersion: a file of another version is refused.
#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvms::snapshot {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kHeaderSize = 4096;
inline constexpr uint64_t kChunkBytes = 1 << 20;  // memory-image hash granularity
inline constexpr uint64_t kMaxDescriptionBytes = 256ull << 20;
inline constexpr uint64_t kMaxPendingBytes = 64 << 10;  // unread bytes saved per pipe or socket end

// A file that is not a snapshot kvmserver can load: truncated, corrupted, hand-crafted, another
// format version, or made on a CPU with features this one lacks. what() is one line; exit 2.
class SnapshotError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  static constexpr int kExitStatus = 2;
};

struct CpuidLeaf {
  uint32_t function = 0, index = 0, eax = 0, ebx = 0, ecx = 0, edx = 0;
};

struct MappingRecord {
  uint64_t start = 0, end = 0;
  int32_t prot = 0;
  uint8_t fork_flags = 0;
  std::string name;
};

struct ExtentRecord {
  uint64_t gpa = 0, bytes = 0;  // file offsets follow from the order: packed from memory_offset
};

struct ThreadRecord {
  int32_t tid = 0;
  bool pending = false;  // stands at a syscall not handled yet
  kvm_regs regs{};
  kvm_sregs sregs{};
  uint64_t xcr0 = 0;
  std::array<uint32_t, 1024> xsave{};
  // What Linux keeps per thread (linux::ThreadContext).
  uint64_t clear_child_tid = 0, robust_list = 0, robust_list_len = 0, rseq = 0, rseq_len = 0;
  uint64_t sigmask = 0, altstack_sp = 0, altstack_size = 0;
  int32_t altstack_flags = 0;
  std::string comm;
};

// One open file description (several fds may share one: dup).
struct FileRecord {
  enum class Kind : uint8_t { Stdio, Regular, Directory, Device, PipeEnd, EventFd, TimerFd, Listener, Epoll, SocketPairEnd };
  Kind kind = Kind::Stdio;
  std::string guest_path;  // what the guest opened ("/dev/stdout", "pipe:[12]", "/srv/data.txt")
  int32_t status_flags = 0;
  bool writable_grant = false;
  int32_t stdio = -1;                          // Stdio: kvmserver's fd 0, 1 or 2
  uint64_t offset = 0;                         // Regular, Directory
  uint64_t dev = 0, ino = 0, size = 0;         // Regular: the host file when saved
  int64_t mtime_ns = 0;
  uint64_t pipe_id = 0;                        // PipeEnd, SocketPairEnd: the two ends of one share it
  std::string data;                            // PipeEnd, SocketPairEnd: bytes waiting to be read
                                               // at this end (at most kMaxPendingBytes)
  uint64_t count = 0;                          // EventFd: the counter; TimerFd: unread expirations
  bool semaphore = false, nonblocking = false; // EventFd, TimerFd
  int32_t clock = 0;                           // TimerFd
  int64_t interval_ns = 0, value_ns = 0;       // TimerFd: it_interval, time left (0: disarmed)
  int32_t family = 0, type = 0, protocol = 0;  // Listener; SocketPairEnd: type
  std::string address;                         // Listener: the bound sockaddr, raw
  bool reuse_address = false, reuse_port = false, v6_only = false;
  struct Interest {
    int32_t guest_fd = 0;
    uint32_t events = 0;
    uint64_t data = 0;
  };
  std::vector<Interest> interest;              // Epoll
};

struct FdRecord {
  int32_t fd = 0;
  uint32_t file = 0;  // index into files
  bool cloexec = false;
};

struct TmpEntry {
  enum class Type : uint8_t { Directory, File, Symlink };
  Type type = Type::File;
  std::string path;  // relative to /tmp
  uint32_t mode = 0;
  std::string data;  // file contents, or a symlink's target
};

struct SigactionRecord {
  uint64_t handler = 0, flags = 0, restorer = 0, mask = 0;
};

// Everything but the memory image.
struct Description {
  std::string kvmserver_version;
  int64_t created_unix = 0;
  // The host CPU as the guest saw it.
  uint64_t xcr0 = 0;
  std::vector<CpuidLeaf> cpuid;
  // The program and how it was started.
  std::string program, exe_path;
  std::vector<std::string> argv, envp;
  std::string cwd;
  uint64_t wait_syscall = 0;  // what the template was about to wait in
  // The grants it was made with (cli::Options' names), and what kvmserver made readable itself.
  bool allow_all = false, read_all = false, write_all = false, listen_all = false, connect_all = false;
  std::vector<std::string> read, write, listen, connect, always_readable;
  struct Volume {
    std::string host, guest;
    bool writable = false;
  };
  std::vector<Volume> volumes;
  std::string hostname;
  // Memory.
  uint64_t user_size = 0, kernel_size = 0;
  std::vector<MappingRecord> mappings;
  std::vector<ExtentRecord> extents;
  std::vector<uint64_t> chunk_hashes;  // XXH3-64 of each kChunkBytes of the memory image
  // Threads, the main thread first.
  std::vector<ThreadRecord> threads;
  // The process.
  int32_t pid = 0, ppid = 0, main_tid = 0;
  uint32_t uid = 0, gid = 0, umask = 0;
  int32_t nice = 0;
  uint64_t brk_start = 0, brk_current = 0, stack_top = 0, stack_size = 0, vdso_base = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  std::array<SigactionRecord, 65> sigactions{};
  std::array<std::pair<uint64_t, uint64_t>, 16> rlimits{};
  int32_t fd_limit = 0;
  // Clock: the guest TSC when saved (a load continues from it: guest clocks never step back) and
  // the clock page the vDSO reads.
  uint64_t guest_tsc = 0, tsc_khz = 0;
  uint32_t clock_seq = 0, clock_shift = 0;
  uint64_t clock_mult = 0, clock_tsc_base = 0, clock_monotonic_base_ns = 0;
  int64_t clock_realtime_offset_ns = 0, clock_boottime_offset_ns = 0;
  // Open files.
  std::vector<FileRecord> files;
  std::vector<FdRecord> fds;
  bool private_tmp = false;
  std::vector<TmpEntry> tmp;

  uint64_t memory_bytes() const;  // the memory image's size
};

// What the header says, after its checks.
struct Header {
  uint32_t format = 0;
  std::string kvmserver_version;
  uint64_t file_size = 0, description_offset = 0, description_size = 0, description_hash = 0;
  uint64_t memory_offset = 0, memory_size = 0;
};

// The header and description as bytes (a file is these, then the memory image at
// Header::memory_offset, which is page-aligned).
std::vector<uint8_t> encode(const Description& d);

// Checks and decodes the first kHeaderSize bytes of a file of `file_size` bytes. Throws SnapshotError.
Header decode_header(std::span<const uint8_t> bytes, uint64_t file_size);
// Checks and decodes the description (its hash, then every field's bounds and consistency: user
// memory, mappings, extents and their sum against the header, threads' user-mode state, fds).
// Throws SnapshotError.
Description decode_description(const Header& h, std::span<const uint8_t> bytes);
// The bytes between the description's end and the memory image (no checksum covers them): zeros.
void check_padding(std::span<const uint8_t> padding);

// Reads and checks header and description from an open file (pread; the memory image is not read).
Description read_description(int fd, Header* header = nullptr);
// Hashes the memory image chunk by chunk against the description; throws SnapshotError naming the
// first chunk that differs. Reads the whole image.
void verify_memory(int fd, const Header& h, const Description& d);

// Which of the CPU features the snapshot's guest may use this host lacks (names, comma-separated;
// empty when it has them all), given this host's guest CPUID and XCR0.
std::string missing_cpu_features(const Description& d, const std::vector<CpuidLeaf>& host_cpuid, uint64_t host_xcr0);

// XXH3-64, what the file's hashes are.
uint64_t hash_bytes(const void* data, size_t size);

// `kvmserver inspect`: what the file holds, several lines.
std::string describe(const Header& h, const Description& d);

}  // namespace kvms::snapshot
