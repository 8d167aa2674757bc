// kvmserver's own host-side work per request, timed natively: the code paths a request and its
// reset run on the host, called directly without a VM (no KVM needed, so the numbers are real on
// any machine, unlike anything timed in the nested test machine).
//
//   host_costs_bench [Google Benchmark flags]      bench/host_costs.sh runs it and prints tables
//
//   BM_syscall/NAME        one guest syscall through dispatch_syscall() with the process lock held,
//                          as complete_syscall() runs it: read and write of 64 bytes (regular file,
//                          pipe), epoll_wait with a ready fd, accept4+close of a pending TCP
//                          connection, clock_gettime as a syscall (the vDSO answers it without one),
//                          openat+close of a granted file with the path policy's check.
//                          Excludes the VM exit itself (on hardware ~1 µs round trip, counted).
//   BM_reset_copy_back/N   Worker::reset()'s fast path for N dirty pages: restore_page() for each,
//                          the template's bytes copied back over the worker's private page.
//   BM_reset_full/N        the full-reset path (discard_private(): every private page dropped; the
//                          next request faults its pages in again).
//   BM_reset_address_space/M  the worker's address space copied from a template with M mappings.
//   BM_reset_fds/N         the worker's Process rebuilt from a template holding N fds (worker_process():
//                          regular files reopened, pipes and eventfds recreated, an epoll watching
//                          them all rebuilt over the new host fds) and the old one destroyed.
//   BM_worker_create/MIB   a worker's memory, address space and Process from a template with MIB
//                          resident: GuestMemory::fork_private() (memfd MAP_PRIVATE), the address
//                          space copy and worker_process(). The KVM part (VM, vCPU, memory slots)
//                          is not timed: its ioctls are counted in the nested machine (--stats
//                          worker_create_kvm_calls, bench/host_costs.sh prints them).
//   BM_host_null_syscall   this machine's cost of one host system call, to read the others by.
// Each reports host CPU time per operation (manual timing where setup must stay out of the figure).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "kvm/layout.hpp"
#include "linux/fd_table.hpp"
#include "linux/policy.hpp"
#include "linux/process.hpp"
#include "linux/syscalls.hpp"
#include "server/worker.hpp"

