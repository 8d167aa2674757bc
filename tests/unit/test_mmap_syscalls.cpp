// The memory syscalls (src/linux/mmap.cpp) against a real AddressSpace, without KVM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kvm/address_space.hpp"
#include "guest_memory_test_access.hpp"
#include "kvm/guest_memory.hpp"
#include "linux/syscalls.hpp"

namespace kvms::linux {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;
constexpr int kRW = PROT_READ | PROT_WRITE;
constexpr int kAnon = MAP_PRIVATE | MAP_ANONYMOUS;

class MmapSyscalls : public ::testing::Test {
 protected:
  void SetUp() override { make(ProcessConfig{}); }

  void make(ProcessConfig config) {
    mem = kvm::GuestMemory::create(8ull << 30, 64 << 20);
    as = std::make_shared<kvm::AddressSpace>(mem);
    proc = std::make_unique<Process>(as, nullptr, config);
  }

  Process& p() { return *proc; }
  kvm::AddressSpace& mm() { return *as; }

  int64_t call(SyscallHandler h, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
               uint64_t a4 = 0, uint64_t a5 = 0) {
    SyscallArgs args;
    args.a[0] = a0, args.a[1] = a1, args.a[2] = a2, args.a[3] = a3, args.a[4] = a4, args.a[5] = a5;
    const int64_t r = h(p(), args);
    p().settle_memory();  // as dispatch_syscall does after every handler
    return r;
  }
  // What the tree may still charge (--max-memory minus guest memory and the host's costs), in pages.
  uint64_t room() const { return (proc->memory_limit() - proc->tree_memory_used()) & ~(kPage - 1); }
  int64_t mmap(uint64_t addr, uint64_t len, int prot, int flags, int fd = -1, uint64_t off = 0) {
    return call(sys_mmap, addr, len, static_cast<uint64_t>(prot), static_cast<uint64_t>(flags),
                static_cast<uint64_t>(static_cast<int64_t>(fd)), off);
  }
  int64_t munmap(uint64_t addr, uint64_t len) { return call(sys_munmap, addr, len); }
  int64_t mprotect(uint64_t addr, uint64_t len, int prot) { return call(sys_mprotect, addr, len, prot); }
  int64_t mremap(uint64_t addr, uint64_t old_len, uint64_t new_len, uint64_t flags, uint64_t new_addr = 0) {
    return call(sys_mremap, addr, old_len, new_len, flags, new_addr);
  }
  int64_t madvise(uint64_t addr, uint64_t len, int advice) { return call(sys_madvise, addr, len, advice); }
  int64_t brk(uint64_t addr) { return call(sys_brk, addr); }

  // Raw guest bytes, whatever the prot.
  uint8_t* raw(uint64_t addr) { return kvm::GuestMemoryTestAccess::user_base(*mem) + addr; }
  void fill(uint64_t addr, uint64_t len, uint8_t byte) { ASSERT_TRUE(mm().fill_user(addr, byte, len)); }
  bool all(uint64_t addr, uint64_t len, uint8_t byte) {
    for (uint64_t i = 0; i < len; ++i)
      if (raw(addr)[i] != byte) return false;
    return true;
  }
  std::string name_at(uint64_t addr) {
    const kvm::Mapping* m = mm().find(addr);
    return m ? m->name : "<unmapped>";
  }
  int prot_at(uint64_t addr) {
    const kvm::Mapping* m = mm().find(addr);
    return m ? m->prot : -1;
  }

  // A host temp file with `content`; returns its path.
  std::string temp_file(const std::string& content) {
    char path[] = "/tmp/kvms-mmap-test-XXXXXX";
    int fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);
    temps.push_back(path);
    return path;
  }
  int open_guest(const std::string& path, int flags, OpenFile::Kind kind = OpenFile::Kind::Regular) {
    int host = ::open(path.c_str(), flags | O_CLOEXEC);
    EXPECT_GE(host, 0) << path;
    return p().fds.install(std::make_shared<OpenFile>(host, kind, path, flags), false);
  }
  void TearDown() override {
    for (const auto& t : temps) unlink(t.c_str());
  }

  std::shared_ptr<kvm::GuestMemory> mem;
  std::shared_ptr<kvm::AddressSpace> as;
  std::unique_ptr<Process> proc;
  std::vector<std::string> temps;
};

TEST_F(MmapSyscalls, AnonymousMapWriteUnmap) {
  int64_t addr = mmap(0, 3 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  EXPECT_EQ(addr % kPage, 0);
  EXPECT_EQ(mm().mapped_bytes(), 3 * kPage);
  EXPECT_TRUE(all(addr, 3 * kPage, 0));
  fill(addr, 3 * kPage, 0xab);
  EXPECT_EQ(name_at(addr), "");
  EXPECT_EQ(prot_at(addr), kRW);

  const uint64_t generation_before = mm().flush_generation();
  EXPECT_EQ(munmap(addr + kPage, kPage), 0);
  EXPECT_EQ(mm().find(addr + kPage), nullptr);
  EXPECT_NE(mm().find(addr), nullptr);
  EXPECT_NE(mm().find(addr + 2 * kPage), nullptr);
  EXPECT_GT(mm().flush_generation(), generation_before);
  EXPECT_EQ(munmap(addr, 3 * kPage), 0);  // holes are fine
  EXPECT_EQ(mm().mapped_bytes(), 0u);
  EXPECT_EQ(munmap(addr, 3 * kPage), 0);  // already gone: still 0
}

TEST_F(MmapSyscalls, LengthIsRoundedUpAndMappingsDoNotOverlap) {
  int64_t a = mmap(0, 1, kRW, kAnon);
  int64_t b = mmap(0, kPage + 1, kRW, kAnon);
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  EXPECT_EQ(mm().mapped_bytes(), 3 * kPage);
  EXPECT_TRUE(uint64_t(a) >= uint64_t(b) + 2 * kPage || uint64_t(b) >= uint64_t(a) + kPage);
}

TEST_F(MmapSyscalls, MmapValidation) {
  EXPECT_EQ(mmap(0, 0, kRW, kAnon), -EINVAL);
  EXPECT_EQ(mmap(0x100000 + 1, kPage, kRW, kAnon | MAP_FIXED), -EINVAL);
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_ANONYMOUS), -EINVAL);             // neither private nor shared
  EXPECT_EQ(mmap(0, kPage, kRW, 0x04 | MAP_ANONYMOUS), -EINVAL);      // unknown map type
  EXPECT_EQ(mmap(0, kPage, kRW | 0x10, kAnon), -EINVAL);              // unknown prot bit
  EXPECT_EQ(mmap(0, ~0ull, kRW, kAnon), -ENOMEM);                     // rounding would overflow
  EXPECT_EQ(mmap(0, ~0ull - kPage, PROT_NONE, kAnon), -ENOMEM);
  EXPECT_EQ(mmap(0, kPage, kRW, kAnon, -1, 123), -EINVAL);            // unaligned offset
  EXPECT_EQ(mmap(0x1000, kPage, kRW, kAnon | MAP_FIXED), -EPERM);     // below mmap_min_addr
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_PRIVATE, 77), -EBADF);
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_PRIVATE, -1), -EBADF);
  EXPECT_EQ(mm().mapped_bytes(), 0u);
  // Flags Linux accepts and we ignore.
  for (int extra : {MAP_NORESERVE, MAP_POPULATE, MAP_STACK, MAP_GROWSDOWN, MAP_LOCKED}) {
    int64_t addr = mmap(0, kPage, kRW, kAnon | extra);
    EXPECT_GT(addr, 0) << extra;
  }
  EXPECT_GT(mmap(0, kPage, kRW, MAP_SHARED | MAP_ANONYMOUS), 0);
  // MAP_PRIVATE|MAP_SHARED is MAP_SHARED_VALIDATE, which Linux accepts only for files.
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_SHARED | kAnon), -EINVAL);
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_SHARED | MAP_ANONYMOUS | MAP_GROWSDOWN), -EINVAL);
  EXPECT_EQ(mmap(0, 2 * kMiB, kRW, kAnon | MAP_HUGETLB), -ENOMEM);
}

