// The guest-memory accessors every syscall handler goes through (kvm::AddressSpace): ranges are
// checked against the guest's mappings and their protection, never against the host mapping, and
// the raw host mapping is not reachable from outside the kvm layer at all.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "kvm/layout.hpp"
#include "kvm/vm.hpp"

namespace kvms::kvm {
namespace {

// A bypass must not compile: GuestMemory's host mapping is private to the kvm layer.
template <typename T> concept ExposesHostMapping = requires(const T& m) { m.user_base(); } ||
                                                   requires(const T& m) { m.kernel_base(); } ||
                                                   requires(const T& m) { m.host(0, 1); };
static_assert(!ExposesHostMapping<GuestMemory>, "GuestMemory's host mapping must stay private");
// Spans are made only by AddressSpace, after its checks.
static_assert(!std::is_constructible_v<ReadableSpan, const uint8_t*, uint64_t, uint64_t>);
static_assert(!std::is_constructible_v<WritableSpan, uint8_t*, uint64_t, uint64_t>);
static_assert(!std::is_default_constructible_v<WritableSpan>);

constexpr uint64_t kRw = 0x100000, kRo = 0x200000, kNone = 0x300000, kHole = 0x400000;

class GuestAccess : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(as.map(kRw, 2 * kPageSize, kProtRead | kProtWrite, ""), 0);
    ASSERT_EQ(as.map(kRo, kPageSize, kProtRead, ""), 0);
    ASSERT_EQ(as.map(kNone, kPageSize, kProtNone, ""), 0);
  }
  std::shared_ptr<GuestMemory> mem = GuestMemory::create(1ull << 30, 16 << 20);
  AddressSpace as{mem};
};

TEST_F(GuestAccess, SpansNeedEveryByteMappedWithTheirAccess) {
  EXPECT_TRUE(as.writable(kRw, 2 * kPageSize));
  EXPECT_FALSE(as.writable(kRw, 2 * kPageSize + 1));  // runs off the mapping
  EXPECT_TRUE(as.readable(kRo, kPageSize));
  EXPECT_FALSE(as.writable(kRo, 1));                  // read-only
  EXPECT_FALSE(as.readable(kNone, 1));                // PROT_NONE
  EXPECT_FALSE(as.readable(kHole, 1));                // unmapped
  EXPECT_FALSE(as.readable(0, 1));
}

TEST_F(GuestAccess, AddressesOutsideUserMemoryAreNeverAccessible) {
  const uint64_t wild[] = {mem->user_size(),                 // the first byte past user memory
                           mem->user_size() + kPageSize,     // the hole up to 2^47
                           0x0000'7fff'ffff'f000ull,         // top of a Linux user address space
                           0x0000'8000'0000'0000ull,         // non-canonical
                           kKernelVirt,                      // the guest kernel area: GDT
                           kKernelVirt + kStackOffset,       // exception stacks
                           kKernelPhys,                      // the kernel slot's guest-physical address
                           ~0ull - 7};
  for (uint64_t a : wild) {
    EXPECT_FALSE(as.readable(a, 1)) << std::hex << a;
    EXPECT_FALSE(as.writable(a, 8)) << std::hex << a;
    uint64_t v = 0;
    EXPECT_FALSE(as.copy_from_user(&v, a, sizeof v)) << std::hex << a;
    EXPECT_FALSE(as.copy_to_user(a, &v, sizeof v)) << std::hex << a;
    EXPECT_FALSE(as.poke(a, &v, sizeof v)) << std::hex << a;
    EXPECT_FALSE(as.read_string(a)) << std::hex << a;
    EXPECT_EQ(as.accessible(a, 4096, kProtRead), 0u) << std::hex << a;
  }
}

TEST_F(GuestAccess, RangesThatWrapAroundFail) {
  uint64_t v = 0;
  EXPECT_FALSE(as.readable(kRw, ~0ull));
  EXPECT_FALSE(as.writable(kRw + 8, ~0ull - 4));
  EXPECT_FALSE(as.copy_from_user(&v, ~0ull - 3, 8));
  EXPECT_EQ(as.accessible(kRw, ~0ull, kProtWrite), 2 * kPageSize);  // stops at the end of the mapping
}

