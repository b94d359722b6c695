// arm64 Image header checks, the boot layout planner and the loader, on synthetic Images.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "libvmm/arch/aarch64/image.hpp"
#include "libvmm/core/error.hpp"

using namespace libvmm;
using namespace libvmm::aarch64;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace aarch64_image_test {

constexpr uint64_t kRamBase = 0x4000'0000;  // where arm64 virt machines usually put RAM

// The header fields a test may want to break; the defaults look like a 6.1 kernel, scaled down.
struct FakeImage {
  uint64_t text_offset = 0;
  uint64_t image_size = 6 * MiB;  // file + bss
  uint64_t flags = 0b1010;        // little endian, 4 KiB pages, place anywhere
  uint32_t magic = kImageMagic;
  size_t file_size = 64 * KiB;

  std::vector<uint8_t> build() const {
    std::vector<uint8_t> file(file_size);
    auto put = [&](size_t at, uint64_t value, size_t bytes) {
      for (size_t i = 0; i < bytes && at + i < file.size(); ++i) {
        file[at + i] = static_cast<uint8_t>(value >> (8 * i));
      }
    };
    put(0, 0x14000000 | 0x10, 4);  // code0: a branch, as real kernels have
    put(0x08, text_offset, 8);
    put(0x10, image_size, 8);
    put(0x18, flags, 8);
    put(0x38, magic, 4);
    for (size_t i = kImageHeaderSize; i < file.size(); ++i) file[i] = static_cast<uint8_t>(i * 7);
    return file;
  }
};

std::string parse_error(const std::vector<uint8_t>& file) {
  try {
    parse_arm64_image(file, "Image-test");
  } catch (const UserError& e) {
    return e.what();
  }
  return "(accepted)";
}

std::string plan_error(const ArmImage& image, uint64_t ram_size, uint64_t initrd_size) {
  try {
    plan_arm64_boot(image, kRamBase, ram_size, initrd_size);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(planned)";
}

bool crosses_2mib(const GpaRange& range) {
  return range.gpa / (2 * MiB) != (range.end() - 1) / (2 * MiB);
}

TEST(Arm64Image, ParsesAGoodHeader) {
  const auto file = FakeImage{.text_offset = 0x80000}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  EXPECT_EQ(image.path, "Image-test");
  EXPECT_EQ(image.text_offset, 0x80000u);
  EXPECT_EQ(image.image_size, 6 * MiB);
  EXPECT_FALSE(image.legacy);
  EXPECT_EQ(image.page_size, ArmPageSize::k4K);
  EXPECT_TRUE(image.place_anywhere);
  EXPECT_EQ(image.bytes.data(), file.data());
  EXPECT_EQ(image.bytes.size(), file.size());
}

TEST(Arm64Image, PageSizeAndPlacementFlags) {
  const auto file = FakeImage{.flags = 0b0110}.build();  // 64 KiB pages, near the DRAM base
  const ArmImage image = parse_arm64_image(file, "Image-test");
  EXPECT_EQ(image.page_size, ArmPageSize::k64K);
  EXPECT_FALSE(image.place_anywhere);
}

std::string page_size_error(ArmPageSize size, uint64_t mmfr0) {
  ArmImage image;
  image.path = "Image-test";
  image.page_size = size;
  try {
    check_arm64_page_size(image, mmfr0);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(Arm64Image, PageSizeMustBeATranslationGranuleOfTheCpu) {
  // ID_AA64MMFR0_EL1: TGran4 [31:28] and TGran64 [27:24] are 0xf when absent, TGran16 [23:20]
  // is 0 when absent.
  constexpr uint64_t kAll = 0x0010'0000;             // 4K, 64K and 16K
  constexpr uint64_t kNo16K = 0x0000'0000;           // a Cortex-A57, say
  constexpr uint64_t kOnly16K = 0xff10'0000;         // neither 4K nor 64K
  constexpr uint64_t kNo64KWith52Bit = 0x1f20'0000;  // 4K and 16K with 52-bit output
  for (const ArmPageSize size :
       {ArmPageSize::unspecified, ArmPageSize::k4K, ArmPageSize::k16K, ArmPageSize::k64K}) {
    EXPECT_EQ(page_size_error(size, kAll), "(accepted)");
  }
  EXPECT_EQ(page_size_error(ArmPageSize::unspecified, kOnly16K), "(accepted)");
  EXPECT_EQ(page_size_error(ArmPageSize::k4K, kNo64KWith52Bit), "(accepted)");
  EXPECT_EQ(page_size_error(ArmPageSize::k16K, kNo64KWith52Bit), "(accepted)");
  EXPECT_EQ(page_size_error(ArmPageSize::k16K, kOnly16K), "(accepted)");

  const std::string no_16k = page_size_error(ArmPageSize::k16K, kNo16K);
  EXPECT_THAT(no_16k, StartsWith("Image-test: "));
  EXPECT_THAT(no_16k, HasSubstr("built for 16 KiB pages"));
  EXPECT_THAT(no_16k, HasSubstr("(its page sizes: 4 KiB, 64 KiB)"));
  EXPECT_THAT(page_size_error(ArmPageSize::k64K, kNo64KWith52Bit),
              HasSubstr("built for 64 KiB pages"));
  EXPECT_THAT(page_size_error(ArmPageSize::k4K, kOnly16K), HasSubstr("(its page sizes: 16 KiB)"));
  EXPECT_THAT(page_size_error(ArmPageSize::k4K, 0xff00'0000), HasSubstr("(its page sizes: none)"));
}

TEST(Arm64Image, ImageSizeSmallerThanFileKeepsTheWholeFile) {
  const auto file = FakeImage{.image_size = 4 * KiB}.build();
  EXPECT_EQ(parse_arm64_image(file, "Image-test").image_size, file.size());
}

TEST(Arm64Image, RejectsBadMagic) {
  const std::string error = parse_error(FakeImage{.magic = 0x12345678}.build());
  EXPECT_THAT(error, StartsWith("Image-test: "));
  EXPECT_THAT(error, HasSubstr("magic"));
}

TEST(Arm64Image, RejectsBigEndianKernels) {
  const std::string error = parse_error(FakeImage{.flags = 0b1011}.build());
  EXPECT_THAT(error, StartsWith("Image-test: "));
  EXPECT_THAT(error, HasSubstr("big-endian"));
}

TEST(Arm64Image, RejectsTruncatedFiles) {
  auto file = FakeImage{}.build();
  file.resize(kImageHeaderSize - 1);
  EXPECT_THAT(parse_error(file), HasSubstr("too small"));
  EXPECT_THAT(parse_error({}), HasSubstr("empty"));
}

TEST(Arm64Image, RejectsKnownOtherFormatsByName) {
  std::vector<uint8_t> gzip{0x1f, 0x8b, 0x08, 0x00};
  gzip.resize(4096);
  EXPECT_THAT(parse_error(gzip), HasSubstr("gzip"));

  std::vector<uint8_t> zboot{'M', 'Z', 0, 0, 'z', 'i', 'm', 'g'};
  zboot.resize(4096);
  EXPECT_THAT(parse_error(zboot), HasSubstr("EFI zboot"));

  std::vector<uint8_t> elf{0x7f, 'E', 'L', 'F'};
  elf.resize(4096);
  EXPECT_THAT(parse_error(elf), HasSubstr("ELF"));

  std::vector<uint8_t> bzimage(4096);
  bzimage[0x202] = 'H', bzimage[0x203] = 'd', bzimage[0x204] = 'r', bzimage[0x205] = 'S';
  EXPECT_THAT(parse_error(bzimage), HasSubstr("x86 bzImage"));
}

TEST(Arm64Image, RejectsImplausibleTextOffset) {
  EXPECT_THAT(parse_error(FakeImage{.text_offset = 2 * MiB}.build()), HasSubstr("text_offset"));
  EXPECT_THAT(parse_error(FakeImage{.text_offset = 0x80001}.build()), HasSubstr("text_offset"));
}

// A corrupt image_size (here 2^63) is said to be one, not "give the guest 8 EiB of RAM".
TEST(Arm64Image, RejectsAnImplausibleImageSize) {
  EXPECT_THAT(parse_error(FakeImage{.image_size = 1ull << 63}.build()),
              HasSubstr("image_size 0x8000000000000000 is over 4 GiB (corrupt header?)"));
  EXPECT_EQ(parse_error(FakeImage{.image_size = 64 * MiB}.build()), "(accepted)");
}

TEST(Arm64Image, LegacyKernelsWithImageSizeZeroUseTextOffset0x80000) {
  // Pre-3.17: text_offset's endianness was unspecified and flags were reserved: ignore both.
  const auto file =
      FakeImage{
          .text_offset = 0x0000080000000000, .image_size = 0, .flags = 1, .file_size = 3 * MiB}
          .build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  EXPECT_TRUE(image.legacy);
  EXPECT_EQ(image.text_offset, kLegacyTextOffset);
  EXPECT_EQ(image.image_size, 4 * MiB);  // the file rounded up to 2 MiB
}

TEST(Arm64BootPlan, KernelAtTheRamBaseDtbAndInitrdAtTheTop) {
  const auto file = FakeImage{.text_offset = 0x80000}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  const ArmBootPlan plan = plan_arm64_boot(image, kRamBase, 256 * MiB, 10 * MiB + 123);

  EXPECT_EQ(plan.kernel_base, kRamBase);
  EXPECT_EQ(plan.kernel, (GpaRange{kRamBase + 0x80000, 6 * MiB}));
  EXPECT_EQ(plan.entry_gpa, kRamBase + 0x80000);

  EXPECT_EQ(plan.dtb, (GpaRange{kRamBase + 254 * MiB, 2 * MiB}));
  EXPECT_EQ(plan.dtb.gpa % kDtbAlign, 0u);
  EXPECT_FALSE(crosses_2mib(plan.dtb));

  EXPECT_EQ(plan.initrd.size, 10 * MiB + 123);
  EXPECT_EQ(plan.initrd.gpa % kInitrdAlign, 0u);
  EXPECT_LE(plan.initrd.end(), plan.dtb.gpa);
  EXPECT_GT(plan.initrd.end() + kInitrdAlign, plan.dtb.gpa);  // packed right below the dtb
  EXPECT_GE(plan.initrd.gpa, plan.kernel.end());
}

TEST(Arm64BootPlan, UnalignedRamBaseRoundsTheKernelBaseUp) {
  const auto file = FakeImage{}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  const ArmBootPlan plan = plan_arm64_boot(image, kRamBase + 4 * KiB, 64 * MiB, 0);
  EXPECT_EQ(plan.kernel_base, kRamBase + 2 * MiB);
  EXPECT_EQ(plan.initrd.size, 0u);
}

TEST(Arm64BootPlan, DtbNeverCrossesA2MiBBoundary) {
  const auto file = FakeImage{}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  // RAM ends 512 KiB into a 2 MiB block: a 2 MiB dtb below the end would straddle two blocks.
  const uint64_t ram_size = 64 * MiB + 512 * KiB;
  const ArmBootPlan plan = plan_arm64_boot(image, kRamBase, ram_size, 0);
  EXPECT_FALSE(crosses_2mib(plan.dtb));
  EXPECT_EQ(plan.dtb, (GpaRange{kRamBase + 62 * MiB, 2 * MiB}));

  // A small dtb goes right to the end, 8-byte aligned.
  const ArmBootPlan small = plan_arm64_boot(image, kRamBase, ram_size, 0, 1001);
  EXPECT_EQ(small.dtb.size, 1008u);
  EXPECT_EQ(small.dtb.end(), kRamBase + ram_size);
  EXPECT_FALSE(crosses_2mib(small.dtb));
}

TEST(Arm64BootPlan, InitrdStaysInThe32GiBWindowOfTheKernel) {
  const auto file = FakeImage{}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  const ArmBootPlan plan = plan_arm64_boot(image, kRamBase, 64 * GiB, 100 * MiB);
  EXPECT_EQ(plan.dtb.end(), kRamBase + 32 * GiB);
  EXPECT_EQ(plan.initrd.end() / GiB, (kRamBase + 32 * GiB - 1) / GiB);
}

TEST(Arm64BootPlan, TooLittleRamNamesMemoryAndWhatDoesNotFit) {
  const auto file = FakeImage{.image_size = 30 * MiB}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  const std::string kernel_too_big = plan_error(image, 16 * MiB, 0);
  EXPECT_THAT(kernel_too_big, StartsWith("--memory: "));
  EXPECT_THAT(kernel_too_big, HasSubstr("Image-test"));
  EXPECT_EQ(plan_error(image, 32 * MiB, 0), "(planned)");
  EXPECT_THAT(plan_error(image, 32 * MiB, 64 * KiB), HasSubstr("initrd"));  // no room left
  EXPECT_THAT(plan_error(image, 31 * MiB, 0), StartsWith("--memory: "));    // no dtb block
  EXPECT_EQ(plan_error(image, 64 * MiB, 32 * MiB), "(planned)");            // 30 + 32 + 2 MiB
  EXPECT_THAT(plan_error(image, 64 * MiB, 32 * MiB + 1), StartsWith("--memory: "));
}

TEST(Arm64BootPlan, HugeImageSizeDoesNotWrapAround) {
  // The parser refuses such a header (RejectsAnImplausibleImageSize); the plan, public too,
  // must still not wrap around for one.
  const auto file = FakeImage{}.build();
  ArmImage image = parse_arm64_image(file, "Image-test");
  image.image_size = ~uint64_t{0} - 4 * KiB;
  EXPECT_THAT(plan_error(image, 64 * MiB, 0), StartsWith("--memory: "));
  EXPECT_THAT(plan_error(image, 64 * MiB, 0), HasSubstr("TiB"));
}

TEST(Arm64BootLoader, CopiesKernelInitrdAndDtbWhereThePlanSays) {
  const auto file = FakeImage{.text_offset = 0x80000}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  GuestMemory memory;
  memory.map(kRamBase, MemoryRegion::create("ram", 32 * MiB), 0, 32 * MiB);
  const std::vector<uint8_t> initrd(3 * MiB + 5, 0xab);
  const std::vector<uint8_t> dtb(777, 0xcd);
  const ArmBootPlan plan = plan_arm64_boot(image, kRamBase, 32 * MiB, initrd.size());
  const ArmBootInfo info = load_arm64(memory, image, plan, initrd, dtb);

  EXPECT_EQ(info.entry_gpa, kRamBase + 0x80000);
  EXPECT_EQ(info.dtb_gpa, plan.dtb.gpa);
  EXPECT_EQ(info.kernel, (GpaRange{kRamBase + 0x80000, file.size()}));
  EXPECT_EQ(info.initrd, plan.initrd);
  EXPECT_EQ(info.dtb, (GpaRange{plan.dtb.gpa, dtb.size()}));

  std::vector<uint8_t> back(file.size());
  ASSERT_TRUE(memory.read(info.kernel.gpa, back.data(), back.size()));
  EXPECT_EQ(back, file);
  back.resize(initrd.size());
  ASSERT_TRUE(memory.read(info.initrd.gpa, back.data(), back.size()));
  EXPECT_EQ(back, initrd);
  back.resize(dtb.size());
  ASSERT_TRUE(memory.read(info.dtb.gpa, back.data(), back.size()));
  EXPECT_EQ(back, dtb);
}

TEST(Arm64BootLoader, RefusesInputsThatDoNotMatchThePlanOrTheMemory) {
  const auto file = FakeImage{}.build();
  const ArmImage image = parse_arm64_image(file, "Image-test");
  GuestMemory memory;
  memory.map(kRamBase, MemoryRegion::create("ram", 16 * MiB), 0, 16 * MiB);
  const std::vector<uint8_t> dtb(64, 0);
  const ArmBootPlan plan = plan_arm64_boot(image, kRamBase, 16 * MiB, 0);
  const std::vector<uint8_t> initrd(100);
  EXPECT_THROW(load_arm64(memory, image, plan, initrd, dtb), std::invalid_argument);
  EXPECT_THROW(load_arm64(memory, image, plan, {}, std::vector<uint8_t>(3 * MiB)),
               std::invalid_argument);
  EXPECT_THROW(load_arm64(memory, image, plan, {}, {}), std::invalid_argument);

  // A plan for more RAM than is mapped: the loader must not write outside guest memory.
  const ArmBootPlan too_big = plan_arm64_boot(image, kRamBase, 64 * MiB, 0);
  EXPECT_THROW(load_arm64(memory, image, too_big, {}, dtb), std::runtime_error);
}

TEST(Arm64Image, RandomHeadersAreAcceptedOrRejectedWithTheFileName) {
  std::mt19937_64 random(777);
  for (int round = 0; round < 5000; ++round) {
    auto file = FakeImage{.file_size = 128 + random() % 256}.build();
    for (size_t i = 0; i < kImageHeaderSize; ++i) {
      if (random() % 3 == 0) file[i] = static_cast<uint8_t>(random());
    }
    try {
      const ArmImage image = parse_arm64_image(file, "Image-test");
      ASSERT_LT(image.text_offset, kImageBaseAlign);
      ASSERT_GE(image.image_size, file.size());
      // Whatever was accepted plans inside RAM or is refused as a user error.
      const ArmBootPlan plan = plan_arm64_boot(image, kRamBase, 64 * MiB, 0);
      ASSERT_LE(plan.dtb.end(), kRamBase + 64 * MiB);
      ASSERT_LE(plan.kernel.end(), plan.dtb.gpa);
    } catch (const UserError& e) {
      const std::string message = e.what();
      ASSERT_TRUE(message.starts_with("Image-test: ") || message.starts_with("--memory: "))
          << message;
    }
  }
}

}  // namespace aarch64_image_test
