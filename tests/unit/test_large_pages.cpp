// A snapshot's mappings are restored with 2 MiB pages wherever a whole 2 MiB lies in one mapping
// (AddressSpace::restore_mappings); any later change to part of one splits it into 4 KiB pages
// with the same translations first. The page tables are walked here as the CPU would.
#include <gtest/gtest.h>

#include "kvm/address_space.hpp"
#include "kvm/guest_memory.hpp"
#include "kvm/layout.hpp"

namespace kvms::kvm {
namespace {

constexpr uint64_t kMiB = 1 << 20;

struct Restored {
  std::shared_ptr<GuestMemory> memory = GuestMemory::create(1ull << 30, 16 * kMiB);
  AddressSpace as{memory};
  Restored() {
    // [1 MiB, 7 MiB) read-write: 4 KiB entries in [1, 2), 2 MiB pages at 2 and 4, 4 KiB in [6, 7);
    // [8 MiB, 10 MiB) read-only and executable: one 2 MiB page; [12 MiB, 16 MiB) PROT_NONE.
    as.restore_mappings({{1 * kMiB, Mapping{7 * kMiB, kProtRead | kProtWrite, "heap"}},
                         {8 * kMiB, Mapping{10 * kMiB, kProtRead | kProtExec, "text"}},
                         {12 * kMiB, Mapping{16 * kMiB, kProtNone, "reserved"}}});
  }
};

TEST(LargePages, RestoredIdentityWithLargePagesInside) {
  Restored r;
  for (uint64_t va = 1 * kMiB; va < 7 * kMiB; va += 4096) {
    auto t = r.as.translate(va);
    ASSERT_TRUE(t) << std::hex << va;
    EXPECT_EQ(t->gpa, va);
    EXPECT_TRUE(t->writable);
    EXPECT_FALSE(t->executable);
    EXPECT_EQ(t->large, va >= 2 * kMiB && va < 6 * kMiB) << std::hex << va;
  }
  auto text = r.as.translate(9 * kMiB + 123);
  ASSERT_TRUE(text);
  EXPECT_EQ(text->gpa, 9 * kMiB + 123);
  EXPECT_TRUE(text->large && text->executable && !text->writable);
  EXPECT_FALSE(r.as.translate(7 * kMiB));
  EXPECT_FALSE(r.as.translate(13 * kMiB));
  // PML4, PDPT, directory and the two edge tables (the count starts at the tables' offset).
  EXPECT_EQ(r.as.page_table_pages(), kPageTableOffset / kPageSize + 5);
  EXPECT_EQ(r.as.mapped_bytes(), 8 * kMiB);
}

TEST(LargePages, ProtectInsideSplitsAndKeepsTheRest) {
  Restored r;
  ASSERT_EQ(r.as.protect(3 * kMiB, 4096, kProtRead), 0);
  for (uint64_t va = 2 * kMiB; va < 4 * kMiB; va += 4096) {
    auto t = r.as.translate(va);
    ASSERT_TRUE(t) << std::hex << va;
    EXPECT_EQ(t->gpa, va);
    EXPECT_FALSE(t->large);
    EXPECT_EQ(t->writable, va != 3 * kMiB) << std::hex << va;
  }
  EXPECT_TRUE(r.as.translate(4 * kMiB)->large);  // the next 2 MiB page is untouched
}

TEST(LargePages, UnmapInsideLeavesNoStaleTranslation) {
  Restored r;
  ASSERT_EQ(r.as.unmap(4 * kMiB + 8192, 3 * 4096), 0);
  for (uint64_t va = 4 * kMiB; va < 6 * kMiB; va += 4096) {
    const bool gone = va >= 4 * kMiB + 8192 && va < 4 * kMiB + 5 * 4096;
    EXPECT_EQ(!r.as.translate(va), gone) << std::hex << va;
  }
  ASSERT_EQ(r.as.unmap(8 * kMiB, 2 * kMiB), 0);  // a whole 2 MiB page
  EXPECT_FALSE(r.as.translate(8 * kMiB));
  EXPECT_FALSE(r.as.translate(10 * kMiB - 1));
  // Mapped again: fresh 4 KiB pages, identity.
  ASSERT_EQ(r.as.map(8 * kMiB, 4096, kProtRead, "again"), 0);
  ASSERT_TRUE(r.as.translate(8 * kMiB));
  EXPECT_EQ(r.as.translate(8 * kMiB)->gpa, 8 * kMiB);
  EXPECT_FALSE(r.as.translate(8 * kMiB + 4096));
}

TEST(LargePages, RefusesBadMappings) {
  auto memory = GuestMemory::create(1ull << 30, 16 * kMiB);
  AddressSpace as(memory);
  EXPECT_THROW(as.restore_mappings({{1 * kMiB, Mapping{3 * kMiB, kProtRead, ""}}, {2 * kMiB, Mapping{4 * kMiB, kProtRead, ""}}}),
               std::invalid_argument);  // overlap
  AddressSpace b(memory);
  EXPECT_THROW(b.restore_mappings({{1 * kMiB, Mapping{(1ull << 30) + 4096, kProtRead, ""}}}), std::invalid_argument);  // past user memory
  AddressSpace c(memory);
  EXPECT_THROW(c.restore_mappings({{1 * kMiB + 1, Mapping{2 * kMiB, kProtRead, ""}}}), std::invalid_argument);  // unaligned
  AddressSpace d(memory);
  EXPECT_THROW(d.restore_mappings({{1 * kMiB, Mapping{2 * kMiB, 8, ""}}}), std::invalid_argument);  // unknown protection
}

}  // namespace
}  // namespace kvms::kvm
