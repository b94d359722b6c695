// The arm64 Linux `Image` (Documentation/arch/arm64/booting.rst): header checks, where the
// kernel, initrd and device tree go in guest RAM, and copying them there.
//
// Boot registers (set by the vCPU side): x0 = dtb_gpa, x1 = x2 = x3 = 0, pc = entry_gpa,
// PSTATE = EL1h with D, A, I, F masked; MMU and D-cache off.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "libvmm/arch/dtb_boot.hpp"
#include "libvmm/core/guest_memory.hpp"

namespace libvmm::aarch64 {

constexpr uint64_t kImageHeaderSize = 64;
constexpr uint32_t kImageMagic = 0x644d5241;     // "ARM\x64", little endian, at 0x38
constexpr uint64_t kImageBaseAlign = 2 * MiB;    // the kernel's base is 2 MiB aligned
constexpr uint64_t kLegacyTextOffset = 0x80000;  // kernels before 3.17 (image_size == 0)
constexpr uint64_t kDtbMaxSize = 2 * MiB;        // booting.rst: the dtb must not exceed 2 MiB
constexpr uint64_t kDtbAlign = 8;
constexpr uint64_t kInitrdAlign = 4 * KiB;
constexpr uint64_t kInitrdWindowAlign = 1 * GiB;  // initrd and kernel share one 1 GiB-aligned
constexpr uint64_t kInitrdWindowSize = 32 * GiB;  // window of at most 32 GiB

using libvmm::GpaRange;

// Header flags, bits 1-2: the kernel's page size. The guest's stage 1 uses it, so the CPU must
// implement that translation granule (check_arm64_page_size).
enum class ArmPageSize : uint8_t { unspecified = 0, k4K = 1, k16K = 2, k64K = 3 };

// A validated little-endian arm64 Image. Refers to the file's bytes, which must outlive it.
struct ArmImage {
  std::string path;                // for messages
  std::span<const uint8_t> bytes;  // the whole file, copied as is to kernel_gpa
  uint64_t text_offset = 0;        // load offset from the 2 MiB aligned base
  uint64_t image_size = 0;         // effective size incl. bss: from the header, or for legacy
                                   // kernels (header 0) the file size rounded up to 2 MiB
  bool legacy = false;             // header image_size was 0 (pre-3.17 kernel)
  ArmPageSize page_size = ArmPageSize::unspecified;
  bool place_anywhere = false;  // flags bit 3: base may be anywhere, not near DRAM start
};

// Validates `file` (the whole Image). Throws UserError "PATH: reason" for anything that is not
// an uncompressed little-endian arm64 Image: truncated, bad magic (with a hint for gzip,
// EFI zboot, ELF vmlinux, x86 bzImage), big-endian kernel, reserved flags set, bad text_offset.
ArmImage parse_arm64_image(std::span<const uint8_t> file, const std::string& path);

// Throws UserError "PATH: ..." when the Image says it was built for a page size whose translation
// granule the guest's CPU lacks (`id_aa64mmfr0`: its ID_AA64MMFR0_EL1, as KVM shows it); such a
// kernel stops before its first console line. Kernels that say nothing are let through.
void check_arm64_page_size(const ArmImage& image, uint64_t id_aa64mmfr0);

// Where everything goes in guest RAM [ram_base, ram_base + ram_size):
//   kernel: at the lowest 2 MiB aligned base in RAM + text_offset (entry = its first byte);
//   dtb:    the start of the highest 2 MiB block inside the initrd window, which it has alone
//           (8-byte aligned, never crossing a 2 MiB boundary);
//   initrd: just below the dtb block, 4 KiB aligned, above the kernel's image_size.
// (kernel.gpa = kernel_base + text_offset; dtb.gpa goes in x0, dtb.size is the room reserved,
// <= 2 MiB.)
struct ArmBootPlan : DtbBootPlan {
  uint64_t kernel_base = 0;  // 2 MiB aligned
};

// Throws UserError naming --memory when the RAM cannot hold kernel, initrd and dtb, and
// naming --initrd when the initrd alone is too big. `dtb_max_size` must be <= kDtbMaxSize.
ArmBootPlan plan_arm64_boot(const ArmImage& image, uint64_t ram_base, uint64_t ram_size,
                            uint64_t initrd_size, uint64_t dtb_max_size = kDtbMaxSize);

// What went where (for the vCPU setup and logs); dtb_gpa goes in x0.
using ArmBootInfo = DtbBootInfo;

// Copies the Image, the initrd (may be empty) and the dtb into `memory` as `plan` says.
// `initrd.size()` must equal plan.initrd.size and `dtb.size()` must be <= plan.dtb.size (the
// dtb is built after planning, with the initrd bounds in /chosen). Throws std::runtime_error
// if the plan does not fit `memory` (a VMM bug, not a user error).
ArmBootInfo load_arm64(const GuestMemory& memory, const ArmImage& image, const ArmBootPlan& plan,
                       std::span<const uint8_t> initrd, std::span<const uint8_t> dtb);

}  // namespace libvmm::aarch64
