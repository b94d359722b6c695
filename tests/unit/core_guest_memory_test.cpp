#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>

#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"

using namespace libvmm;

namespace core_guest_memory_test {

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

// Found in review: guest RAM shared with a vhost-user back-end could be shrunk by it, the next
// access here a SIGBUS.
TEST(MemoryRegionSeals, AMemfdRegionCannotShrinkOrGrow) {
  const auto region = MemoryRegion::create("sealed", 0x10000, MemoryBacking::memfd);
  ASSERT_GE(region->fd(), 0);
  const int seals = ::fcntl(region->fd(), F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
            F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_NE(::ftruncate(region->fd(), 0), 0);
  EXPECT_NE(::ftruncate(region->fd(), 0x20000), 0);
  EXPECT_NE(::fcntl(region->fd(), F_ADD_SEALS, F_SEAL_WRITE), 0);
  EXPECT_EQ(region->size(), 0x10000u);
  // A long name (memfd_create takes at most 249 bytes) is not a failure.
  EXPECT_NO_THROW(MemoryRegion::create(std::string(300, 'r'), 0x1000, MemoryBacking::memfd));
}

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
  EXPECT_THROW(MemoryRegion::create("odd", 100, MemoryBacking::anonymous), UserError);
}

// Every backing starts 2 MiB-aligned (so host huge pages can be guest huge pages), reads as
// zeros, and has a file descriptor exactly when another process could map it.
TEST(MemoryRegion, BackingsAreAlignedAndZeroed) {
  for (const MemoryBacking backing : {MemoryBacking::anonymous, MemoryBacking::memfd}) {
    SCOPED_TRACE(std::string(backing_name(backing)));
    auto region = MemoryRegion::create("r", 4 * MiB + 0x3000, backing);
    EXPECT_EQ(region->backing(), backing);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(region->host()) % (2 * MiB), 0u);
    EXPECT_EQ(region->host()[0], 0);
    EXPECT_EQ(region->host()[region->size() - 1], 0);
    region->host()[region->size() - 1] = 0x5a;  // the whole size is mapped and writable
    EXPECT_EQ(region->host()[region->size() - 1], 0x5a);
    EXPECT_EQ(region->fd() >= 0, backing == MemoryBacking::memfd);
  }
  EXPECT_THROW(MemoryRegion::create("f", 0x1000, MemoryBacking::file), std::logic_error);
}

// Found in review: a region of a size that is no multiple of the page (a vhost-user
// front-end's choice) left the rest of its 2 MiB alignment window reserved for good, so that
// each SET_MEM_TABLE leaked address space.
TEST(MemoryRegion, AnUnalignedSizeLeavesNothingReservedPastItsLastPage) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  UniqueFd fd(::memfd_create("unaligned", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(3 * page)), 0);
  auto region = MemoryRegion::from_fd("front-end region", std::move(fd), 2 * page + 0x400);
  const auto last_end = reinterpret_cast<uintptr_t>(region->host()) + 3 * page;
  unsigned char resident = 0;
  // mincore() fails with ENOMEM where nothing is mapped.
  EXPECT_NE(::mincore(reinterpret_cast<void*>(last_end), page, &resident), 0);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(MemoryRegion, MemfdIsSharedThroughItsFd) {
  auto region = MemoryRegion::create("shared", 0x2000, MemoryBacking::memfd);
  region->host()[0x1234] = 0x42;
  uint8_t byte = 0;
  ASSERT_EQ(::pread(region->fd(), &byte, 1, 0x1234), 1);
  EXPECT_EQ(byte, 0x42);
}

TEST(HostThp, ReadsTheSelectedWord) {
  EXPECT_EQ(HostThp::selected("always [madvise] never"), "madvise");
  EXPECT_EQ(HostThp::selected("always within_size advise [never] deny force"), "never");
  EXPECT_EQ(HostThp::selected("[always] madvise never\n"), "always");
  EXPECT_EQ(HostThp::selected(""), "never");
  EXPECT_EQ(HostThp::selected("always [madvise"), "never");
  EXPECT_EQ(HostThp::mode("always"), ThpMode::always);
  EXPECT_EQ(HostThp::mode("force"), ThpMode::always);
  EXPECT_EQ(HostThp::mode("madvise"), ThpMode::madvise);
  EXPECT_EQ(HostThp::mode("advise"), ThpMode::madvise);
  EXPECT_EQ(HostThp::mode("within_size"), ThpMode::madvise);
  EXPECT_EQ(HostThp::mode("never"), ThpMode::never);
  EXPECT_EQ(HostThp::mode("deny"), ThpMode::never);
  EXPECT_EQ(HostThp::mode("bogus"), ThpMode::never);
}