namespace {

using namespace kvms;
using linux::OpenFile;
using linux::Process;

constexpr uint64_t kUserSize = 4ull << 30;
constexpr uint64_t kKernelSize = 32ull << 20;
constexpr uint64_t kScratch = 0x100000;  // guest buffers for syscall arguments
constexpr uint64_t kScratchSize = 1 << 20;
constexpr uint64_t kHeap = 0x40000000;  // the template's data

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A temporary directory the process is granted, holding data.txt (1 MiB).
struct GrantedDir {
  std::string path;
  GrantedDir() {
    char tmpl[] = "/tmp/kvms-host-costs-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
    path = tmpl;
    std::string data(1 << 20, 'x');
    FILE* f = std::fopen((path + "/data.txt").c_str(), "w");
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  }
  ~GrantedDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// A guest process over a fresh address space with a scratch mapping, granted `dir` read and write.
struct GuestProcess {
  std::shared_ptr<kvm::GuestMemory> memory = kvm::GuestMemory::create(kUserSize, kKernelSize);
  std::shared_ptr<kvm::AddressSpace> mm = std::make_shared<kvm::AddressSpace>(memory);
  std::unique_ptr<Process> p;
  explicit GuestProcess(const std::string& dir) {
    if (mm->map(kScratch, kScratchSize, kvm::kProtRead | kvm::kProtWrite, "") != 0) throw std::runtime_error("map");
    linux::PolicyConfig cfg;
    cfg.write = {dir};
    p = std::make_unique<Process>(mm, std::make_shared<linux::PathPolicy>(cfg), linux::ProcessConfig{});
    p->cwd = dir;
    p->rlimits[RLIMIT_NOFILE] = {1 << 16, 1 << 16};
  }
  // What complete_syscall() does around a handler: the process lock held, then the dispatch.
  int64_t call(uint64_t nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0) {
    linux::SyscallArgs args;
    args.nr = nr;
    args.a[0] = a0, args.a[1] = a1, args.a[2] = a2, args.a[3] = a3;
    std::lock_guard<std::mutex> lk(p->lock.mutex);
    Process::holds_lock = true;
    const int64_t r = linux::dispatch_syscall(*p, args);
    Process::holds_lock = false;
    return r;
  }
  uint64_t put_string(uint64_t at, const std::string& s) {
    mm->copy_to_user(at, s.c_str(), s.size() + 1);
    return at;
  }
  int install(int host_fd, OpenFile::Kind kind, const char* name, int flags) {
    return p->fds.install(std::make_shared<OpenFile>(host_fd, kind, name, flags), false);
  }
};

void check(bool ok, benchmark::State& state, const char* what) {
  if (!ok) state.SkipWithError(what);
}

// --- syscalls -------------------------------------------------------------------------------

void BM_syscall_read_file(benchmark::State& state) {
  GrantedDir dir;
  GuestProcess g(dir.path);
  const int fd = int(g.call(SYS_openat, uint64_t(AT_FDCWD), g.put_string(kScratch, "data.txt"), O_RDONLY));
  check(fd >= 0, state, "openat");
  uint64_t n = 0;
  for (auto _ : state) {
    if (++n % 16384 == 0) {  // 16384 reads of 64 bytes: back to the start of the 1 MiB file
      state.PauseTiming();
      g.call(SYS_lseek, fd, 0, SEEK_SET);
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(g.call(SYS_read, fd, kScratch + 4096, 64));
  }
}

// 64-byte reads from (or writes to) a host pipe in the guest's fd table; every 512 calls the host's
// end refills (or drains) it, outside the timing.
void BM_syscall_pipe(benchmark::State& state, bool reading) {
  GrantedDir dir;
  GuestProcess g(dir.path);
  int fds[2];
  check(pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0, state, "pipe2");
  const int guest_end = reading ? 0 : 1, host_end = fds[1 - guest_end];
  const int gfd = g.install(fds[guest_end], OpenFile::Kind::Pipe, reading ? "pipe:[r]" : "pipe:[w]",
                            (reading ? O_RDONLY : O_WRONLY) | O_NONBLOCK);
  char buf[64 * 512];
  std::memset(buf, 'x', sizeof buf);
  int calls = 512;
  for (auto _ : state) {
    if (calls == 512) {
      state.PauseTiming();
      if (!reading) {
        while (::read(host_end, buf, sizeof buf) > 0) {
        }
      } else if (::write(host_end, buf, sizeof buf) != ssize_t(sizeof buf)) {
        state.SkipWithError("refill");
      }
      calls = 0;
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(g.call(reading ? SYS_read : SYS_write, gfd, kScratch + 4096, 64));
    ++calls;
  }
  ::close(host_end);
}

void BM_syscall_epoll_wait_ready(benchmark::State& state) {
  GrantedDir dir;
  GuestProcess g(dir.path);
  const int efd = int(g.call(SYS_eventfd2, 1, EFD_NONBLOCK));  // readable, never read: stays ready
  const int epfd = int(g.call(SYS_epoll_create1, 0));
  struct __attribute__((packed)) {
    uint32_t events;
    uint64_t data;
  } ev{EPOLLIN, 7};
  g.mm->write(kScratch + 256, ev);
  check(efd >= 0 && epfd >= 0 && g.call(SYS_epoll_ctl, epfd, EPOLL_CTL_ADD, efd, kScratch + 256) == 0, state, "epoll");
  for (auto _ : state) benchmark::DoNotOptimize(g.call(SYS_epoll_wait, epfd, kScratch + 1024, 16, 0));
}

void BM_syscall_accept4_close(benchmark::State& state) {
  GrantedDir dir;
  GuestProcess g(dir.path);
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  check(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(s, 256) == 0 &&
            ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) == 0,
        state, "listen");
  auto listener = std::make_shared<OpenFile>(s, OpenFile::Kind::Socket, "socket:[l]", O_RDWR | O_NONBLOCK);
  listener->listening = true;
  const int lfd = g.p->fds.install(std::move(listener), false);
  std::vector<int> clients;
  for (auto _ : state) {
    if (clients.empty()) {  // 128 connections made and left pending, outside the timing
      state.PauseTiming();
      for (int i = 0; i < 128; ++i) {
        int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) state.SkipWithError("connect");
        clients.push_back(c);
      }
      state.ResumeTiming();
    }
    const int64_t fd = g.call(SYS_accept4, lfd, 0, 0, SOCK_CLOEXEC);
    g.call(SYS_close, uint64_t(fd));
    state.PauseTiming();
    ::close(clients.back());
    clients.pop_back();
    state.ResumeTiming();
  }
  for (int c : clients) ::close(c);
}

void BM_syscall_clock_gettime(benchmark::State& state) {
  GrantedDir dir;
  GuestProcess g(dir.path);
  for (auto _ : state) benchmark::DoNotOptimize(g.call(SYS_clock_gettime, CLOCK_MONOTONIC, kScratch + 512));
}

void BM_syscall_openat_close(benchmark::State& state) {
  GrantedDir dir;
  GuestProcess g(dir.path);
  const uint64_t path = g.put_string(kScratch, dir.path + "/data.txt");
  for (auto _ : state) {
    const int64_t fd = g.call(SYS_openat, uint64_t(AT_FDCWD), path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) state.SkipWithError("openat refused");
    g.call(SYS_close, uint64_t(fd));
  }
}

// This machine's price of one host system call (getppid: no work in the kernel), the unit most of
// the rows above are made of: under a paravirtualized or nested hypervisor it is many times a bare
// metal host's (~0.1 µs).
void BM_host_null_syscall(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(::syscall(SYS_getppid));
}

BENCHMARK(BM_host_null_syscall);
BENCHMARK(BM_syscall_read_file)->Name("BM_syscall/read_file_64B");
BENCHMARK_CAPTURE(BM_syscall_pipe, read, true)->Name("BM_syscall/read_pipe_64B");
BENCHMARK_CAPTURE(BM_syscall_pipe, write, false)->Name("BM_syscall/write_pipe_64B");
BENCHMARK(BM_syscall_epoll_wait_ready)->Name("BM_syscall/epoll_wait_ready");
BENCHMARK(BM_syscall_accept4_close)->Name("BM_syscall/accept4_close");
BENCHMARK(BM_syscall_clock_gettime)->Name("BM_syscall/clock_gettime");
BENCHMARK(BM_syscall_openat_close)->Name("BM_syscall/openat_close_granted");

// --- reset ----------------------------------------------------------------------------------

// A template whose heap holds `resident` bytes of data, and a worker forked from it.
struct TemplateAndWorker {
  std::shared_ptr<kvm::GuestMemory> tmpl_memory = kvm::GuestMemory::create(kUserSize, kKernelSize);
  std::shared_ptr<kvm::AddressSpace> tmpl_mm = std::make_shared<kvm::AddressSpace>(tmpl_memory);
  std::shared_ptr<kvm::GuestMemory> memory;
  std::shared_ptr<kvm::AddressSpace> mm;
  std::vector<uint64_t> gpas;  // of the heap's pages

