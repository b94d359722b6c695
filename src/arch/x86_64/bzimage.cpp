#include "libvmm/arch/x86_64/bzimage.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "libvmm/core/error.hpp"

namespace libvmm::x86 {
namespace {

constexpr size_t kSectorSize = 512;
constexpr size_t kJumpOffsetByte = 0x201;  // the header ends at 0x202 + this byte
// A 2.12 header reaches at least to the end of handover_offset (added in 2.11).
constexpr size_t kMinHeaderEnd =
    kSetupHeaderOffset + offsetof(setup_header, handover_offset) + sizeof(uint32_t);

bool starts_with(std::span<const uint8_t> data, std::initializer_list<uint8_t> magic) {
  return data.size() >= magic.size() && std::equal(magic.begin(), magic.end(), data.begin());
}

// Catches the usual wrong files before their bytes are read as a header.
void reject_known_formats(std::span<const uint8_t> image, const std::string& path) {
  if (image.empty()) reject_input(path, "is empty, not a bzImage");
  if (starts_with(image, {0x7f, 'E', 'L', 'F'})) {
    reject_input(path, "is an ELF file (a vmlinux?), not a bzImage: pass arch/x86/boot/bzImage");
  }
  if (starts_with(image, {0x1f, 0x8b})) {
    reject_input(path,
                 "is gzip-compressed, not a bzImage: pass the uncompressed arch/x86/boot/bzImage");
  }
  if (image.size() < kSetupHeaderOffset + sizeof(setup_header)) {
    reject_input(path,
                 fmt::format("is too small to be a bzImage ({} bytes; truncated?)", image.size()));
  }
}

void check_header(const setup_header& hdr, const std::string& path) {
  if (hdr.boot_flag != kBootFlag) {
    // A copy: formatting takes a reference, and setup_header's fields are packed (unaligned).
    const uint16_t boot_flag = hdr.boot_flag;
    reject_input(path, fmt::format("not a bzImage (boot_flag is {:#06x}, not 0xaa55)", boot_flag));
  }
  if (hdr.header != kHdrSMagic) {
    reject_input(path,
                 "not a bzImage (no HdrS header): pass a bzImage, not a vmlinux/ELF or "
                 "compressed file");
  }
  if (hdr.version < kMinBootProtocol) {
    reject_input(path,
                 fmt::format("boot protocol {}.{:02} is too old; need 2.12 or later (Linux 3.8+)",
                             hdr.version >> 8, hdr.version & 0xff));
  }
  if ((hdr.xloadflags & XLF_KERNEL_64) == 0) {
    reject_input(path, "has no 64-bit entry point (XLF_KERNEL_64 not set): build a 64-bit kernel");
  }
  if ((hdr.loadflags & LOADED_HIGH) == 0) {
    reject_input(path, "is not loaded high (LOADED_HIGH not set): an old zImage, not a bzImage");
  }
  const uint32_t align = hdr.kernel_alignment;
  if (hdr.relocatable_kernel != 0 && (align == 0 || (align & (align - 1)) != 0)) {
    reject_input(path, fmt::format("kernel_alignment {:#x} is not a power of two", align));
  }
}

}  // namespace

BzImage BzImage::parse(std::span<const uint8_t> image, std::string path) {
  reject_known_formats(image, path);
  BzImage bz;
  std::memcpy(&bz.header_, image.data() + kSetupHeaderOffset, sizeof(setup_header));
  check_header(bz.header_, path);

  const size_t header_end = 0x202 + size_t{image[kJumpOffsetByte]};
  if (header_end < kMinHeaderEnd) {
    reject_input(path, fmt::format("setup header ends at {:#x}, too short for boot protocol 2.12",
                                   header_end));
  }
  const size_t copied_end = std::min(header_end, kSetupHeaderOffset + sizeof(setup_header));
  bz.header_bytes_ = image.subspan(kSetupHeaderOffset, copied_end - kSetupHeaderOffset);

  bz.setup_sects_ = bz.header_.setup_sects == 0 ? 4 : bz.header_.setup_sects;
  const size_t setup_size = (size_t{bz.setup_sects_} + 1) * kSectorSize;
  if (image.size() < setup_size) {
    reject_input(path,
                 fmt::format("is truncated: it declares {} setup sectors ({} bytes) but has only "
                             "{} bytes",
                             bz.setup_sects_, setup_size, image.size()));
  }
  if (image.size() == setup_size)
    reject_input(path, "has no protected-mode kernel after its setup code");
  bz.kernel_ = image.subspan(setup_size);
  bz.path_ = std::move(path);
  return bz;
}

}  // namespace libvmm::x86
