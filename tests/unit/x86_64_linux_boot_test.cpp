// bzImage validation, the RAM layout and the Linux loader, on synthetic bzImages built here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/bzimage.hpp"
#include "libvmm/arch/x86_64/linux_loader.hpp"
#include "libvmm/core/error.hpp"
#include "unit/support/packed.hpp"

using namespace libvmm;
using namespace libvmm::x86;
using libvmm::test::packed;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

namespace x86_64_linux_boot_test {

// The fields of a bzImage a test may want to break; build() lays them out as the boot protocol
// does. The defaults look like a modern x86_64 kernel, scaled down.
struct FakeKernel {
  uint8_t setup_sects = 4;
  uint16_t boot_flag = 0xAA55;
  uint32_t magic = 0x53726448;  // "HdrS"
  uint16_t version = 0x020f;
  uint8_t loadflags = LOADED_HIGH;
  uint16_t xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
  uint8_t relocatable = 1;
  uint32_t kernel_alignment = 2 * MiB;
  uint64_t pref_address = 16 * MiB;
  uint32_t init_size = 8 * MiB;
  uint32_t initrd_addr_max = 0x7fffffff;
  uint32_t cmdline_size = 2047;
  size_t header_end = kSetupHeaderOffset + sizeof(setup_header);
  size_t payload_size = 8192;

  size_t setup_size() const { return (size_t{setup_sects == 0 ? 4u : setup_sects} + 1) * 512; }