TEST_F(GuestAccess, EmptyRangesTouchNothing) {
  // Length 0 is valid anywhere (Linux's read(fd, wild, 0) is 0), but gives no host pointer that a
  // wild address could have been added to.
  for (uint64_t a : {uint64_t(0), kHole, kKernelVirt, uint64_t(~0ull)}) {
    auto r = as.readable(a, 0);
    auto w = as.writable(a, 0);
    ASSERT_TRUE(r && w);
    EXPECT_EQ(r->data(), nullptr);
    EXPECT_EQ(w->data(), nullptr);
    EXPECT_TRUE(as.copy_to_user(a, "", 0));
  }
}

TEST_F(GuestAccess, AccessibleStopsAtTheFirstInaccessibleByte) {
  EXPECT_EQ(as.accessible(kRw + 100, 1 << 20, kProtWrite), 2 * kPageSize - 100);
  EXPECT_EQ(as.accessible(kRo, 1 << 20, kProtWrite), 0u);
  EXPECT_EQ(as.accessible(kRo, 1 << 20, kProtRead), kPageSize);
  EXPECT_EQ(as.accessible(kNone, 1, kProtRead), 0u);
}

TEST_F(GuestAccess, WritesThroughSpansAreRecordedWithinTheSpanOnly) {
  as.track_host_writes(true);
  auto w = as.writable(kRw + kPageSize - 8, 16);
  ASSERT_TRUE(w);
  as.note_write(*w, 1 << 30);  // a host call claiming more than the span: only the span counts
  std::vector<uint64_t> pages = as.host_written_pages();
  std::sort(pages.begin(), pages.end());
  ASSERT_EQ(pages.size(), 2u);
  EXPECT_EQ(pages[0], kRw >> 12);
  EXPECT_EQ(pages[1], (kRw >> 12) + 1);
}

TEST_F(GuestAccess, KernelSideCopiesStayInsideMappings) {
  char path[] = "/tmp/kvms-access-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  ASSERT_EQ(::write(fd, "file bytes", 10), 10);
  EXPECT_EQ(as.fill_from_file(kRo, fd, 0, 10), 0);  // whatever the protection, like mmap's copy
  char got[10];
  ASSERT_TRUE(as.copy_from_user(got, kRo, 10));
  EXPECT_EQ(std::string(got, 10), "file bytes");
  EXPECT_EQ(as.fill_from_file(kHole, fd, 0, 10), -EFAULT);
  EXPECT_EQ(as.fill_from_file(kRo, fd, 0, 2 * kPageSize), -EFAULT);     // runs off the mapping
  EXPECT_EQ(as.fill_from_file(kRo, fd, ~0ull - 4, 10), -EFAULT);        // offset + len wraps
  EXPECT_EQ(as.fill_from_file(kKernelVirt, fd, 0, 10), -EFAULT);
  ::close(fd);

  EXPECT_TRUE(as.copy_within(kRw, kRo, kPageSize));
  EXPECT_FALSE(as.copy_within(kRw, kRw + kPageSize, 2 * kPageSize));  // overlapping
  EXPECT_FALSE(as.copy_within(kHole, kRo, kPageSize));
  EXPECT_FALSE(as.copy_within(kRw, kHole, kPageSize));
}

TEST_F(GuestAccess, KernelFramesOnlyOnTheExceptionStacks) {
  install_kernel_area(as);
  const uint64_t frame[5] = {1, 2, 3, 4, 5};
  const uint64_t rsp = as.push_iret_frame(3, frame);
  EXPECT_EQ(rsp, kKernelVirt + stack_slot_top(3) - sizeof frame);
  EXPECT_THROW(as.push_iret_frame(kMaxVcpus, frame), std::out_of_range);
  EXPECT_THROW(as.push_iret_frame(-1, frame), std::out_of_range);
  const auto read = as.exception_frame(rsp - 8, 14);  // a page fault: an error code, then the iretq frame
  ASSERT_TRUE(read);
  EXPECT_EQ(read->rip, 1u);
  EXPECT_EQ(read->cs, 2u);
  EXPECT_EQ(read->rflags, 3u);
  EXPECT_EQ(read->rsp, 4u);
  EXPECT_EQ(as.exception_frame(rsp, 6)->rip, 1u);  // no error code
  EXPECT_FALSE(as.exception_frame(kKernelVirt + kGdtOffset, 6));   // not a stack
  EXPECT_FALSE(as.exception_frame(kKernelVirt + kStackOffset + kStackPages * kPageSize - 8, 6));  // runs off
  EXPECT_FALSE(as.exception_frame(kRw, 6));
}

}  // namespace
}  // namespace kvms::kvm
