// The riscv64 Linux `Image` (Documentation/arch/riscv/boot-image-header.rst and boot.rst):
// header checks, where the kernel, initrd and device tree go in guest RAM, and copying them
// there.
//
// Boot registers (set by the vCPU side): a0 = the hart id, a1 = dtb_gpa, pc = entry_gpa, in
// S-mode with the MMU off (satp = 0) and interrupts disabled.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "libvmm/arch/dtb_boot.hpp"
#include "libvmm/core/guest_memory.hpp"

namespace libvmm::riscv64 {

constexpr uint64_t kImageHeaderSize = 64;
constexpr uint64_t kImageMagic = 0x5643534952;  // "RISCV", little endian, at 0x30 (deprecated)
constexpr uint32_t kImageMagic2 = 0x05435352;   // "RSC\x05", little endian, at 0x38 (v0.2+)
constexpr uint64_t kKernelAlign = 2 * MiB;      // rv64 kernels run from a 2 MiB aligned base
constexpr uint64_t kDtbMaxSize = 2 * MiB;       // the kernel maps at most 2 MiB of it early
constexpr uint64_t kDtbAlign = 8;
constexpr uint64_t kInitrdAlign = 4 * KiB;

using libvmm::GpaRange;

// A validated little-endian riscv64 Image. Refers to the file's bytes, which must outlive it.
struct RiscvImage {
  std::string path;                // for messages
  std::span<const uint8_t> bytes;  // the whole file, copied as is to the kernel's place
  uint64_t text_offset = 0;        // load offset from the start of RAM (2 MiB on Linux rv64)
  uint64_t image_size = 0;         // effective size incl. bss (at least the file's size)
  uint32_t version = 0;            // header version, major << 16 | minor
  bool efi_stub = false;           // starts with "MZ": also a PE/COFF (EFI stub) image
};

// Validates `file` (the whole Image). Throws UserError "PATH: reason" for anything that is not
// an uncompressed little-endian riscv64 Image: empty or truncated, no magic (with a hint for
// gzip, ELF vmlinux, arm64 Image, x86 bzImage), big-endian, image_size 0, a text_offset that
// would not leave the kernel 2 MiB aligned.
RiscvImage parse_riscv64_image(std::span<const uint8_t> file, const std::string& path);

// Where everything goes in guest RAM [ram_base, ram_base + ram_size):
//   kernel: at the lowest 2 MiB aligned base in RAM + text_offset (entry = its first byte);
//   dtb:    the start of the highest 2 MiB block of RAM, which it has alone (8-byte aligned);
//   initrd: just below the dtb block, 4 KiB aligned, above the kernel's image_size.
// (dtb.gpa goes in a1; dtb.size is the room reserved, <= 2 MiB.)
using RiscvBootPlan = DtbBootPlan;

// Throws UserError naming --memory when the RAM cannot hold kernel, initrd and dtb.
// `dtb_max_size` must be in (0, kDtbMaxSize].
RiscvBootPlan plan_riscv64_boot(const RiscvImage& image, uint64_t ram_base, uint64_t ram_size,
                                uint64_t initrd_size, uint64_t dtb_max_size = kDtbMaxSize);

// What went where (for the vCPU setup and logs); dtb_gpa goes in a1.
using RiscvBootInfo = DtbBootInfo;

// Copies the Image, the initrd (may be empty) and the dtb into `memory` as `plan` says.
// `initrd.size()` must equal plan.initrd.size and `dtb.size()` must be <= plan.dtb.size.
// Throws std::runtime_error if the plan does not fit `memory` (a VMM bug, not a user error).
RiscvBootInfo load_riscv64(const GuestMemory& memory, const RiscvImage& image,
                           const RiscvBootPlan& plan, std::span<const uint8_t> initrd,
                           std::span<const uint8_t> dtb);

}  // namespace libvmm::riscv64