  std::vector<uint8_t> build() const {
    std::vector<uint8_t> image(setup_size() + payload_size, 0xCC);
    setup_header hdr{};
    hdr.setup_sects = setup_sects;
    hdr.boot_flag = boot_flag;
    hdr.jump = static_cast<uint16_t>(0xEB | ((header_end - 0x202) << 8));  // short jmp
    hdr.header = magic;
    hdr.version = version;
    hdr.loadflags = loadflags;
    hdr.xloadflags = xloadflags;
    hdr.relocatable_kernel = relocatable;
    hdr.kernel_alignment = kernel_alignment;
    hdr.pref_address = pref_address;
    hdr.init_size = init_size;
    hdr.initrd_addr_max = initrd_addr_max;
    hdr.cmdline_size = cmdline_size;
    std::memcpy(image.data() + kSetupHeaderOffset, &hdr, sizeof(hdr));
    for (size_t i = 0; i < payload_size; ++i) {
      image[setup_size() + i] = static_cast<uint8_t>(i * 7 + 1);
    }
    return image;
  }
};

std::string parse_error(std::span<const uint8_t> image) {
  try {
    BzImage::parse(image, "vmlinuz");
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string parse_error(const FakeKernel& k) {
  return parse_error(k.build());
}

// Guest memory laid out as `ram`, backed by one memfd region.
GuestMemory make_memory(const std::vector<RamRange>& ram) {
  uint64_t total = 0;
  for (const auto& r : ram) total += r.size;
  auto region = MemoryRegion::create("ram", total);
  GuestMemory memory;
  uint64_t offset = 0;
  for (const auto& r : ram) {
    memory.map(r.gpa, region, offset, r.size);
    offset += r.size;
  }
  return memory;
}

std::vector<uint8_t> pattern(size_t size) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 13 + 5);
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// bzImage validation

TEST(BzImage, ParsesAGoodImage) {
  const FakeKernel k;
  const auto image = k.build();
  const BzImage bz = BzImage::parse(image, "vmlinuz");
  EXPECT_EQ(bz.path(), "vmlinuz");
  EXPECT_EQ(bz.setup_sects(), 4);
  EXPECT_EQ(bz.protocol_version(), 0x020f);
  EXPECT_EQ(bz.pref_address(), 16 * MiB);
  EXPECT_EQ(bz.init_size(), 8 * MiB);
  EXPECT_EQ(bz.kernel_alignment(), 2 * MiB);
  EXPECT_TRUE(bz.relocatable());
  EXPECT_EQ(bz.initrd_addr_max(), 0x7fffffffu);
  EXPECT_EQ(bz.cmdline_size(), 2047u);
  EXPECT_EQ(bz.xloadflags(), XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
  EXPECT_EQ(bz.setup_header_bytes().data(), image.data() + kSetupHeaderOffset);
  EXPECT_EQ(bz.setup_header_bytes().size(), sizeof(setup_header));
  EXPECT_EQ(bz.protected_mode_kernel().data(), image.data() + 5 * 512);
  EXPECT_EQ(bz.protected_mode_kernel().size(), k.payload_size);
}

TEST(BzImage, ZeroSetupSectsMeansFour) {
  FakeKernel k;
  k.setup_sects = 0;
  const auto image = k.build();
  const BzImage bz = BzImage::parse(image, "vmlinuz");
  EXPECT_EQ(bz.setup_sects(), 4);
  EXPECT_EQ(bz.protected_mode_kernel().size(), k.payload_size);
}

TEST(BzImage, HeaderBytesStopAtTheDeclaredEnd) {
  FakeKernel k;
  k.header_end = 0x268;  // a 2.12..2.14 header, without kernel_info_offset
  const auto image = k.build();
  EXPECT_EQ(BzImage::parse(image, "vmlinuz").setup_header_bytes().size(), 0x268 - 0x1f1u);
}

TEST(BzImage, RejectsAnEmptyFile) {
  EXPECT_EQ(parse_error(std::vector<uint8_t>{}), "vmlinuz: is empty, not a bzImage");
}

TEST(BzImage, RejectsAFileTooSmallForTheHeader) {
  EXPECT_EQ(parse_error(std::vector<uint8_t>(0x200, 0)),
            "vmlinuz: is too small to be a bzImage (512 bytes; truncated?)");
}

TEST(BzImage, RejectsATruncatedSetup) {
  FakeKernel k;
  k.setup_sects = 30;
  auto image = k.build();
  image.resize(3000);
  EXPECT_EQ(parse_error(image),
            "vmlinuz: is truncated: it declares 30 setup sectors (15872 bytes) but has only 3000 "
            "bytes");
}

TEST(BzImage, RejectsAnImageWithoutProtectedModeKernel) {
  FakeKernel k;
  k.payload_size = 0;
  EXPECT_EQ(parse_error(k), "vmlinuz: has no protected-mode kernel after its setup code");
}

TEST(BzImage, RecognisesElf) {
  std::vector<uint8_t> elf(4096, 0);
  std::memcpy(elf.data(),
              "\x7f"
              "ELF",
              4);
  EXPECT_EQ(parse_error(elf),
            "vmlinuz: is an ELF file (a vmlinux?), not a bzImage: pass arch/x86/boot/bzImage");
}

TEST(BzImage, RecognisesGzip) {
  std::vector<uint8_t> gz(4096, 0);
  gz[0] = 0x1f;
  gz[1] = 0x8b;
  EXPECT_THAT(parse_error(gz), StartsWith("vmlinuz: is gzip-compressed, not a bzImage"));
}

TEST(BzImage, RejectsABadBootFlag) {
  FakeKernel k;
  k.boot_flag = 0x1234;
  EXPECT_EQ(parse_error(k), "vmlinuz: not a bzImage (boot_flag is 0x1234, not 0xaa55)");
}

TEST(BzImage, RejectsAMissingHdrS) {
  FakeKernel k;
  k.magic = 0;
  EXPECT_EQ(parse_error(k),
            "vmlinuz: not a bzImage (no HdrS header): pass a bzImage, not a vmlinux/ELF or "
            "compressed file");
}

TEST(BzImage, RejectsProtocol211) {
  FakeKernel k;
  k.version = 0x020b;
  EXPECT_EQ(parse_error(k),
            "vmlinuz: boot protocol 2.11 is too old; need 2.12 or later (Linux 3.8+)");
}

TEST(BzImage, RejectsAKernelWithout64BitEntry) {
  FakeKernel k;
  k.xloadflags = 0;
  EXPECT_THAT(parse_error(k), StartsWith("vmlinuz: has no 64-bit entry point (XLF_KERNEL_64"));
}

TEST(BzImage, RejectsAKernelNotLoadedHigh) {
  FakeKernel k;
  k.loadflags = 0;
  EXPECT_THAT(parse_error(k), StartsWith("vmlinuz: is not loaded high (LOADED_HIGH not set)"));
}

TEST(BzImage, RejectsAShortHeader) {
  FakeKernel k;
  k.header_end = 0x230;
  EXPECT_THAT(parse_error(k), StartsWith("vmlinuz: setup header ends at 0x230"));
}

TEST(BzImage, RejectsABadAlignment) {
  FakeKernel k;
  k.kernel_alignment = 0x300000;
  EXPECT_EQ(parse_error(k), "vmlinuz: kernel_alignment 0x300000 is not a power of two");
  k.kernel_alignment = 0;
  EXPECT_EQ(parse_error(k), "vmlinuz: kernel_alignment 0x0 is not a power of two");
}

// ---------------------------------------------------------------------------------------------
// RAM layout and e820

TEST(RamLayout, SmallMemoryIsOneRangeFromZero) {
  EXPECT_EQ(x86_ram_layout(64 * MiB), (std::vector<RamRange>{{0, 64 * MiB}}));
  EXPECT_EQ(x86_ram_layout(3 * GiB), (std::vector<RamRange>{{0, 3 * GiB}}));
}

TEST(RamLayout, MemoryAbove3GiBContinuesAt4GiB) {
  EXPECT_EQ(x86_ram_layout(5 * GiB), (std::vector<RamRange>{{0, 3 * GiB}, {4 * GiB, 2 * GiB}}));
}

TEST(RamLayout, RamEndsBelowThePci64BitWindow) {
  const auto ram = x86_ram_layout(255 * GiB);
  ASSERT_EQ(ram.size(), 2u);
  EXPECT_EQ(ram[1].gpa + ram[1].size, kPciMmio64Base);
  try {
    x86_ram_layout(255 * GiB + 4 * KiB);
    FAIL();
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), StartsWith("--memory: 0x3fc0001000 bytes is more than an x86_64 guest "
                                     "can have (at most 255 GiB: RAM ends below the PCI 64-bit "
                                     "BAR window at 0x4000000000)"));
  }
}

TEST(RamLayout, RejectsTooLittleOrOddMemory) {
  EXPECT_THROW(x86_ram_layout(512 * KiB), UserError);
  EXPECT_THROW(x86_ram_layout(64 * MiB + 100), UserError);
  try {
    x86_ram_layout(0);
    FAIL();
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), StartsWith("--memory: "));
  }
}

