#include "libvmm/arch/riscv64/image.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <stdexcept>

#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"

namespace libvmm::riscv64 {
namespace {

// boot-image-header.rst's fields, all little endian.
constexpr size_t kTextOffsetAt = 0x08;
constexpr size_t kImageSizeAt = 0x10;
constexpr size_t kFlagsAt = 0x18;
constexpr size_t kVersionAt = 0x20;
constexpr size_t kMagicAt = 0x30;
constexpr size_t kMagic2At = 0x38;
constexpr uint64_t kFlagBigEndian = 1u << 0;
constexpr uint32_t kArm64Magic = 0x644d5241;  // "ARM\x64" at 0x38: a common mix-up

uint64_t align_up(uint64_t value, uint64_t align) {
  return (value + align - 1) & ~(align - 1);
}
uint64_t align_down(uint64_t value, uint64_t align) {
  return value & ~(align - 1);
}
uint64_t saturating_add(uint64_t a, uint64_t b) {
  return a + b < a ? UINT64_MAX : a + b;
}

uint64_t le(std::span<const uint8_t> bytes, size_t at, size_t width) {
  uint64_t value = 0;
  for (size_t i = 0; i < width; ++i) value |= uint64_t{bytes[at + i]} << (8 * i);
  return value;
}

bool has_bytes(std::span<const uint8_t> data, size_t at, std::initializer_list<uint8_t> magic) {
  return data.size() >= at + magic.size() &&
         std::equal(magic.begin(), magic.end(), data.begin() + at);
}

// Names the usual wrong files instead of just "no magic".
void reject_known_formats(std::span<const uint8_t> file, const std::string& path) {
  if (file.empty()) reject_input(path, "is empty, not a riscv64 Image");
  if (has_bytes(file, 0, {0x1f, 0x8b})) {
    reject_input(path, "is gzip-compressed, not a riscv64 Image: gunzip it (Image.gz -> Image)");
  }
  if (has_bytes(file, 0, {0x7f, 'E', 'L', 'F'})) {
    reject_input(path,
                 "is an ELF file (a vmlinux?), not a riscv64 Image: pass arch/riscv/boot/Image");
  }
  if (has_bytes(file, 0x202, {'H', 'd', 'r', 'S'})) {
    reject_input(path, "is an x86 bzImage, not a riscv64 Image");
  }
  if (file.size() < kImageHeaderSize) {
    reject_input(path, fmt::format("is too small to be a riscv64 Image ({} bytes; truncated?)",
                                   file.size()));
  }
  if (le(file, kMagic2At, 4) == kArm64Magic) {
    reject_input(path, "is an arm64 Image, not a riscv64 Image");
  }
}

}  // namespace

RiscvImage parse_riscv64_image(std::span<const uint8_t> file, const std::string& path) {
  reject_known_formats(file, path);
  if (le(file, kMagic2At, 4) != kImageMagic2 && le(file, kMagicAt, 8) != kImageMagic) {
    reject_input(
        path, "not a riscv64 Image (no \"RSC\\x05\" magic at offset 0x38 nor \"RISCV\" at 0x30)");
  }
  RiscvImage image;
  image.path = path;
  image.bytes = file;
  image.version = static_cast<uint32_t>(le(file, kVersionAt, 4));
  image.efi_stub = has_bytes(file, 0, {'M', 'Z'});
  if ((le(file, kFlagsAt, 8) & kFlagBigEndian) != 0) {
    reject_input(path, "is a big-endian kernel; only little-endian riscv64 guests are supported");
  }
  const uint64_t header_size = le(file, kImageSizeAt, 8);
  if (header_size == 0) reject_input(path, "image_size is 0 in the header (corrupt header?)");
  image.text_offset = le(file, kTextOffsetAt, 8);
  if (image.text_offset % kKernelAlign != 0 || image.text_offset >= 1 * GiB) {
    // Linux rv64 maps itself with 2 MiB pages and stops early when its base is not aligned.
    reject_input(path,
                 fmt::format("text_offset {:#x} is not a multiple of 2 MiB below 1 GiB (a rv64 "
                             "kernel must start 2 MiB aligned; a 32-bit kernel or a corrupt "
                             "header?)",
                             image.text_offset));
  }
  // image_size covers the bss too; a longer file (an appended signature) is still copied whole.
  image.image_size = std::max<uint64_t>(header_size, file.size());
  return image;
}

namespace {

[[noreturn]] void ram_too_small(const RiscvImage& image, uint64_t ram_size, uint64_t initrd_size,
                                uint64_t needed) {
  throw_ram_too_small(image.path, image.image_size, ram_size, initrd_size, needed);
}

}  // namespace

RiscvBootPlan plan_riscv64_boot(const RiscvImage& image, uint64_t ram_base, uint64_t ram_size,
                                uint64_t initrd_size, uint64_t dtb_max_size) {
  if (dtb_max_size == 0 || dtb_max_size > kDtbMaxSize) {
    throw std::invalid_argument(
        fmt::format("riscv64 boot: dtb_max_size {:#x} is not in (0, 2 MiB]", dtb_max_size));
  }
  if (ram_base + ram_size < ram_base) {
    throw std::invalid_argument("riscv64 boot: the RAM range wraps around the address space");
  }
  const uint64_t ram_end = ram_base + ram_size;
  const uint64_t dtb_size = align_up(dtb_max_size, kDtbAlign);

  RiscvBootPlan plan;
  const uint64_t base = align_up(ram_base, kKernelAlign);
  plan.kernel = {saturating_add(base, image.text_offset), image.image_size};
  plan.entry_gpa = plan.kernel.gpa;
  // A rough lower bound for the message: kernel, initrd, one 2 MiB dtb block.
  const uint64_t needed =
      saturating_add(saturating_add(base - ram_base + image.text_offset, image.image_size),
                     saturating_add(initrd_size, 2 * kKernelAlign));
  if (base < ram_base || plan.kernel.gpa > ram_end ||
      image.image_size > ram_end - plan.kernel.gpa) {
    ram_too_small(image, ram_size, initrd_size, needed);
  }
  // The dtb at the top of RAM (the kernel maps the 2 MiB blocks around it early).
  if (ram_end - plan.kernel.end() < dtb_size) ram_too_small(image, ram_size, initrd_size, needed);
  plan.dtb = {align_down(ram_end - dtb_size, kDtbAlign), dtb_size};
  if (plan.dtb.gpa < plan.kernel.end()) ram_too_small(image, ram_size, initrd_size, needed);
  const auto initrd =
      place_initrd_below(plan.dtb.gpa, plan.kernel.end(), initrd_size, kInitrdAlign);
  if (!initrd) ram_too_small(image, ram_size, initrd_size, needed);
  plan.initrd = *initrd;
  return plan;
}

RiscvBootInfo load_riscv64(const GuestMemory& memory, const RiscvImage& image,
                           const RiscvBootPlan& plan, std::span<const uint8_t> initrd,
                           std::span<const uint8_t> dtb) {
  return load_dtb_boot(memory, "riscv64", image.bytes, plan, initrd, dtb);
}

}  // namespace libvmm::riscv64
