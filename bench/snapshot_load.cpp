// What `kvmserver serve FILE` costs the host from an open snapshot file to a template ready to fork
// workers from, natively (loading issues no KVM ioctl: the template has no VM; the probe of
// /dev/kvm before it and each worker's VM are counted separately, kvm_ioctls below).
//
//   snapshot_load_bench [Google Benchmark flags]
//
// A synthetic snapshot like a paused server's: one thread waiting in epoll_wait, stdio, a TCP
// listener on 127.0.0.1 (port 0), an epoll watching it, an eventfd; a heap mapping holding
// MEMORY bytes of data (the memory image: written sparse, never read by a load) and, as a runtime
// has, 4 GiB of PROT_NONE reservations and 64 small mappings. Two series:
//   BM_load/MEMORY_MIB        data in 4 extents: how the load grows with the template's size
//   BM_load_extents/EXTENTS   64 MiB of data in that many extents: how it grows with fragmentation
//   BM_load_file              a real snapshot, when KVMS_SNAPSHOT_FILE names one (e.g. Deno's,
//                             made in the nested machine): loaded with the grants it records
//   BM_fresh_pages/50         this machine's cost of 50 fresh pages of memfd memory written once,
//                             what a load's page tables cost here whatever kvmserver does
// Timing: the host CPU time of snapshot::load() (the file's header and description already read
// and checked: read_description, timed as BM_read_description). Counters: extents mapped,
// page-table pages built, pages of the image read by the load (minor+major faults on the file's
// mapping are counted as rusage faults of the whole load: page_faults).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "kvm/layout.hpp"
#include "kvm/vm.hpp"
#include "linux/net_policy.hpp"
#include "linux/policy.hpp"
#include "snapshot/snapshot.hpp"

namespace {

using namespace kvms;

constexpr uint64_t kUserSize = 64ull << 30;
constexpr uint64_t kHeapBase = 0x10000000;

snapshot::Description describe(uint64_t memory_bytes, uint64_t extents) {
  snapshot::Description d;
  d.kvmserver_version = "bench";
  d.xcr0 = 0x7;
  d.program = d.exe_path = "/srv/server";
  d.argv = {"/srv/server"};
  d.cwd = "/";
  d.wait_syscall = SYS_epoll_wait;
  d.listen_all = true;
  d.user_size = kUserSize;
  d.kernel_size = kvm::page_up((16ull << 20) + kUserSize / 256);
  // The heap holds the data, in `extents` equal runs with a gap of the same size between them.
  const uint64_t run = kvm::page_up(memory_bytes / extents);
  const uint64_t heap_size = run * extents * 2;
  d.mappings.push_back({kHeapBase, kHeapBase + heap_size, kvm::kProtRead | kvm::kProtWrite, 0, "[heap]"});
  uint64_t at = kvm::page_up(kHeapBase + heap_size) + (1 << 20);
  for (int i = 0; i < 64; ++i, at += 2 * 65536) d.mappings.push_back({at, at + 65536, kvm::kProtRead, 0, "lib"});
  d.mappings.push_back({at, at + (4ull << 30), kvm::kProtNone, 0, "reserved"});
  for (uint64_t i = 0; i < extents; ++i) d.extents.push_back({kHeapBase + 2 * i * run, run});
  d.chunk_hashes.assign((d.memory_bytes() + snapshot::kChunkBytes - 1) / snapshot::kChunkBytes, 0);
  snapshot::ThreadRecord t;
  t.tid = d.main_tid = d.pid = 2;
  t.pending = true;
  t.regs.rip = 0x401000;
  t.regs.rflags = 0x246;
  t.regs.rax = SYS_epoll_wait;
  t.sregs = kvm::user_mode_sregs(kvm_sregs{}, 0, 0);
  t.xcr0 = 0x7;
  t.xsave[0] = 0x37f;
  t.xsave[6] = 0x1f80;
  t.xsave[128] = 0x3;
  t.comm = "server";
  d.threads.push_back(t);
  d.ppid = 1;
  d.tsc_khz = 2'000'000;
  d.fd_limit = 1024;
  for (int fd = 0; fd < 3; ++fd) {
    snapshot::FileRecord f;
    f.kind = snapshot::FileRecord::Kind::Stdio;
    f.stdio = fd;
    f.guest_path = fd == 0 ? "/dev/stdin" : fd == 1 ? "/dev/stdout" : "/dev/stderr";
    d.files.push_back(f);
    d.fds.push_back({fd, uint32_t(fd), false});
  }
  snapshot::FileRecord listener;
  listener.kind = snapshot::FileRecord::Kind::Listener;
  listener.guest_path = "socket:[1]";
  listener.family = AF_INET;
  listener.type = SOCK_STREAM;
  listener.nonblocking = true;
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  listener.address.assign(reinterpret_cast<const char*>(&in), sizeof in);
  d.files.push_back(listener);
  d.fds.push_back({3, 3, true});
  snapshot::FileRecord epoll;
  epoll.kind = snapshot::FileRecord::Kind::Epoll;
  epoll.guest_path = "anon_inode:[eventpoll]";
  epoll.interest.push_back({3, 1, 3});
  d.files.push_back(epoll);
  d.fds.push_back({4, 4, true});
  snapshot::FileRecord event;
  event.kind = snapshot::FileRecord::Kind::EventFd;
  event.guest_path = "anon_inode:[eventfd]";
  d.files.push_back(event);
  d.fds.push_back({5, 5, true});
  return d;
}

// The file: header and description, then the memory image as a hole of the right size.
int write_file(const snapshot::Description& d, const std::string& path) {
  const std::vector<uint8_t> head = snapshot::encode(d);
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, head.data(), head.size()) != ssize_t(head.size()) ||
      ftruncate(fd, off_t(head.size() + d.memory_bytes())) != 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  unlink(path.c_str());
  return fd;
}

long faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt + u.ru_majflt;
}

// Loads the file once per iteration (the template's destruction is not timed), then the counters.
void time_loads(benchmark::State& state, int fd, const snapshot::Header& h, const snapshot::Description& d,
                const snapshot::LoadOptions& o) {
  uint64_t table_pages = 0;
  long faulted = 0;
  for (auto _ : state) {
    const long f0 = faults();
    snapshot::Loaded loaded = snapshot::load(fd, h, d, o);
    faulted += faults() - f0;
    state.PauseTiming();
    table_pages = loaded.guest->address_space().page_table_pages();
    loaded = {};
    state.ResumeTiming();
  }
  close(fd);
  state.counters["extents"] = double(d.extents.size());
  state.counters["memory_MiB"] = double(d.memory_bytes()) / (1 << 20);
  state.counters["pt_pages"] = double(table_pages);
  state.counters["page_faults"] = benchmark::Counter(double(faulted), benchmark::Counter::kAvgIterations);
  state.counters["kvm_ioctls"] = 0;  // load() makes no KVM call: the template has no VM
}

void load(benchmark::State& state, uint64_t memory_bytes, uint64_t extents) {
  const snapshot::Description d0 = describe(memory_bytes, extents);
  const std::string path = std::string(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") + "/kvms-bench.snap";
  const int fd = write_file(d0, path);
  snapshot::Header h;
  const snapshot::Description d = snapshot::read_description(fd, &h);
  snapshot::LoadOptions o;
  o.policy = std::make_shared<linux::PathPolicy>(linux::PolicyConfig{});
  linux::NetPolicyConfig net;
  net.listen_all = true;
  o.net = std::make_shared<linux::NetPolicy>(net);
  o.tsc_khz = 2'000'000;
  time_loads(state, fd, h, d, o);  // load() makes no KVM call: the template has no VM
}

void BM_load(benchmark::State& state) { load(state, uint64_t(state.range(0)) << 20, 4); }
BENCHMARK(BM_load)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Unit(benchmark::kMicrosecond);

void BM_load_extents(benchmark::State& state) { load(state, 64ull << 20, uint64_t(state.range(0))); }
BENCHMARK(BM_load_extents)->Arg(1)->Arg(64)->Arg(512)->Arg(4096)->Unit(benchmark::kMicrosecond);

void BM_load_file(benchmark::State& state) {
  const char* path = getenv("KVMS_SNAPSHOT_FILE");
  if (!path) {
    state.SkipWithError("KVMS_SNAPSHOT_FILE not set");
    return;
  }
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  snapshot::Header h;
  const snapshot::Description d = snapshot::read_description(fd, &h);
  snapshot::LoadOptions o;
  o.policy = std::make_shared<linux::PathPolicy>(snapshot::recorded_paths(d));
  o.net = std::make_shared<linux::NetPolicy>(snapshot::recorded_net(d));
  o.tsc_khz = d.tsc_khz;
  o.reopen_changed_files = true;
  time_loads(state, fd, h, d, o);
}
BENCHMARK(BM_load_file)->Unit(benchmark::kMicrosecond);

// This machine's price of a fresh page of kernel-area memory, the part of a load that depends on
// the host rather than on kvmserver: every load writes its page-table pages (pt_pages above) into
// fresh memory of a memfd, populated by one madvise and then written once. Where the host itself
// runs in a VM with shadow paging (this project's PVM/Firecracker machines) the first write costs
// an exit to the outer hypervisor; on a host with hardware paging it is a cache miss. Per
// iteration: ARG pages, as a load's tables are.
void BM_fresh_pages(benchmark::State& state) {
  const uint64_t pages = uint64_t(state.range(0));
  const int fd = memfd_create("fresh", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, off_t(pages * kvm::kPageSize)) != 0) {
    state.SkipWithError("memfd_create");
    return;
  }
  for (auto _ : state) {
    auto* p = static_cast<uint8_t*>(mmap(nullptr, pages * kvm::kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    (void)madvise(p, pages * kvm::kPageSize, 23 /* MADV_POPULATE_WRITE */);
    for (uint64_t i = 0; i < pages; ++i) p[i * kvm::kPageSize] = 1;
    state.PauseTiming();
    munmap(p, pages * kvm::kPageSize);
    (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, off_t(pages * kvm::kPageSize));
    state.ResumeTiming();
  }
  close(fd);
  state.counters["pt_pages"] = double(pages);
}
BENCHMARK(BM_fresh_pages)->Arg(50)->Unit(benchmark::kMicrosecond);

void BM_read_description(benchmark::State& state) {
  const snapshot::Description d0 = describe(64ull << 20, 4);
  const int fd = write_file(d0, "/tmp/kvms-bench-describe.snap");
  for (auto _ : state) benchmark::DoNotOptimize(snapshot::read_description(fd));
  close(fd);
}
BENCHMARK(BM_read_description)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