void expect_e820(const boot_e820_entry& e, uint64_t addr, uint64_t size, uint32_t type) {
  EXPECT_EQ(packed(e.addr), addr);
  EXPECT_EQ(packed(e.size), size);
  EXPECT_EQ(packed(e.type), type);
}

TEST(E820, SplitsLowRamAroundTheBiosArea) {
  const auto map = e820_map(x86_ram_layout(64 * MiB));
  ASSERT_EQ(map.size(), 3u);
  expect_e820(map[0], 0, 0x9FC00, kE820Ram);
  expect_e820(map[1], 0x9FC00, 0x100000 - 0x9FC00, kE820Reserved);
  expect_e820(map[2], 0x100000, 63 * MiB, kE820Ram);
}

TEST(E820, ExactlyOneMiBHasNoRamAboveIt) {
  EXPECT_EQ(e820_map(x86_ram_layout(1 * MiB)).size(), 2u);
}

TEST(E820, HighRamIsAFourthEntry) {
  const auto map = e820_map(x86_ram_layout(4 * GiB));
  ASSERT_EQ(map.size(), 4u);
  expect_e820(map[2], 0x100000, 3 * GiB - 1 * MiB, kE820Ram);
  expect_e820(map[3], 4 * GiB, 1 * GiB, kE820Ram);
}

// ---------------------------------------------------------------------------------------------
// Loading

struct LoaderTest : ::testing::Test {
  std::vector<uint8_t> image;
  std::vector<RamRange> ram;
  GuestMemory memory;

  LinuxBootInfo load(const FakeKernel& k, uint64_t memory_size, std::span<const uint8_t> initrd,
                     std::string_view cmdline = "console=ttyS0") {
    image = k.build();
    ram = x86_ram_layout(memory_size);
    memory = make_memory(ram);
    return load_linux(memory, BzImage::parse(image, "vmlinuz"), initrd, "initrd.img", cmdline, ram);
  }