TEST_F(MmapSyscalls, SharedAnonymousIsUsable) {
  int64_t addr = mmap(0, 2 * kPage, kRW, MAP_SHARED | MAP_ANONYMOUS);
  ASSERT_GT(addr, 0);
  fill(addr, 2 * kPage, 7);
  EXPECT_EQ(name_at(addr), "/dev/zero (deleted)");
  // Shared memory keeps its data on MADV_DONTNEED (Linux refaults it from shmem); MADV_REMOVE frees it.
  EXPECT_EQ(madvise(addr, kPage, MADV_DONTNEED), 0);
  EXPECT_TRUE(all(addr, kPage, 7));
  EXPECT_EQ(madvise(addr, kPage, MADV_REMOVE), 0);
  EXPECT_TRUE(all(addr, kPage, 0));
  EXPECT_TRUE(all(addr + kPage, kPage, 7));
}

TEST_F(MmapSyscalls, FixedReplacesAndZeroes) {
  int64_t addr = mmap(0, 4 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  fill(addr, 4 * kPage, 0x55);
  EXPECT_EQ(mmap(addr + kPage, 2 * kPage, PROT_READ, kAnon | MAP_FIXED), addr + int64_t(kPage));
  EXPECT_TRUE(all(addr, kPage, 0x55));
  EXPECT_TRUE(all(addr + kPage, 2 * kPage, 0));
  EXPECT_TRUE(all(addr + 3 * kPage, kPage, 0x55));
  EXPECT_EQ(prot_at(addr + kPage), PROT_READ);
  EXPECT_EQ(prot_at(addr), kRW);
  EXPECT_EQ(mm().mapped_bytes(), 4 * kPage);

  // A fixed address nothing occupies.
  EXPECT_EQ(mmap(0x4000'0000, kPage, kRW, kAnon | MAP_FIXED), 0x4000'0000);
  // Beyond the guest's address space.
  EXPECT_EQ(mmap(mm().limit(), kPage, kRW, kAnon | MAP_FIXED), -ENOMEM);
  EXPECT_EQ(mmap(mm().limit() - kPage, 2 * kPage, kRW, kAnon | MAP_FIXED), -ENOMEM);
  EXPECT_EQ(mmap(0x7fff'ffff'f000ull, 2 * kPage, kRW, kAnon | MAP_FIXED), -ENOMEM);
}

TEST_F(MmapSyscalls, FixedNoReplace) {
  int64_t addr = mmap(0x5000'0000, 2 * kPage, kRW, kAnon | MAP_FIXED);
  ASSERT_EQ(addr, 0x5000'0000);
  fill(addr, 2 * kPage, 1);
  EXPECT_EQ(mmap(addr + kPage, 2 * kPage, kRW, kAnon | MAP_FIXED_NOREPLACE), -EEXIST);
  EXPECT_EQ(mmap(addr - kPage, 2 * kPage, kRW, kAnon | MAP_FIXED_NOREPLACE), -EEXIST);
  EXPECT_TRUE(all(addr, 2 * kPage, 1));
  EXPECT_EQ(mmap(addr + 2 * kPage, kPage, kRW, kAnon | MAP_FIXED_NOREPLACE), addr + int64_t(2 * kPage));
  EXPECT_EQ(mmap(addr + 1, kPage, kRW, kAnon | MAP_FIXED_NOREPLACE), -EINVAL);
}

TEST_F(MmapSyscalls, HintUsedWhenFreeElseElsewhere) {
  const uint64_t hint = 0x1234'5000;
  EXPECT_EQ(mmap(hint, 2 * kPage, kRW, kAnon), int64_t(hint));
  int64_t other = mmap(hint + kPage, kPage, kRW, kAnon);  // occupied: somewhere else, nothing replaced
  ASSERT_GT(other, 0);
  EXPECT_NE(uint64_t(other), hint + kPage);
  EXPECT_EQ(mm().mapped_bytes(), 3 * kPage);
  // An unaligned hint is rounded down.
  EXPECT_EQ(mmap(0x2000'0123, kPage, kRW, kAnon), 0x2000'0000);
  // A hint below mmap_min_addr is raised to it.
  int64_t low = mmap(0x1000, kPage, kRW, kAnon);
  EXPECT_EQ(low, int64_t(kvm::kUserMin));
}

TEST_F(MmapSyscalls, Map32Bit) {
  for (int i = 0; i < 3; ++i) {
    int64_t addr = mmap(0, kMiB, kRW, kAnon | MAP_32BIT);
    ASSERT_GT(addr, 0);
    EXPECT_GE(uint64_t(addr), 0x4000'0000u);
    EXPECT_LE(uint64_t(addr) + kMiB, 0x8000'0000u);
  }
  EXPECT_EQ(mmap(0, 2 * kGiB, PROT_NONE, kAnon | MAP_32BIT), -ENOMEM);  // the window is 1 GiB
  // Fill the window; then it is full.
  ProcessConfig big;
  big.limits.memory = 4 * kGiB;
  make(big);
  EXPECT_GT(mmap(0, kGiB - kPage, PROT_NONE, kAnon | MAP_32BIT), 0);
  EXPECT_GT(mmap(0, kPage, kRW, kAnon | MAP_32BIT), 0);
  EXPECT_EQ(mmap(0, kPage, kRW, kAnon | MAP_32BIT), -ENOMEM);
}

TEST_F(MmapSyscalls, HugeRequestsFailWithEnomem) {
  const uint64_t tb = 1ull << 40;
  EXPECT_EQ(mmap(0, tb, kRW, kAnon), -ENOMEM);
  EXPECT_EQ(mmap(0, tb, PROT_NONE, kAnon), -ENOMEM);
  EXPECT_EQ(mmap(0x10'0000'0000ull, tb, PROT_NONE, kAnon | MAP_FIXED), -ENOMEM);
  EXPECT_EQ(mmap(0x10'0000'0000ull, kPage, kRW, kAnon | MAP_FIXED), -ENOMEM);  // beyond 8 GiB
  ProcessConfig unlimited;
  unlimited.limits.memory = ~0ull;
  make(unlimited);
  EXPECT_EQ(mmap(0, tb, kRW, kAnon), -ENOMEM);
  EXPECT_EQ(mmap(0, 9 * kGiB, kRW, kAnon), -ENOMEM);
  EXPECT_EQ(mm().mapped_bytes(), 0u);
  // The space is still usable afterwards.
  EXPECT_GT(mmap(0, kPage, kRW, kAnon), 0);
}

TEST_F(MmapSyscalls, MemoryLimit) {
  ProcessConfig config;
  config.limits.memory = 16 * kMiB;
  make(config);
  // The process's own host costs (its VM, vCPU, page tables) come out of the limit first.
  EXPECT_GE(p().tree_memory_used(), host_cost::process(mm().limit()) + host_cost::kVcpu);
  int64_t a = mmap(0, 8 * kMiB, kRW, kAnon);
  ASSERT_GT(a, 0);
  EXPECT_EQ(mmap(0, room() + kPage, kRW, kAnon), -ENOMEM);
  // What is left, less what mapping it costs (its page tables): fits, and then nothing more.
  constexpr uint64_t kTables = 64 * 1024;
  EXPECT_GT(mmap(0, room() - kTables, PROT_READ, kAnon), 0);
  EXPECT_EQ(mmap(0, kTables, kRW, kAnon), -ENOMEM);
  EXPECT_LE(p().tree_memory_used(), 16 * kMiB);
  // Replacing accessible memory with MAP_FIXED costs only the difference.
  EXPECT_EQ(mmap(a, 8 * kMiB, PROT_READ, kAnon | MAP_FIXED), a);
  // Reservations are free.
  int64_t r = mmap(0, 4 * kGiB, PROT_NONE, kAnon);
  ASSERT_GT(r, 0);
  EXPECT_EQ(mprotect(r, kTables, kRW), -ENOMEM);
  const uint64_t mapped = mm().mapped_bytes();
  EXPECT_EQ(munmap(a, 4 * kMiB), 0);
  EXPECT_EQ(mm().mapped_bytes(), mapped - 4 * kMiB);
  EXPECT_EQ(mprotect(r, 4 * kMiB, kRW), 0);
  EXPECT_EQ(mprotect(r, 4 * kMiB, PROT_READ), 0);  // no change in accessible bytes
  EXPECT_EQ(mprotect(r, 4 * kMiB + kTables, PROT_READ), -ENOMEM);
  EXPECT_EQ(mm().mapped_bytes(), mapped);
  // brk cannot go past it either.
  p().brk_start = p().brk_current = 0x100'0000;
  EXPECT_EQ(brk(0x100'0000 + kTables), 0x100'0000);
  // Nor can mremap.
  EXPECT_EQ(mremap(r, 4 * kMiB, 4 * kMiB + kTables, MREMAP_MAYMOVE), -ENOMEM);
}

TEST_F(MmapSyscalls, ProtNoneReservationIsCheap) {
  const uint64_t before = mm().mapped_bytes();
  const uint64_t tables = mm().page_table_pages();
  const uint64_t resident = mem->resident_pages();
  int64_t r = mmap(0, 4 * kGiB, PROT_NONE, kAnon | MAP_NORESERVE);
  ASSERT_GT(r, 0);
  EXPECT_EQ(mm().mapped_bytes(), before);
  EXPECT_EQ(mm().page_table_pages(), tables);
  EXPECT_LE(mem->resident_pages(), resident + 1);
  EXPECT_EQ(mprotect(r + kGiB, kMiB, kRW), 0);
  EXPECT_EQ(mm().mapped_bytes(), before + kMiB);
  uint64_t v = 0x1122334455667788;
  EXPECT_TRUE(mm().write(r + kGiB + 8, v));
  uint64_t back = 0;
  EXPECT_TRUE(mm().read(r + kGiB + 8, back));
  EXPECT_EQ(back, v);
  EXPECT_FALSE(mm().write(r, v));  // the rest is still inaccessible
  EXPECT_LT(mm().page_table_pages() - tables, 8u);
}

TEST_F(MmapSyscalls, Mprotect) {
  int64_t addr = mmap(0, 4 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  EXPECT_EQ(mprotect(addr + kPage, kPage, PROT_READ), 0);
  EXPECT_EQ(prot_at(addr + kPage), PROT_READ);
  EXPECT_EQ(prot_at(addr), kRW);
  EXPECT_FALSE(mm().write<uint8_t>(addr + kPage, 1));
  EXPECT_EQ(mprotect(addr, 1, PROT_READ | PROT_EXEC), 0);  // length rounds up
  EXPECT_EQ(prot_at(addr), PROT_READ | PROT_EXEC);
  EXPECT_EQ(mprotect(addr + 1, kPage, PROT_READ), -EINVAL);
  EXPECT_EQ(mprotect(addr, kPage, 0x10), -EINVAL);
  EXPECT_EQ(mprotect(addr, 0, PROT_READ), 0);
  EXPECT_EQ(munmap(addr + 2 * kPage, kPage), 0);
  EXPECT_EQ(mprotect(addr, 4 * kPage, PROT_READ), -ENOMEM);  // hole
  EXPECT_EQ(prot_at(addr + 3 * kPage), kRW);                 // nothing changed
  EXPECT_EQ(mprotect(addr, ~0ull - kPage, PROT_READ), -ENOMEM);
  EXPECT_EQ(mprotect(addr, kPage, PROT_NONE), 0);
  EXPECT_EQ(prot_at(addr), PROT_NONE);
  EXPECT_EQ(mprotect(addr, kPage, PROT_READ | PROT_GROWSUP), -EINVAL);
}

TEST_F(MmapSyscalls, MprotectGrowsDownExtendsToStackStart) {
  const uint64_t stack = 0x7000'0000;
  ASSERT_EQ(mm().map(stack, 16 * kPage, kRW, "[stack]"), 0);
  EXPECT_EQ(mprotect(stack + 8 * kPage, kPage, PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN), 0);
  EXPECT_EQ(prot_at(stack), PROT_READ | PROT_WRITE | PROT_EXEC);
  EXPECT_EQ(prot_at(stack + 8 * kPage), PROT_READ | PROT_WRITE | PROT_EXEC);
  EXPECT_EQ(prot_at(stack + 9 * kPage), kRW);
  int64_t other = mmap(0, kPage, kRW, kAnon);
  EXPECT_EQ(mprotect(other, kPage, PROT_READ | PROT_GROWSDOWN), -EINVAL);
}

TEST_F(MmapSyscalls, MunmapValidation) {
  EXPECT_EQ(munmap(0x100001, kPage), -EINVAL);
  EXPECT_EQ(munmap(0x100000, 0), -EINVAL);
  EXPECT_EQ(munmap(0x100000, ~0ull - kPage), -EINVAL);
  EXPECT_EQ(munmap(0x7fff'0000'0000ull, kPage), 0);  // past our limit but a valid user address
}

TEST_F(MmapSyscalls, BrkGrowShrink) {
  const uint64_t base = 0x40'0000;
  p().brk_start = p().brk_current = base;
  EXPECT_EQ(brk(0), int64_t(base));
  EXPECT_EQ(brk(base - kPage), int64_t(base));  // below the start: unchanged
  EXPECT_EQ(brk(base + 100000), int64_t(base + 100000));
  EXPECT_EQ(p().brk_current, base + 100000);
  EXPECT_EQ(name_at(base), "[heap]");
  EXPECT_EQ(prot_at(base), kRW);
  EXPECT_EQ(mm().mapped_bytes(), kvm::page_up(100000));
  fill(base, 100000, 0x77);
  EXPECT_EQ(brk(0), int64_t(base + 100000));
  // Within the same page: only the break moves.
  EXPECT_EQ(brk(base + 100001), int64_t(base + 100001));
  EXPECT_EQ(mm().mapped_bytes(), kvm::page_up(100000));
  // Growing keeps the old bytes, the new ones are zero.
  EXPECT_EQ(brk(base + 200000), int64_t(base + 200000));
  EXPECT_TRUE(all(base, 100000, 0x77));
  EXPECT_TRUE(all(kvm::page_up(base + 100001), kvm::page_up(base + 200000) - kvm::page_up(base + 100001), 0));
  // Shrinking unmaps whole pages above the new break.
  EXPECT_EQ(brk(base + 5000), int64_t(base + 5000));
  EXPECT_EQ(mm().mapped_bytes(), 2 * kPage);
  EXPECT_EQ(mm().find(base + 2 * kPage), nullptr);
  EXPECT_TRUE(all(base, 5000, 0x77));
  // Growing again gives zeros where the old heap was.
  EXPECT_EQ(brk(base + 3 * kPage), int64_t(base + 3 * kPage));
  EXPECT_TRUE(all(base + 2 * kPage, kPage, 0));
  EXPECT_EQ(brk(base), int64_t(base));
  EXPECT_EQ(mm().mapped_bytes(), 0u);
}

TEST_F(MmapSyscalls, BrkRefusesToOverlap) {
  const uint64_t base = 0x40'0000;
  p().brk_start = p().brk_current = base;
  ASSERT_EQ(mmap(base + kMiB, kPage, kRW, kAnon | MAP_FIXED), int64_t(base + kMiB));
  EXPECT_EQ(brk(base + 2 * kMiB), int64_t(base));
  EXPECT_EQ(brk(base + kMiB), int64_t(base));  // would touch the mapping: Linux keeps a page gap
  EXPECT_EQ(brk(base + kMiB - kPage), int64_t(base + kMiB - kPage));
  EXPECT_EQ(mm().mapped_bytes(), kMiB);
  EXPECT_EQ(brk(mm().limit() + kPage), int64_t(base + kMiB - kPage));
}

TEST_F(MmapSyscalls, MremapShrinkAndGrowInPlace) {
  int64_t addr = mmap(0x5000'0000, 4 * kPage, kRW, kAnon);
  ASSERT_EQ(addr, 0x5000'0000);
  fill(addr, 4 * kPage, 3);
  EXPECT_EQ(mremap(addr, 4 * kPage, 2 * kPage, 0), addr);
  EXPECT_EQ(mm().find(addr + 2 * kPage), nullptr);
  EXPECT_EQ(mm().mapped_bytes(), 2 * kPage);
  EXPECT_EQ(mremap(addr, 2 * kPage, 6 * kPage, 0), addr);  // the following range is free
  EXPECT_EQ(mm().mapped_bytes(), 6 * kPage);
  EXPECT_TRUE(all(addr, 2 * kPage, 3));
  EXPECT_TRUE(all(addr + 2 * kPage, 4 * kPage, 0));
  EXPECT_EQ(mremap(addr, 6 * kPage, 6 * kPage, 0), addr);
}

TEST_F(MmapSyscalls, MremapMovePreservesBytesProtAndName) {
  int64_t addr = mmap(0x5000'0000, 3 * kPage, PROT_READ | PROT_WRITE, kAnon);
  ASSERT_EQ(addr, 0x5000'0000);
  for (uint64_t i = 0; i < 3 * kPage; ++i) raw(addr)[i] = uint8_t(i * 7);
  ASSERT_EQ(mmap(addr + 3 * kPage, kPage, PROT_READ, kAnon | MAP_FIXED), addr + int64_t(3 * kPage));  // blocker
  EXPECT_EQ(mremap(addr, 3 * kPage, 8 * kPage, 0), -ENOMEM);  // cannot grow in place, may not move
  int64_t moved = mremap(addr, 3 * kPage, 8 * kPage, MREMAP_MAYMOVE);
  ASSERT_GT(moved, 0);
  EXPECT_NE(moved, addr);
  for (uint64_t i = 0; i < 3 * kPage; ++i) ASSERT_EQ(raw(moved)[i], uint8_t(i * 7)) << i;
  EXPECT_TRUE(all(moved + 3 * kPage, 5 * kPage, 0));
  EXPECT_EQ(mm().find(addr), nullptr);
  EXPECT_EQ(prot_at(moved), kRW);
  EXPECT_EQ(prot_at(moved + 7 * kPage), kRW);
  EXPECT_EQ(mm().mapped_bytes(), 9 * kPage);

  // A named, read-only, PROT_NONE-ish mapping keeps what it is.
  ASSERT_EQ(mm().map(0x6000'0000, 2 * kPage, PROT_READ, "/some/file"), 0);
  raw(0x6000'0000)[5] = 42;
  int64_t m2 = mremap(0x6000'0000, 2 * kPage, 2 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, 0x6100'0000);
  EXPECT_EQ(m2, 0x6100'0000);
  EXPECT_EQ(name_at(0x6100'0000), "/some/file");
  EXPECT_EQ(prot_at(0x6100'0000), PROT_READ);
  EXPECT_EQ(raw(0x6100'0000)[5], 42);
  EXPECT_EQ(mm().find(0x6000'0000), nullptr);

  ASSERT_EQ(mm().map(0x6200'0000, kPage, PROT_NONE, ""), 0);
  raw(0x6200'0000)[9] = 9;
  int64_t m3 = mremap(0x6200'0000, kPage, 4 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, 0x6300'0000);
  EXPECT_EQ(m3, 0x6300'0000);
  EXPECT_EQ(raw(0x6300'0000)[9], 9);
  EXPECT_EQ(prot_at(0x6300'0000), PROT_NONE);
  EXPECT_EQ(prot_at(0x6300'0000 + 3 * kPage), PROT_NONE);
}

TEST_F(MmapSyscalls, MremapMovesAcrossSplitPieces) {
  // Two adjacent anonymous mappings Linux would have merged move as one.
  ASSERT_EQ(mmap(0x5000'0000, kPage, kRW, kAnon | MAP_FIXED), 0x5000'0000);
  ASSERT_EQ(mmap(0x5000'1000, kPage, kRW, kAnon | MAP_FIXED), 0x5000'1000);
  ASSERT_EQ(mmap(0x5000'2000, kPage, PROT_READ, kAnon | MAP_FIXED), 0x5000'2000);
  raw(0x5000'1000)[0] = 1;
  int64_t moved = mremap(0x5000'0000, 2 * kPage, 4 * kPage, MREMAP_MAYMOVE);
  ASSERT_GT(moved, 0);
  EXPECT_EQ(raw(moved + kPage)[0], 1);
  // Different prot: not one mapping.
  ASSERT_EQ(mmap(0x5000'1000, kPage, kRW, kAnon | MAP_FIXED), 0x5000'1000);
  EXPECT_EQ(mremap(0x5000'1000, 2 * kPage, 4 * kPage, MREMAP_MAYMOVE), -EFAULT);
}

TEST_F(MmapSyscalls, MremapErrors) {
  int64_t addr = mmap(0, 2 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  EXPECT_EQ(mremap(addr + 1, kPage, 2 * kPage, MREMAP_MAYMOVE), -EINVAL);
  EXPECT_EQ(mremap(addr, kPage, 0, MREMAP_MAYMOVE), -EINVAL);
  EXPECT_EQ(mremap(addr, kPage, 2 * kPage, 0x80), -EINVAL);
  EXPECT_EQ(mremap(addr, kPage, 2 * kPage, MREMAP_FIXED, 0x7000'0000), -EINVAL);  // FIXED needs MAYMOVE
  EXPECT_EQ(mremap(addr, kPage, 2 * kPage, MREMAP_MAYMOVE | MREMAP_DONTUNMAP), -EINVAL);
  EXPECT_EQ(mremap(addr, 0, kPage, MREMAP_MAYMOVE), -EINVAL);  // duplicating needs shared memory
  EXPECT_EQ(mremap(0x7000'0000, kPage, 2 * kPage, MREMAP_MAYMOVE), -EFAULT);
  EXPECT_EQ(mremap(addr, 3 * kPage, 4 * kPage, MREMAP_MAYMOVE), -EFAULT);  // leaves the mapping
  EXPECT_EQ(mremap(addr, 2 * kPage, 2 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, addr + kPage), -EINVAL);
  EXPECT_EQ(mremap(addr, 2 * kPage, 2 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, 0x7000'0001), -EINVAL);
  EXPECT_EQ(mremap(addr, kPage, 1ull << 40, MREMAP_MAYMOVE), -ENOMEM);
}

TEST_F(MmapSyscalls, MremapDontUnmap) {
  int64_t addr = mmap(0, 2 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  fill(addr, 2 * kPage, 0x31);
  int64_t moved = mremap(addr, 2 * kPage, 2 * kPage, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
  ASSERT_GT(moved, 0);
  EXPECT_NE(moved, addr);
  EXPECT_TRUE(all(moved, 2 * kPage, 0x31));
  EXPECT_TRUE(all(addr, 2 * kPage, 0));  // still mapped, emptied
  EXPECT_EQ(prot_at(addr), kRW);
}

TEST_F(MmapSyscalls, MadviseDontNeedZeroesAnonymousMemory) {
  int64_t addr = mmap(0, 4 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  fill(addr, 4 * kPage, 0xee);
  EXPECT_EQ(madvise(addr + kPage, 2 * kPage, MADV_DONTNEED), 0);
  EXPECT_TRUE(all(addr, kPage, 0xee));
  EXPECT_TRUE(all(addr + kPage, 2 * kPage, 0));
  EXPECT_TRUE(all(addr + 3 * kPage, kPage, 0xee));
  EXPECT_EQ(prot_at(addr + kPage), kRW);
  EXPECT_EQ(mm().mapped_bytes(), 4 * kPage);
  fill(addr, 4 * kPage, 0xee);
  EXPECT_EQ(madvise(addr, 4 * kPage, MADV_FREE), 0);
  EXPECT_TRUE(all(addr, 4 * kPage, 0));
  // The heap is anonymous too.
  p().brk_start = p().brk_current = 0x40'0000;
  ASSERT_EQ(brk(0x40'0000 + 2 * kPage), 0x40'0000 + int64_t(2 * kPage));
  fill(0x40'0000, 2 * kPage, 5);
  EXPECT_EQ(madvise(0x40'0000, kPage, MADV_DONTNEED), 0);
  EXPECT_TRUE(all(0x40'0000, kPage, 0));
  EXPECT_EQ(name_at(0x40'0000), "[heap]");
}

TEST_F(MmapSyscalls, MadviseAdviceAndErrors) {
  int64_t addr = mmap(0, 4 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  fill(addr, 4 * kPage, 0x12);
  for (int advice : {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTFORK, MADV_DOFORK,
                     MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP, MADV_MERGEABLE}) {
    EXPECT_EQ(madvise(addr, 4 * kPage, advice), 0) << advice;
  }
  EXPECT_TRUE(all(addr, 4 * kPage, 0x12));
  EXPECT_EQ(madvise(addr, kPage, 12345), -EINVAL);
  EXPECT_EQ(madvise(addr + 1, kPage, MADV_NORMAL), -EINVAL);
  EXPECT_EQ(madvise(addr, 0, MADV_DONTNEED), 0);
  EXPECT_EQ(madvise(addr, kPage, MADV_REMOVE), -EINVAL);  // private memory
  EXPECT_EQ(madvise(addr, ~0ull, MADV_DONTNEED), -EINVAL);
  EXPECT_EQ(madvise(0x7000'0000, kPage, MADV_DONTNEED), -ENOMEM);
  EXPECT_EQ(madvise(0x7000'0000, kPage, MADV_NORMAL), -ENOMEM);
  // A hole in the middle: the mapped parts are still handled, the result is ENOMEM.
  EXPECT_EQ(munmap(addr + kPage, kPage), 0);
  EXPECT_EQ(madvise(addr, 4 * kPage, MADV_DONTNEED), -ENOMEM);
  EXPECT_TRUE(all(addr, kPage, 0));
  EXPECT_TRUE(all(addr + 2 * kPage, 2 * kPage, 0));
}

TEST_F(MmapSyscalls, FileMappingPrivate) {
  std::string content(5000, 'x');
  for (size_t i = 0; i < content.size(); ++i) content[i] = char('a' + i % 26);
  const std::string path = temp_file(content);
  int fd = open_guest(path, O_RDONLY);
  ASSERT_GE(fd, 0);

  int64_t addr = mmap(0, 3 * kPage, PROT_READ, MAP_PRIVATE, fd, 0);
  ASSERT_GT(addr, 0);
  EXPECT_EQ(std::memcmp(raw(addr), content.data(), content.size()), 0);
  EXPECT_TRUE(all(addr + content.size(), 3 * kPage - content.size(), 0));  // past EOF
  EXPECT_EQ(name_at(addr), path);
  EXPECT_EQ(prot_at(addr), PROT_READ);
  EXPECT_FALSE(mm().write<uint8_t>(addr, 1));

  // Writable private copy with an offset; the file does not change.
  int64_t w = mmap(0, kPage, kRW | PROT_EXEC, MAP_PRIVATE, fd, kPage);
  ASSERT_GT(w, 0);
  EXPECT_EQ(std::memcmp(raw(w), content.data() + kPage, content.size() - kPage), 0);
  EXPECT_TRUE(mm().write<uint8_t>(w, '!'));
  char first = 0;
  ASSERT_EQ(pread(p().fds.get(fd)->host_fd, &first, 1, kPage), 1);
  EXPECT_EQ(first, content[kPage]);

  // Offset past EOF: all zeros.
  int64_t z = mmap(0, kPage, PROT_READ, MAP_PRIVATE, fd, 16 * kPage);
  ASSERT_GT(z, 0);
  EXPECT_TRUE(all(z, kPage, 0));

  // PROT_NONE: the bytes are there once it becomes readable.
  int64_t n = mmap(0, 2 * kPage, PROT_NONE, MAP_PRIVATE, fd, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(prot_at(n), PROT_NONE);
  EXPECT_EQ(mprotect(n, 2 * kPage, PROT_READ), 0);
  EXPECT_EQ(std::memcmp(raw(n), content.data(), content.size()), 0);

  // MAP_FIXED over anonymous memory.
  int64_t anon = mmap(0, 2 * kPage, kRW, kAnon);
  fill(anon, 2 * kPage, 0xff);
  EXPECT_EQ(mmap(anon, 2 * kPage, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0), anon);
  EXPECT_EQ(std::memcmp(raw(anon), content.data(), content.size()), 0);
  EXPECT_TRUE(all(anon + content.size(), 2 * kPage - content.size(), 0));

  // MADV_DONTNEED on a file mapping keeps the file's bytes.
  EXPECT_EQ(madvise(addr, kPage, MADV_DONTNEED), 0);
  EXPECT_EQ(std::memcmp(raw(addr), content.data(), kPage), 0);
  EXPECT_EQ(madvise(addr, kPage, MADV_FREE), -EINVAL);

  EXPECT_EQ(mmap(0, kPage, PROT_READ, MAP_PRIVATE, fd, 100), -EINVAL);  // unaligned offset
}

TEST_F(MmapSyscalls, FileMappingSharedAndErrors) {
  const std::string path = temp_file("shared bytes");
  int ro = open_guest(path, O_RDONLY);
  int rw = open_guest(path, O_RDWR);
  int wo = open_guest(path, O_WRONLY);
  int ap = open_guest(path, O_RDWR | O_APPEND);

  int64_t s = mmap(0, kPage, PROT_READ, MAP_SHARED, ro, 0);
  ASSERT_GT(s, 0);
  EXPECT_EQ(std::memcmp(raw(s), "shared bytes", 12), 0);
  EXPECT_GT(mmap(0, kPage, PROT_READ | PROT_EXEC, MAP_SHARED_VALIDATE, rw, 0), 0);
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_SHARED, ro, 0), -EACCES);  // Linux: not open for writing
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_SHARED, ap, 0), -EACCES);  // Linux: append-only
  // A plain run's process shares the file itself (issue 12): writes through the mapping are the file's.
  const int64_t shared = mmap(0, kPage, kRW, MAP_SHARED, rw, 0);
  ASSERT_GT(shared, 0);
  ASSERT_TRUE(mm().copy_to_user(uint64_t(shared), "SHARED", 6));
  char back[7] = {};
  ASSERT_EQ(pread(p().fds.get(rw)->host_fd, back, 6, 0), 6);
  EXPECT_STREQ(back, "SHARED");
  EXPECT_EQ(munmap(shared, kPage), 0);
  ASSERT_EQ(pread(p().fds.get(rw)->host_fd, back, 6, 0), 6);  // the file keeps it
  EXPECT_STREQ(back, "SHARED");
  // A template (a server's, whose workers' resets copy pages back) cannot share: ENODEV.
  struct NoHooks : ServerHooks {
    bool before_wait(Process&, bool, bool) override { return false; }
    bool listener_hidden(const Process&) const override { return false; }
    void on_accept(Process&, int) override {}
  } hooks;
  p().server = &hooks;
  EXPECT_EQ(mmap(0, kPage, kRW, MAP_SHARED, rw, 0), -ENODEV);
  p().server = nullptr;
  EXPECT_EQ(mmap(0, kPage, PROT_READ, MAP_PRIVATE, wo, 0), -EACCES);
  EXPECT_EQ(mmap(0, kPage, PROT_READ, MAP_SHARED, wo, 0), -EACCES);
  EXPECT_EQ(mmap(0, kPage, PROT_READ, MAP_SHARED_VALIDATE | 0x80000 /* MAP_SYNC */, ro, 0), -EOPNOTSUPP);
  EXPECT_EQ(mmap(0, kPage, PROT_READ, MAP_PRIVATE | MAP_HUGETLB, ro, 0), -EINVAL);
  EXPECT_EQ(mmap(0, kPage, PROT_READ, 0, ro, 0), -EINVAL);

  int dir = open_guest("/tmp", O_RDONLY | O_DIRECTORY, OpenFile::Kind::Directory);
  EXPECT_EQ(mmap(0, kPage, PROT_READ, MAP_PRIVATE, dir, 0), -ENODEV);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  close(fds[1]);
  int pipe_fd = p().fds.install(std::make_shared<OpenFile>(fds[0], OpenFile::Kind::Pipe, "pipe:[1]", O_RDONLY), false);
  EXPECT_EQ(mmap(0, kPage, PROT_READ, MAP_PRIVATE, pipe_fd, 0), -ENODEV);

  // /dev/zero is anonymous memory.
  int zero = open_guest("/dev/zero", O_RDWR, OpenFile::Kind::CharDevice);
  int64_t z = mmap(0, 2 * kPage, kRW, MAP_PRIVATE, zero, 0);
  ASSERT_GT(z, 0);
  EXPECT_TRUE(all(z, 2 * kPage, 0));
  EXPECT_EQ(name_at(z), "");
  EXPECT_GT(mmap(0, kPage, kRW, MAP_SHARED, zero, 0), 0);
}

TEST_F(MmapSyscalls, FileMappingCountsTowardTheLimit) {
  ProcessConfig config;
  config.limits.memory = 2 * kPage;  // less than the process itself costs: nothing accessible fits
  make(config);
  const std::string path = temp_file(std::string(3 * kPage, 'q'));
  int fd = open_guest(path, O_RDONLY);
  EXPECT_EQ(mmap(0, 3 * kPage, PROT_READ, MAP_PRIVATE, fd, 0), -ENOMEM);
  int64_t n = mmap(0, 3 * kPage, PROT_NONE, MAP_PRIVATE, fd, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(mm().mapped_bytes(), 0u);
  EXPECT_EQ(raw(n)[3 * kPage - 1], 'q');
}

TEST_F(MmapSyscalls, HostWritesAreTracked) {
  // Workers reset by restoring the pages written since the fork; host-side copies must be recorded.
  const std::string path = temp_file(std::string(2 * kPage, 'f'));
  int fd = open_guest(path, O_RDONLY);
  int64_t src = mmap(0x5000'0000, 2 * kPage, kRW, kAnon | MAP_FIXED);
  ASSERT_EQ(src, 0x5000'0000);
  raw(src + kPage)[0] = 1;  // page 0 stays zero
  mm().track_host_writes(true);
  int64_t f = mmap(0x6000'0000, 2 * kPage, PROT_NONE, MAP_PRIVATE | MAP_FIXED, fd, 0);
  ASSERT_EQ(f, 0x6000'0000);
  ASSERT_EQ(mremap(src, 2 * kPage, 2 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, 0x7000'0000), 0x7000'0000);
  auto& pages = mm().host_written_pages();
  auto has = [&](uint64_t addr) { return std::find(pages.begin(), pages.end(), addr >> 12) != pages.end(); };
  EXPECT_TRUE(has(0x6000'0000));
  EXPECT_TRUE(has(0x6000'1000));
  EXPECT_TRUE(has(0x7000'1000));
  EXPECT_FALSE(has(0x7000'0000));  // a zero page is not copied
  EXPECT_EQ(raw(0x6000'1000)[kPage - 1], 'f');
}

TEST_F(MmapSyscalls, LockSyncMincore) {
  int64_t addr = mmap(0, 3 * kPage, kRW, kAnon);
  ASSERT_GT(addr, 0);
  EXPECT_EQ(call(sys_mlock, addr + 10, 2 * kPage), 0);  // rounded out to pages
  EXPECT_EQ(call(sys_munlock, addr, 3 * kPage), 0);
  EXPECT_EQ(call(sys_mlock, addr, 4 * kPage), -ENOMEM);
  EXPECT_EQ(call(sys_mlock, addr, 0), 0);
  EXPECT_EQ(call(sys_mlock, addr, 64 * kMiB), -ENOMEM);  // RLIMIT_MEMLOCK is 8 MiB
  EXPECT_EQ(call(sys_munlock, 0x7000'0000, kPage), -ENOMEM);

  EXPECT_EQ(call(sys_msync, addr, 3 * kPage, MS_SYNC), 0);
  EXPECT_EQ(call(sys_msync, addr, kPage, MS_ASYNC | MS_INVALIDATE), 0);
  EXPECT_EQ(call(sys_msync, addr, kPage, MS_ASYNC | MS_SYNC), -EINVAL);
  EXPECT_EQ(call(sys_msync, addr, kPage, 0x100), -EINVAL);
  EXPECT_EQ(call(sys_msync, addr + 1, kPage, MS_SYNC), -EINVAL);
  EXPECT_EQ(call(sys_msync, addr, 4 * kPage, MS_SYNC), -ENOMEM);

  int64_t vec = mmap(0, kPage, kRW, kAnon);
  ASSERT_GT(vec, 0);
  fill(vec, kPage, 0xcc);
  EXPECT_EQ(call(sys_mincore, addr, 2 * kPage + 1, vec), 0);
  EXPECT_EQ(raw(vec)[0], 1);
  EXPECT_EQ(raw(vec)[1], 1);
  EXPECT_EQ(raw(vec)[2], 1);
  EXPECT_EQ(raw(vec)[3], 0xcc);
  EXPECT_EQ(call(sys_mincore, addr, 4 * kPage, vec), -ENOMEM);
  EXPECT_EQ(call(sys_mincore, addr + 1, kPage, vec), -EINVAL);
  EXPECT_EQ(call(sys_mincore, addr, kPage, 0x7000'0000), -EFAULT);
  EXPECT_EQ(call(sys_mincore, addr, 0, vec), 0);
}

TEST_F(MmapSyscalls, WorksOnForkedMemory) {
  int64_t addr = mmap(0x5000'0000, 4 * kPage, kRW, kAnon | MAP_FIXED);
  ASSERT_EQ(addr, 0x5000'0000);
  fill(addr, 4 * kPage, 0x61);
  // A worker: copy-on-write memory, a copy of the address space and of the process.
  auto child_mem = kvm::GuestMemory::fork_private(mem);
  auto child_as = std::make_shared<kvm::AddressSpace>(*as, child_mem);
  Process child(p(), child_as);
  auto call_child = [&](SyscallHandler h, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3 = 0) {
    SyscallArgs args;
    args.a[0] = a0, args.a[1] = a1, args.a[2] = a2, args.a[3] = a3;
    return h(child, args);
  };
  EXPECT_EQ(call_child(sys_madvise, addr, kPage, MADV_DONTNEED), 0);
  EXPECT_EQ(kvm::GuestMemoryTestAccess::user_base(*child_mem)[addr], 0);
  EXPECT_EQ(kvm::GuestMemoryTestAccess::user_base(*child_mem)[addr + kPage], 0x61);
  // Grows in place (the pages after it are free), then moves.
  EXPECT_EQ(call_child(sys_mremap, addr + kPage, 3 * kPage, 8 * kPage, MREMAP_MAYMOVE), addr + int64_t(kPage));
  SyscallArgs fixed;
  fixed.a[0] = addr + kPage, fixed.a[1] = 8 * kPage, fixed.a[2] = 8 * kPage;
  fixed.a[3] = MREMAP_MAYMOVE | MREMAP_FIXED, fixed.a[4] = 0x6000'0000;
  ASSERT_EQ(sys_mremap(child, fixed), 0x6000'0000);
  EXPECT_EQ(kvm::GuestMemoryTestAccess::user_base(*child_mem)[0x6000'0000 + 3 * kPage - 1], 0x61);
  EXPECT_EQ(kvm::GuestMemoryTestAccess::user_base(*child_mem)[0x6000'0000 + 3 * kPage], 0);
  EXPECT_EQ(child_as->find(addr + kPage), nullptr);
  // The parent is untouched.
  EXPECT_TRUE(all(addr, 4 * kPage, 0x61));
  EXPECT_EQ(mm().find(0x6000'0000), nullptr);
  EXPECT_EQ(mm().mapped_bytes(), 4 * kPage);
}

// MADV_WIPEONFORK / MADV_DONTFORK are remembered per mapping (through splits, mremap and
// MADV_KEEPONFORK / MADV_DOFORK) and applied to a copy: a guest fork applies both, a worker's reset
// only the wipe (the copy runs the whole server; V8 marks its heap MADV_DONTFORK).
TEST_F(MmapSyscalls, ForkFlagsApplyToCopies) {
  int64_t addr = mmap(0x5000'0000, 6 * kPage, kRW, kAnon | MAP_FIXED);
  ASSERT_EQ(addr, 0x5000'0000);
  fill(addr, 6 * kPage, 0x61);
  EXPECT_EQ(madvise(addr, 2 * kPage, MADV_WIPEONFORK), 0);             // pages 0-1
  EXPECT_EQ(madvise(addr + kPage, kPage, MADV_KEEPONFORK), 0);         // page 1 back to normal
  EXPECT_EQ(madvise(addr + 3 * kPage, 2 * kPage, MADV_DONTFORK), 0);   // pages 3-4
  EXPECT_EQ(madvise(addr + 4 * kPage, kPage, MADV_DOFORK), 0);         // page 4 back to normal
  EXPECT_EQ(madvise(0x7000'0000, kPage, MADV_WIPEONFORK), -ENOMEM);
  EXPECT_TRUE(all(addr, 6 * kPage, 0x61));  // marking changes nothing in the process itself
  ASSERT_NE(mm().find(addr), nullptr);
  EXPECT_EQ(mm().find(addr)->fork_flags, kvm::kWipeOnFork);

  auto copy = [&](uint8_t which) {
    auto child_mem = kvm::GuestMemory::fork_private(mem);
    auto child_as = std::make_shared<kvm::AddressSpace>(*as, child_mem);
    child_as->apply_fork_flags(which);
    return std::make_pair(child_mem, child_as);
  };
  auto [fork_mem, fork_as] = copy(kvm::kWipeOnFork | kvm::kDontFork);
  const uint8_t* f = kvm::GuestMemoryTestAccess::user_base(*fork_mem) + addr;
  EXPECT_EQ(f[0], 0);
  EXPECT_EQ(f[kPage - 1], 0);
  EXPECT_EQ(f[kPage], 0x61);
  EXPECT_EQ(f[2 * kPage], 0x61);
  EXPECT_NE(fork_as->find(addr), nullptr);  // wiped pages stay mapped
  EXPECT_EQ(fork_as->find(addr + 3 * kPage), nullptr);
  EXPECT_NE(fork_as->find(addr + 4 * kPage), nullptr);
  EXPECT_EQ(f[4 * kPage], 0x61);
  // The flags go on in the fork, as Linux keeps VM_WIPEONFORK in the child.
  EXPECT_EQ(fork_as->find(addr)->fork_flags, kvm::kWipeOnFork);

  auto [reset_mem, reset_as] = copy(kvm::kWipeOnFork);
  const uint8_t* r = kvm::GuestMemoryTestAccess::user_base(*reset_mem) + addr;
  EXPECT_EQ(r[0], 0);
  EXPECT_EQ(r[kPage], 0x61);
  ASSERT_NE(reset_as->find(addr + 3 * kPage), nullptr);
  EXPECT_EQ(r[3 * kPage], 0x61);

  // The parent is untouched, and mremap carries the flag along.
  EXPECT_TRUE(all(addr, 6 * kPage, 0x61));
  EXPECT_EQ(mremap(addr, kPage, kPage, MREMAP_MAYMOVE | MREMAP_FIXED, 0x6000'0000), 0x6000'0000);
  auto [moved_mem, moved_as] = copy(kvm::kWipeOnFork);
  EXPECT_EQ(kvm::GuestMemoryTestAccess::user_base(*moved_mem)[0x6000'0000], 0);
}

}  // namespace
}  // namespace kvms::linux