  explicit TemplateAndWorker(uint64_t resident, int extra_mappings = 0) {
    if (tmpl_mm->map(kHeap, resident, kvm::kProtRead | kvm::kProtWrite, "[heap]") != 0) throw std::runtime_error("map heap");
    for (int i = 0; i < extra_mappings; ++i)  // small mappings with gaps, as a runtime's libraries make
      if (tmpl_mm->map(0xc0000000ull + uint64_t(i) * 0x10000, 0x8000, kvm::kProtRead, "lib" + std::to_string(i)) != 0)
        throw std::runtime_error("map a small mapping");
    std::vector<char> chunk(1 << 20, 'T');
    for (uint64_t off = 0; off < resident; off += chunk.size())
      tmpl_mm->copy_to_user(kHeap + off, chunk.data(), std::min<uint64_t>(chunk.size(), resident - off));
    for (uint64_t off = 0; off < resident; off += kvm::kPageSize) gpas.push_back(tmpl_mm->translate(kHeap + off)->gpa);
    memory = kvm::GuestMemory::fork_private(tmpl_memory);
    mm = std::make_shared<kvm::AddressSpace>(*tmpl_mm, memory);
  }
  // The guest writing one byte in each of the first n heap pages of the worker.
  void dirty(uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) mm->write<uint8_t>(kHeap + i * kvm::kPageSize, uint8_t(i));
  }
};

// A reset after the guest dirtied N pages: each page copied back (Worker::reset's fast path), or
// with `full` every private page dropped at once (the next request faults its pages in again).
void BM_reset(benchmark::State& state, bool full) {
  const uint64_t n = uint64_t(state.range(0));
  TemplateAndWorker t(std::max<uint64_t>(n, 16) * kvm::kPageSize);
  for (auto _ : state) {
    t.dirty(n);
    const auto t0 = std::chrono::steady_clock::now();
    if (full)
      t.memory->discard_private();
    else
      for (uint64_t i = 0; i < n; ++i) t.memory->restore_page(t.gpas[i]);
    state.SetIterationTime(seconds_since(t0));
  }
  state.counters["pages"] = double(n);
}

void BM_reset_address_space(benchmark::State& state) {
  TemplateAndWorker t(16 * kvm::kPageSize, int(state.range(0)));
  for (auto _ : state) {
    kvm::AddressSpace copy(*t.tmpl_mm, t.memory);
    benchmark::DoNotOptimize(copy.mapping_count());
  }
  state.counters["mappings"] = double(t.tmpl_mm->mapping_count());
}

// A template Process holding n fds: a quarter each regular files, pipe ends, eventfds and sockets
// (a listener's accepted-like socketpair ends, shared as listeners are), plus one epoll watching
// all of them.
void template_with_fds(GuestProcess& g, int n) {
  const uint64_t path = g.put_string(kScratch, "data.txt");
  std::vector<int> fds;
  for (int i = 0; fds.size() < size_t(n);) {
    switch (i++ % 4) {
      case 0: fds.push_back(int(g.call(SYS_openat, uint64_t(AT_FDCWD), path, O_RDONLY))); break;
      case 1: {
        g.call(SYS_pipe2, kScratch + 512, 0);
        int32_t ends[2];
        g.mm->read(kScratch + 512, ends);
        fds.push_back(ends[0]);
        if (fds.size() < size_t(n)) fds.push_back(ends[1]);
        break;
      }
      case 2: fds.push_back(int(g.call(SYS_eventfd2, 0, 0))); break;
      default: {
        int sv[2];
        ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
        ::close(sv[1]);
        fds.push_back(g.install(sv[0], OpenFile::Kind::Socket, "socket:[s]", O_RDWR));
      }
    }
  }
  const int epfd = int(g.call(SYS_epoll_create1, 0));
  struct __attribute__((packed)) {
    uint32_t events;
    uint64_t data;
  } ev{EPOLLIN, 0};
  for (int fd : fds) {
    ev.data = uint64_t(fd);
    g.mm->write(kScratch + 256, ev);
    g.call(SYS_epoll_ctl, epfd, EPOLL_CTL_ADD, uint64_t(fd), kScratch + 256);
  }
}

void BM_reset_fds(benchmark::State& state) {
  GrantedDir dir;
  GuestProcess g(dir.path);
  template_with_fds(g, int(state.range(0)));
  server::record_paused_files(*g.p);  // as serve() does once the template has paused
  for (auto _ : state) {
    auto worker = server::worker_process(*g.p, g.mm);
    benchmark::DoNotOptimize(worker.get());
    worker.reset();
  }
  state.counters["fds"] = double(g.p->fds.open_count());
}

void BM_worker_create(benchmark::State& state) {
  const uint64_t resident = uint64_t(state.range(0)) << 20;
  GrantedDir dir;
  GuestProcess g(dir.path);  // the template's Process: stdio-like fds and a listener's worth
  template_with_fds(g, 8);
  server::record_paused_files(*g.p);
  TemplateAndWorker t(resident);
  for (auto _ : state) {
    auto memory = kvm::GuestMemory::fork_private(t.tmpl_memory);
    auto mm = std::make_shared<kvm::AddressSpace>(*t.tmpl_mm, memory);
    auto p = server::worker_process(*g.p, mm);
    benchmark::DoNotOptimize(p.get());
  }
  state.counters["resident_MiB"] = double(state.range(0));
}

BENCHMARK_CAPTURE(BM_reset, copy_back, false)->Name("BM_reset_copy_back")->Arg(1)->Arg(16)->Arg(256)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_reset, full, true)->Name("BM_reset_full")->Arg(1)->Arg(16)->Arg(256)->Arg(4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_reset_address_space)->Arg(16)->Arg(165)->Arg(1024)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_reset_fds)->Arg(0)->Arg(4)->Arg(64)->Arg(1024)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_worker_create)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  rlimit nofile{};  // the fd benchmarks hold thousands of host fds
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
