#include <gtest/gtest.h>

#include <array>

#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"

using namespace libvmm;

namespace {

// Two mappings with a hole: [0x0, 0x10000) and [0x20000, 0x22000), plus a read-only page
// adjacent to the second at [0x22000, 0x23000).
struct GuestMemoryTest : ::testing::Test {
  GuestMemoryTest() {
    ram = MemoryRegion::create("ram", 0x10000);
    high = MemoryRegion::create("high", 0x3000);
    mem.map(0x0, ram, 0, 0x10000);
    mem.map(0x20000, high, 0, 0x2000);
    mem.map(0x22000, high, 0x2000, 0x1000, /*readonly=*/true);
  }
  std::shared_ptr<MemoryRegion> ram, high;
  GuestMemory mem;
};

TEST_F(GuestMemoryTest, ReadWriteRoundTrip) {
  ASSERT_TRUE(mem.write_obj<uint32_t>(0x100, 0xdeadbeef));
  EXPECT_EQ(mem.read_obj<uint32_t>(0x100), 0xdeadbeefu);
  EXPECT_EQ(ram->host()[0x100], 0xef);  // little-endian, same memory as the region
}

TEST_F(GuestMemoryTest, RejectsAccessPastTheEnd) {
  EXPECT_FALSE(mem.read_obj<uint32_t>(0xfffe));  // straddles the hole
  EXPECT_FALSE(mem.read_obj<uint8_t>(0x10000));
  EXPECT_FALSE(mem.read_obj<uint8_t>(0x23000));
  EXPECT_FALSE(mem.write_obj<uint64_t>(0xfffc, 0));
  EXPECT_EQ(mem.read_obj<uint8_t>(0xffff), 0);  // last byte is fine
}

TEST_F(GuestMemoryTest, RejectsWrappingRanges) {
  std::array<uint8_t, 16> buf{};
  EXPECT_FALSE(mem.read(~0ull - 4, buf.data(), buf.size()));
  EXPECT_FALSE(mem.contains(0x10, ~0ull));
  EXPECT_FALSE(mem.slice(0x10, ~0ull - 8));
  std::vector<iovec> iov;
  EXPECT_FALSE(mem.iovecs(8, ~0ull - 4, false, iov));
  EXPECT_TRUE(iov.empty());
}

TEST_F(GuestMemoryTest, CrossesAdjacentMappingsButNotHoles) {
  EXPECT_TRUE(mem.contains(0x21ff0, 0x20));  // rw page then read-only page
  std::vector<iovec> iov;
  EXPECT_TRUE(mem.iovecs(0x21ff0, 0x20, false, iov));
  EXPECT_EQ(iov.size(), 2u);
  EXPECT_FALSE(mem.slice(0x21ff0, 0x20));  // slice wants a single mapping
  EXPECT_FALSE(mem.contains(0xfff0, 0x20));
}

TEST_F(GuestMemoryTest, ReadOnlyMappingRefusesWrites) {
  EXPECT_TRUE(mem.read_obj<uint32_t>(0x22000));
  EXPECT_FALSE(mem.write_obj<uint32_t>(0x22000, 1));
  EXPECT_FALSE(mem.slice(0x22000, 4, /*for_write=*/true));
  std::vector<iovec> iov;
  EXPECT_FALSE(mem.iovecs(0x21ff0, 0x20, /*for_write=*/true, iov));
  EXPECT_TRUE(iov.empty());
  EXPECT_FALSE(mem.fill(0x21fff, 0, 2));
}

TEST_F(GuestMemoryTest, FindAndTotal) {
  EXPECT_EQ(mem.find(0x20000)->region->name(), "high");
  EXPECT_EQ(mem.find(0x15000), nullptr);
  EXPECT_EQ(mem.total_size(), 0x13000u);
}

TEST_F(GuestMemoryTest, MapRejectsOverlapAndOversize) {
  auto extra = MemoryRegion::create("extra", 0x1000);
  EXPECT_THROW(mem.map(0xf000, extra, 0, 0x1000), UserError);
  EXPECT_THROW(mem.map(0x40000, extra, 0, 0x2000), UserError);
  EXPECT_THROW(mem.map(0x40000, extra, 0x1000, 0x1000), UserError);
  EXPECT_THROW(mem.map(~0ull - 0xfff, extra, 0, 0x1000), UserError);
  EXPECT_NO_THROW(mem.map(0x40000, extra, 0, 0x1000));
}

TEST_F(GuestMemoryTest, U16FieldsMustBeAlignedAndMapped) {
  ASSERT_TRUE(mem.store_u16(0x100, 0xbeef));
  EXPECT_EQ(mem.load_u16(0x100), 0xbeef);
  EXPECT_EQ(mem.read_obj<uint16_t>(0x100), 0xbeef);
  EXPECT_FALSE(mem.load_u16(0x101)) << "misaligned";
  EXPECT_FALSE(mem.store_u16(0x101, 1)) << "misaligned";
  EXPECT_FALSE(mem.load_u16(0x10000)) << "in the hole";
  EXPECT_FALSE(mem.store_u16(0x10000, 1)) << "in the hole";
  EXPECT_FALSE(mem.load_u16(~uint64_t{1})) << "at the top of the address space";
  EXPECT_TRUE(mem.load_u16(0x22000)) << "a read-only mapping reads";
  EXPECT_FALSE(mem.store_u16(0x22000, 1)) << "a read-only mapping refuses stores";
}

TEST(MemoryRegion, SizeMustBePageMultiple) {
  EXPECT_THROW(MemoryRegion::create("odd", 100), UserError);
  EXPECT_THROW(MemoryRegion::create("zero", 0), UserError);
}

}  // namespace
