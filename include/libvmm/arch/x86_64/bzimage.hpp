// A Linux bzImage held in memory, validated against the x86 boot protocol
// (Documentation/arch/x86/boot.rst) for booting through the 64-bit entry point.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <span>
#include <string>

namespace libvmm::x86 {

// Oldest boot protocol we accept: 2.12 added xloadflags (XLF_KERNEL_64).
constexpr uint16_t kMinBootProtocol = 0x020c;
// The setup header sits at this offset both in the image and in struct boot_params.
constexpr size_t kSetupHeaderOffset = 0x1f1;
constexpr uint16_t kBootFlag = 0xAA55;       // setup_header.boot_flag
constexpr uint32_t kHdrSMagic = 0x53726448;  // setup_header.header: "HdrS", little-endian

class BzImage {
 public:
  // Validates `image` (the whole file). `path` names it in error messages (UserError).
  // The BzImage refers to `image`'s bytes, which must outlive it.
  static BzImage parse(std::span<const uint8_t> image, std::string path);

  const std::string& path() const { return path_; }

  uint8_t setup_sects() const { return setup_sects_; }  // 0 in the file already mapped to 4
  uint16_t protocol_version() const { return header_.version; }
  uint64_t pref_address() const { return header_.pref_address; }
  uint32_t init_size() const { return header_.init_size; }
  uint32_t kernel_alignment() const { return header_.kernel_alignment; }
  bool relocatable() const { return header_.relocatable_kernel != 0; }
  uint32_t initrd_addr_max() const { return header_.initrd_addr_max; }
  uint32_t cmdline_size() const { return header_.cmdline_size; }  // max length without the NUL
  uint16_t xloadflags() const { return header_.xloadflags; }
  uint8_t loadflags() const { return header_.loadflags; }

  // The setup header as the file has it, from 0x1f1 to its self-declared end: what a loader
  // copies into the zero page.
  std::span<const uint8_t> setup_header_bytes() const { return header_bytes_; }
  // The protected-mode kernel: everything after the setup sectors.
  std::span<const uint8_t> protected_mode_kernel() const { return kernel_; }

 private:
  BzImage() = default;
  std::string path_;
  setup_header header_{};
  uint8_t setup_sects_ = 0;
  std::span<const uint8_t> header_bytes_;
  std::span<const uint8_t> kernel_;
};

}  // namespace libvmm::x86