TEST(HostThp, ReadsSysfsFilesAndMissingOnesAsNever) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("libvmm-thp-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "enabled") << "always [madvise] never\n";
  HostThp host = HostThp::read(dir.string());
  EXPECT_EQ(host.anon, ThpMode::madvise);
  EXPECT_EQ(host.anon_setting, "madvise");
  EXPECT_EQ(host.shmem, ThpMode::never) << "no shmem_enabled file";
  std::ofstream(dir / "shmem_enabled") << "always within_size [advise] never deny force\n";
  host = HostThp::read(dir.string());
  EXPECT_EQ(host.shmem, ThpMode::madvise);
  std::filesystem::remove_all(dir);
  host = HostThp::read(dir.string());
  EXPECT_EQ(host.anon, ThpMode::never);
}

HostThp thp(ThpMode anon, ThpMode shmem) {
  HostThp host;
  host.anon = anon;
  host.shmem = shmem;
  return host;
}

MemoryBacking chosen(RamBacking requested, bool needs_fd, const HostThp& host) {
  std::string problem;
  const auto choice = choose_ram_backing(requested, needs_fd, host, problem);
  EXPECT_TRUE(choice) << problem;
  EXPECT_FALSE(choice->reason.empty());
  return choice->backing;
}

TEST(ChooseRamBacking, AutomaticPrefersWhatGetsHugePages) {
  using enum ThpMode;
  const auto a = RamBacking::automatic;
  // Debian's defaults: THP always for anonymous memory, never for shmem.
  EXPECT_EQ(chosen(a, false, thp(always, never)), MemoryBacking::anonymous);
  EXPECT_EQ(chosen(a, false, thp(madvise, never)), MemoryBacking::anonymous);
  EXPECT_EQ(chosen(a, false, thp(always, madvise)), MemoryBacking::anonymous);
  // Only shmem gets huge pages: memfd.
  EXPECT_EQ(chosen(a, false, thp(never, madvise)), MemoryBacking::memfd);
  // None at all: anonymous (nothing to gain from an fd nobody needs).
  EXPECT_EQ(chosen(a, false, thp(never, never)), MemoryBacking::anonymous);
}

TEST(ChooseRamBacking, ASharedFdIsKept) {
  using enum ThpMode;
  const auto a = RamBacking::automatic;
  for (const HostThp& host : {thp(always, never), thp(never, always), thp(never, never)}) {
    EXPECT_EQ(chosen(a, true, host), MemoryBacking::memfd);
  }
  std::string problem;
  EXPECT_EQ(choose_ram_backing(RamBacking::hugetlb, true, thp(always, never), problem)->backing,
            MemoryBacking::hugetlb);
  const auto refused = choose_ram_backing(RamBacking::anonymous, true, thp(always, never), problem);
  EXPECT_FALSE(refused);
  EXPECT_NE(problem.find("no file descriptor"), std::string::npos) << problem;
  EXPECT_THROW(
      create_ram_region("ram", 2 * MiB, RamBacking::anonymous, /*needs_fd=*/true, "guest RAM"),
      UserError);
}

TEST(ChooseRamBacking, RequestsWinAndTheReasonSaysWhy) {
  using enum ThpMode;
  HostThp host = thp(always, never);
  host.anon_setting = "always";
  host.shmem_setting = "never";
  std::string problem;
  auto memfd = choose_ram_backing(RamBacking::memfd, false, host, problem);
  EXPECT_EQ(memfd->backing, MemoryBacking::memfd);
  EXPECT_NE(memfd->reason.find("shmem_enabled=never"), std::string::npos) << memfd->reason;
  EXPECT_NE(memfd->reason.find("4 KiB"), std::string::npos) << memfd->reason;
  auto automatic = choose_ram_backing(RamBacking::automatic, false, host, problem);
  EXPECT_NE(automatic->reason.find("enabled=always"), std::string::npos) << automatic->reason;
  EXPECT_EQ(chosen(RamBacking::hugetlb, false, host), MemoryBacking::hugetlb);
  EXPECT_EQ(chosen(RamBacking::anonymous, false, thp(never, never)), MemoryBacking::anonymous);
  EXPECT_EQ(parse_ram_backing("auto"), RamBacking::automatic);
  EXPECT_EQ(parse_ram_backing("hugetlb"), RamBacking::hugetlb);
  EXPECT_FALSE(parse_ram_backing("Anonymous"));
  EXPECT_FALSE(parse_ram_backing(""));
}

TEST(ChooseRamBacking, CreatesTheRegionItChose) {
  auto region = create_ram_region("ram", 2 * MiB, RamBacking::memfd, false, "guest RAM");
  EXPECT_EQ(region->backing(), MemoryBacking::memfd);
  EXPECT_GE(region->fd(), 0);
  region = create_ram_region("ram", 2 * MiB, RamBacking::anonymous, false, "guest RAM");
  EXPECT_EQ(region->backing(), MemoryBacking::anonymous);
  EXPECT_EQ(region->fd(), -1);
}

}  // namespace core_guest_memory_test