  std::string load_error(const FakeKernel& k, uint64_t memory_size, std::span<const uint8_t> initrd,
                         std::string_view cmdline = "") {
    try {
      load(k, memory_size, initrd, cmdline);
    } catch (const UserError& e) {
      return e.what();
    }
    return "(no error)";
  }

  boot_params zero_page() const { return memory.read_obj<boot_params>(kZeroPageAddr).value(); }
};

TEST_F(LoaderTest, LoadsKernelCmdlineAndZeroPage) {
  const FakeKernel k;
  const LinuxBootInfo info = load(k, 64 * MiB, {}, "console=ttyS0 quiet");
  EXPECT_EQ(info.entry, 0x100200u);
  EXPECT_EQ(info.zero_page, 0x7000u);
  EXPECT_EQ(info.kernel, (GuestRange{0x100000, k.payload_size}));
  EXPECT_EQ(info.kernel_run, (GuestRange{16 * MiB, 8 * MiB}));
  EXPECT_EQ(info.initrd.size, 0u);

  std::vector<uint8_t> loaded(k.payload_size);
  ASSERT_TRUE(memory.read(0x100000, loaded.data(), loaded.size()));
  EXPECT_TRUE(std::equal(loaded.begin(), loaded.end(), image.end() - k.payload_size));

  std::string cmdline(21, '?');
  ASSERT_TRUE(memory.read(0x20000, cmdline.data(), cmdline.size()));
  EXPECT_EQ(cmdline, std::string("console=ttyS0 quiet\0", 20) + '\0');
  EXPECT_EQ(info.cmdline, (GuestRange{0x20000, 20}));

  const boot_params bp = zero_page();
  const setup_header& hdr = bp.hdr;
  EXPECT_EQ(packed(hdr.boot_flag), 0xAA55);
  EXPECT_EQ(packed(hdr.header), 0x53726448u);
  EXPECT_EQ(packed(hdr.version), 0x020f);
  EXPECT_EQ(packed(hdr.pref_address), 16 * MiB);
  EXPECT_EQ(packed(hdr.init_size), 8 * MiB);
  EXPECT_EQ(packed(hdr.type_of_loader), 0xff);
  EXPECT_EQ(packed(hdr.loadflags), LOADED_HIGH | CAN_USE_HEAP);
  EXPECT_EQ(packed(hdr.heap_end_ptr), 0xe000 - 0x200);
  EXPECT_EQ(packed(hdr.vid_mode), 0xffff);
  EXPECT_EQ(packed(hdr.cmd_line_ptr), 0x20000u);
  EXPECT_EQ(packed(hdr.ramdisk_image), 0u);
  EXPECT_EQ(packed(hdr.ramdisk_size), 0u);
  EXPECT_EQ(packed(bp.ext_cmd_line_ptr), 0u);
  EXPECT_EQ(packed(bp.sentinel), 0);  // only the header is copied, into a clean page

  ASSERT_EQ(packed(bp.e820_entries), 3);
  expect_e820(bp.e820_table[0], 0, 0x9FC00, kE820Ram);
  expect_e820(bp.e820_table[1], 0x9FC00, 0x60400, kE820Reserved);
  expect_e820(bp.e820_table[2], 0x100000, 63 * MiB, kE820Ram);
}

TEST_F(LoaderTest, CopiesOnlyTheDeclaredSetupHeader) {
  FakeKernel k;
  k.header_end = 0x268;
  load(k, 64 * MiB, {});
  const auto page = memory.slice(kZeroPageAddr, 0x1000).value();
  EXPECT_EQ(page[0x267], 0);  // handover_offset (zero in the fake) is the last byte copied
  EXPECT_EQ(page[0x268], 0);  // the 0xCC filler after the declared header stays out
  EXPECT_EQ(page[0x26b], 0);
}

