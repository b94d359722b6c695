// riscv64 Image header checks, the boot layout planner and the loader, on synthetic Images.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "libvmm/arch/riscv64/image.hpp"
#include "libvmm/core/error.hpp"

using namespace libvmm;
using namespace libvmm::riscv64;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace riscv64_image_test {

constexpr uint64_t kRamBase = 0x8000'0000;  // QEMU virt's, and the riscv64 board's

// The header fields a test may want to break; the defaults look like a 6.12 kernel with its
// EFI stub, scaled down.
struct FakeImage {
  uint64_t text_offset = 2 * MiB;
  uint64_t image_size = 6 * MiB;  // file + bss
  uint64_t flags = 0;             // little endian
  uint32_t version = 0x2;         // 0.2
  uint64_t magic = kImageMagic;
  uint32_t magic2 = kImageMagic2;
  size_t file_size = 64 * KiB;
  bool efi = true;

  std::vector<uint8_t> build() const {
    std::vector<uint8_t> file(file_size);
    auto put = [&](size_t at, uint64_t value, size_t bytes) {
      for (size_t i = 0; i < bytes && at + i < file.size(); ++i) {
        file[at + i] = static_cast<uint8_t>(value >> (8 * i));
      }
    };
    put(0, efi ? 0x5a4d : 0x0100006f, 4);  // "MZ" (c.li s4,-13) or a jump, as real kernels have
    put(0x08, text_offset, 8);
    put(0x10, image_size, 8);
    put(0x18, flags, 8);
    put(0x20, version, 4);
    put(0x30, magic, 8);
    put(0x38, magic2, 4);
    for (size_t i = kImageHeaderSize; i < file.size(); ++i) file[i] = static_cast<uint8_t>(i * 7);
    return file;
  }
};

std::string parse_error(const std::vector<uint8_t>& file) {
  try {
    parse_riscv64_image(file, "Image-test");
  } catch (const UserError& e) {
    return e.what();
  }
  return "(accepted)";
}

std::string plan_error(const RiscvImage& image, uint64_t ram_size, uint64_t initrd_size) {
  try {
    plan_riscv64_boot(image, kRamBase, ram_size, initrd_size);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(planned)";
}

TEST(Riscv64Image, ParsesAGoodHeader) {
  const auto file = FakeImage{}.build();
  const RiscvImage image = parse_riscv64_image(file, "Image-test");
  EXPECT_EQ(image.path, "Image-test");
  EXPECT_EQ(image.text_offset, 2 * MiB);
  EXPECT_EQ(image.image_size, 6 * MiB);
  EXPECT_EQ(image.version, 2u);
  EXPECT_TRUE(image.efi_stub);
  EXPECT_EQ(image.bytes.data(), file.data());
  EXPECT_EQ(image.bytes.size(), file.size());
}

TEST(Riscv64Image, EitherMagicIsEnough) {
  // 0.1 headers have only "RISCV" at 0x30; newer kernels may drop it for "RSC\x05" at 0x38.
  EXPECT_EQ(parse_error(FakeImage{.version = 1, .magic2 = 0, .efi = false}.build()), "(accepted)");
  EXPECT_EQ(parse_error(FakeImage{.magic = 0}.build()), "(accepted)");
}

TEST(Riscv64Image, ImageSizeSmallerThanFileKeepsTheWholeFile) {
  const auto file = FakeImage{.image_size = 4 * KiB}.build();
  EXPECT_EQ(parse_riscv64_image(file, "Image-test").image_size, file.size());
}

TEST(Riscv64Image, RejectsBadMagic) {
  const std::string error = parse_error(FakeImage{.magic = 0x1234, .magic2 = 0x5678}.build());
  EXPECT_EQ(error,
            "Image-test: not a riscv64 Image (no \"RSC\\x05\" magic at offset 0x38 nor "
            "\"RISCV\" at 0x30)");
}

TEST(Riscv64Image, RejectsBigEndianKernels) {
  const std::string error = parse_error(FakeImage{.flags = 1}.build());
  EXPECT_THAT(error, StartsWith("Image-test: "));
  EXPECT_THAT(error, HasSubstr("big-endian"));
}

TEST(Riscv64Image, RejectsAZeroImageSize) {
  EXPECT_THAT(parse_error(FakeImage{.image_size = 0}.build()), HasSubstr("image_size is 0"));
}

TEST(Riscv64Image, RejectsTextOffsetsThatLeaveTheKernelUnaligned) {
  EXPECT_EQ(parse_error(FakeImage{.text_offset = 0}.build()), "(accepted)");
  EXPECT_THAT(parse_error(FakeImage{.text_offset = 0x1000}.build()),
              StartsWith("Image-test: text_offset 0x1000 is not a multiple of 2 MiB"));
  EXPECT_THAT(parse_error(FakeImage{.text_offset = 0x40'0000'0000}.build()),
              HasSubstr("text_offset"));
}

TEST(Riscv64Image, RejectsTruncatedFiles) {
  auto file = FakeImage{}.build();
  file.resize(kImageHeaderSize - 1);
  EXPECT_THAT(parse_error(file), HasSubstr("too small"));
  EXPECT_THAT(parse_error({}), HasSubstr("empty"));
}

TEST(Riscv64Image, RejectsKnownOtherFormatsByName) {
  std::vector<uint8_t> gzip{0x1f, 0x8b, 0x08, 0x00};
  gzip.resize(4096);
  EXPECT_THAT(parse_error(gzip), HasSubstr("gzip"));

  std::vector<uint8_t> elf{0x7f, 'E', 'L', 'F'};
  elf.resize(4096);
  EXPECT_THAT(parse_error(elf), HasSubstr("ELF"));

  std::vector<uint8_t> bzimage(4096);
  bzimage[0x202] = 'H', bzimage[0x203] = 'd', bzimage[0x204] = 'r', bzimage[0x205] = 'S';
  EXPECT_THAT(parse_error(bzimage), HasSubstr("x86 bzImage"));

  EXPECT_EQ(parse_error(FakeImage{.magic = 0, .magic2 = 0x644d5241}.build()),
            "Image-test: is an arm64 Image, not a riscv64 Image");
}

TEST(Riscv64BootPlan, KernelAtTextOffsetDtbAndInitrdAtTheTop) {
  const auto file = FakeImage{}.build();
  const RiscvImage image = parse_riscv64_image(file, "Image-test");
  const RiscvBootPlan plan = plan_riscv64_boot(image, kRamBase, 128 * MiB, 5 * MiB + 3);
  EXPECT_EQ(plan.kernel, (GpaRange{kRamBase + 2 * MiB, 6 * MiB}));
  EXPECT_EQ(plan.entry_gpa, kRamBase + 2 * MiB);
  EXPECT_EQ(plan.dtb, (GpaRange{kRamBase + 126 * MiB, 2 * MiB}));
  EXPECT_EQ(plan.initrd.size, 5 * MiB + 3);
  EXPECT_EQ(plan.initrd.gpa % kInitrdAlign, 0u);
  EXPECT_LE(plan.initrd.end(), plan.dtb.gpa);
  EXPECT_GT(plan.initrd.gpa, plan.dtb.gpa - 5 * MiB - 4 * KiB - 3);
  EXPECT_EQ(plan_riscv64_boot(image, kRamBase, 128 * MiB, 0).initrd.size, 0u);
}

TEST(Riscv64BootPlan, UnalignedRamBaseRoundsTheKernelBaseUp) {
  const auto file = FakeImage{.text_offset = 0}.build();
  const RiscvImage image = parse_riscv64_image(file, "Image-test");
  const RiscvBootPlan plan = plan_riscv64_boot(image, kRamBase + 4 * KiB, 64 * MiB, 0);
  EXPECT_EQ(plan.kernel.gpa, kRamBase + 2 * MiB);
  EXPECT_EQ(plan.dtb.gpa % kDtbAlign, 0u);
  EXPECT_LE(plan.dtb.end(), kRamBase + 4 * KiB + 64 * MiB);
}

TEST(Riscv64BootPlan, TooLittleRamNamesMemoryAndWhatDoesNotFit) {
  const auto file = FakeImage{}.build();
  const RiscvImage image = parse_riscv64_image(file, "Image-test");
  EXPECT_EQ(plan_error(image, 8 * MiB, 0),
            "--memory: 8 MiB of RAM cannot hold the kernel Image-test (6 MiB with bss) and the "
            "device tree; give it at least 12 MiB");
  EXPECT_THAT(plan_error(image, 16 * MiB, 64 * MiB), HasSubstr("the initrd (64 MiB)"));
  EXPECT_EQ(plan_error(image, 16 * MiB, 4 * MiB), "(planned)");
}

TEST(Riscv64BootPlan, HugeImageSizeDoesNotWrapAround) {
  const auto file = FakeImage{.image_size = ~uint64_t{0} - 4 * KiB}.build();
  const RiscvImage image = parse_riscv64_image(file, "Image-test");
  EXPECT_THAT(plan_error(image, 64 * MiB, 0), StartsWith("--memory: "));
}

TEST(Riscv64BootLoader, CopiesKernelInitrdAndDtbWhereThePlanSays) {
  const auto file = FakeImage{}.build();
  const RiscvImage image = parse_riscv64_image(file, "Image-test");
  GuestMemory memory;
  memory.map(kRamBase, MemoryRegion::create("ram", 32 * MiB), 0, 32 * MiB);
  const std::vector<uint8_t> initrd(3 * MiB + 5, 0xab);
  const std::vector<uint8_t> dtb(777, 0xcd);
  const RiscvBootPlan plan = plan_riscv64_boot(image, kRamBase, 32 * MiB, initrd.size());
  const RiscvBootInfo info = load_riscv64(memory, image, plan, initrd, dtb);

  EXPECT_EQ(info.entry_gpa, kRamBase + 2 * MiB);
  EXPECT_EQ(info.dtb_gpa, plan.dtb.gpa);
  EXPECT_EQ(info.kernel, (GpaRange{kRamBase + 2 * MiB, file.size()}));
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

TEST(Riscv64BootLoader, RefusesInputsThatDoNotMatchThePlanOrTheMemory) {
  const auto file = FakeImage{}.build();
  const RiscvImage image = parse_riscv64_image(file, "Image-test");
  GuestMemory memory;
  memory.map(kRamBase, MemoryRegion::create("ram", 16 * MiB), 0, 16 * MiB);
  const std::vector<uint8_t> dtb(64, 0);
  const RiscvBootPlan plan = plan_riscv64_boot(image, kRamBase, 16 * MiB, 0);
  const std::vector<uint8_t> initrd(100);
  EXPECT_THROW(load_riscv64(memory, image, plan, initrd, dtb), std::invalid_argument);
  EXPECT_THROW(load_riscv64(memory, image, plan, {}, std::vector<uint8_t>(3 * MiB)),
               std::invalid_argument);
  EXPECT_THROW(load_riscv64(memory, image, plan, {}, {}), std::invalid_argument);

  // A plan for more RAM than is mapped: the loader must not write outside guest memory.
  const RiscvBootPlan too_big = plan_riscv64_boot(image, kRamBase, 64 * MiB, 0);
  EXPECT_THROW(load_riscv64(memory, image, too_big, {}, dtb), std::runtime_error);
}

TEST(Riscv64Image, RandomHeadersAreAcceptedOrRejectedWithTheFileName) {
  std::mt19937_64 random(777);
  for (int round = 0; round < 5000; ++round) {
    auto file = FakeImage{.file_size = 128 + random() % 256}.build();
    for (size_t i = 0; i < kImageHeaderSize; ++i) {
      if (random() % 3 == 0) file[i] = static_cast<uint8_t>(random());
    }
    try {
      const RiscvImage image = parse_riscv64_image(file, "Image-test");
      ASSERT_EQ(image.text_offset % kKernelAlign, 0u);
      ASSERT_GE(image.image_size, file.size());
      // Whatever was accepted plans inside RAM or is refused as a user error.
      const RiscvBootPlan plan = plan_riscv64_boot(image, kRamBase, 64 * MiB, 0);
      ASSERT_LE(plan.dtb.end(), kRamBase + 64 * MiB);
      ASSERT_LE(plan.kernel.end(), plan.dtb.gpa);
    } catch (const UserError& e) {
      const std::string message = e.what();
      ASSERT_TRUE(message.starts_with("Image-test: ") || message.starts_with("--memory: "))
          << message;
    }
  }
}

// Debian 13's riscv64 kernel (an Image with an EFI stub), when the emulated riscv64 host has
// fetched it (tools/emuhost/emuhost --arch riscv64): a real header, not one written here.
TEST(Riscv64Image, DebiansKernelWhenCached) {
  const char* cache_env = std::getenv("LIBVMM_CACHE");
  const char* home = std::getenv("HOME");
  const std::filesystem::path cache =
      cache_env != nullptr ? std::filesystem::path(cache_env)
                           : std::filesystem::path(home != nullptr ? home : "/") / ".cache/libvmm";
  std::filesystem::path kernel;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(cache / "emuhost-riscv64" / "kernel", ec)) {
    if (std::filesystem::exists(entry.path() / "Image")) kernel = entry.path() / "Image";
  }
  if (kernel.empty()) GTEST_SKIP() << "no riscv64 kernel cached (emuhost --arch riscv64)";
  std::ifstream in(kernel, std::ios::binary);
  const std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  const RiscvImage image = parse_riscv64_image(file, kernel.string());
  EXPECT_TRUE(image.efi_stub);
  EXPECT_EQ(image.text_offset, 2 * MiB);
  EXPECT_GE(image.version, 2u);
  const RiscvBootPlan plan = plan_riscv64_boot(image, kRamBase, 256 * MiB, 16 * MiB);
  EXPECT_EQ(plan.entry_gpa, kRamBase + 2 * MiB);
  EXPECT_LE(plan.kernel.end(), plan.initrd.gpa);
}

}  // namespace riscv64_image_test