TEST_F(LoaderTest, PutsTheInitrdAtTheTopOfLowRam) {
  const auto initrd = pattern(3 * MiB + 123);
  const LinuxBootInfo info = load(FakeKernel{}, 64 * MiB, initrd);
  const uint64_t expected = (64 * MiB - initrd.size()) & ~uint64_t{0xfff};
  EXPECT_EQ(info.initrd, (GuestRange{expected, initrd.size()}));
  EXPECT_GE(info.initrd.gpa, info.kernel_run.end());

  std::vector<uint8_t> loaded(initrd.size());
  ASSERT_TRUE(memory.read(info.initrd.gpa, loaded.data(), loaded.size()));
  EXPECT_EQ(loaded, initrd);
  const boot_params bp = zero_page();
  EXPECT_EQ(packed(bp.hdr.ramdisk_image), expected);
  EXPECT_EQ(packed(bp.hdr.ramdisk_size), initrd.size());
}

TEST_F(LoaderTest, KeepsTheInitrdBelowInitrdAddrMax) {
  FakeKernel k;
  k.initrd_addr_max = 40 * MiB - 1;
  const auto initrd = pattern(1 * MiB);
  const LinuxBootInfo info = load(k, 64 * MiB, initrd);
  EXPECT_EQ(info.initrd.gpa, 39 * MiB);
  EXPECT_LE(info.initrd.end(), uint64_t{k.initrd_addr_max} + 1);
}

TEST_F(LoaderTest, KeepsTheInitrdBelowTheMmioHole) {
  FakeKernel k;
  k.initrd_addr_max = 0xffffffff;
  const auto initrd = pattern(8 * KiB);
  const LinuxBootInfo info = load(k, 4 * GiB, initrd);
  EXPECT_EQ(info.initrd.gpa, 3 * GiB - 8 * KiB);
  const boot_params bp = zero_page();
  ASSERT_EQ(packed(bp.e820_entries), 4);
  expect_e820(bp.e820_table[3], 4 * GiB, 1 * GiB, kE820Ram);
}

TEST_F(LoaderTest, RejectsAnInitrdThatDoesNotFit) {
  const auto initrd = pattern(40 * MiB + 1);  // the kernel runs up to 24 MiB
  EXPECT_EQ(load_error(FakeKernel{}, 64 * MiB, initrd),
            "initrd.img: initrd of 41943041 bytes (41 MiB) does not fit between the kernel "
            "(ends at 0x1800000) and 0x4000000 in 64 MiB of guest memory; give the guest more "
            "memory (--memory)");
}

TEST_F(LoaderTest, RejectsAnInitrdWhenInitrdAddrMaxIsBelowTheKernel) {
  FakeKernel k;
  k.initrd_addr_max = 20 * MiB - 1;
  const auto initrd = pattern(4096);
  EXPECT_EQ(load_error(k, 64 * MiB, initrd),
            "initrd.img: initrd of 4096 bytes (1 MiB) does not fit between the kernel (ends at "
            "0x1800000) and 0x1400000 in 64 MiB of guest memory; this kernel takes an initrd only "
            "below 0x1400000 (its initrd_addr_max), whatever --memory is: use a smaller initrd");
}

// An initrd of `size` bytes that is never read (its placement fails first): address space
// reserved, not memory allocated.
class ReservedBytes {
 public:
  explicit ReservedBytes(size_t size)
      : size_(size),
        map_(::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)) {
    if (map_ == MAP_FAILED) throw std::runtime_error("ReservedBytes: mmap");
  }
  ~ReservedBytes() { ::munmap(map_, size_); }
  ReservedBytes(const ReservedBytes&) = delete;
  ReservedBytes& operator=(const ReservedBytes&) = delete;
  std::span<const uint8_t> bytes() const { return {static_cast<const uint8_t*>(map_), size_}; }

 private:
  size_t size_;
  void* map_;
};

// Found in the second read: with 1 GiB, an initrd_addr_max of 2 GiB and a 2.5 GiB initrd, the
// end of RAM stopped it first, yet no memory could make it fit below 2 GiB.
TEST_F(LoaderTest, MoreMemoryIsAdvisedOnlyWhenItWouldHelp) {
  FakeKernel k;
  k.initrd_addr_max = 0x7fffffff;
  const ReservedBytes initrd(2560 * MiB);
  const std::string error = load_error(k, 1 * GiB, initrd.bytes());
  EXPECT_THAT(error, HasSubstr("this kernel takes an initrd only below 0x80000000"));
  // 41 MiB with 64 MiB of RAM (the kernel runs up to 24 MiB): more would help.
  const auto small = pattern(41 * MiB);
  EXPECT_THAT(load_error(k, 64 * MiB, small), HasSubstr("give the guest more memory"));
}

TEST_F(LoaderTest, AnInitrdLargerThanLowRamIsNotAskedForMoreMemory) {
  FakeKernel k;
  k.initrd_addr_max = 0xffffffff;
  const ReservedBytes initrd(3 * GiB);
  const std::string error = load_error(k, 8 * GiB, initrd.bytes());
  EXPECT_THAT(error, HasSubstr("the initrd must lie in low RAM, which ends at 0xc0000000 at "
                               "most whatever --memory is: use a smaller initrd"));
  EXPECT_THAT(error, Not(HasSubstr("--memory)")));
}

TEST_F(LoaderTest, RejectsAKernelTooBigForMemory) {
  EXPECT_EQ(load_error(FakeKernel{}, 16 * MiB, {}),
            "vmlinuz: kernel needs 8 MiB of RAM from 0x1000000 (init_size), but the guest's low "
            "RAM ends at 16 MiB; give the guest more memory (--memory)");
}

TEST_F(LoaderTest, RejectsAnImageLargerThanMemory) {
  FakeKernel k;
  k.pref_address = 1 * MiB;
  k.relocatable = 0;
  k.init_size = 1 * MiB;
  k.payload_size = 2 * MiB;
  EXPECT_EQ(load_error(k, 2 * MiB, {}),
            "vmlinuz: kernel is 2 MiB, more than the guest's low RAM above 1 MiB; give the guest "
            "more memory (--memory)");
}

TEST_F(LoaderTest, RejectsAKernelThatWantsToRunInTheFirstMiB) {
  FakeKernel k;
  k.relocatable = 0;
  k.pref_address = 0x8000;
  EXPECT_THAT(load_error(k, 64 * MiB, {}), StartsWith("vmlinuz: kernel wants to run at 0x8000"));
}

TEST_F(LoaderTest, RelocatableKernelRunsAtTheAlignedLoadAddressAbovePrefAddress) {
  FakeKernel k;
  k.pref_address = 1 * MiB;
  EXPECT_EQ(load(k, 64 * MiB, {}).kernel_run.gpa, 2 * MiB);
  k.relocatable = 0;
  EXPECT_EQ(load(k, 64 * MiB, {}).kernel_run.gpa, 1 * MiB);
}

TEST_F(LoaderTest, AcceptsACmdlineOfExactlyCmdlineSize) {
  FakeKernel k;
  k.cmdline_size = 10;
  EXPECT_EQ(load(k, 64 * MiB, {}, "0123456789").cmdline.size, 11u);
}

TEST_F(LoaderTest, RejectsATooLongCmdline) {
  FakeKernel k;
  k.cmdline_size = 10;
  EXPECT_EQ(
      load_error(k, 64 * MiB, {}, "0123456789a"),
      "--cmdline: 11 bytes is longer than the 10 bytes this kernel accepts (its cmdline_size)");
}

// Found in review: with acpi=off the virtio-mmio parameters vmm appends counted as the user's.
TEST_F(LoaderTest, ATooLongCmdlineSaysWhatVmmAppended) {
  FakeKernel k;
  k.cmdline_size = 10;
  image = k.build();
  ram = x86_ram_layout(64 * MiB);
  memory = make_memory(ram);
  try {
    load_linux(memory, BzImage::parse(image, "vmlinuz"), {}, "initrd.img", "acpi=off x=1", ram, 4);
    FAIL() << "accepted";
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(),
                 "--cmdline: 12 bytes (4 of them the virtio_mmio.device= parameters vmm adds with "
                 "acpi=off, one per virtio-mmio device) is longer than the 10 bytes this kernel "
                 "accepts (its cmdline_size)");
  }
}

TEST_F(LoaderTest, RejectsACmdlineWithANul) {
  EXPECT_EQ(load_error(FakeKernel{}, 64 * MiB, {}, std::string_view("a\0b", 3)),
            "--cmdline: contains a NUL byte");
}

}  // namespace x86_64_linux_boot_test
