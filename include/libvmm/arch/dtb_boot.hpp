// What the architectures that boot Linux from an `Image` with a device tree (AArch64, RISC-V)
// share: guest-physical ranges, the initrd's place below the device tree, the message when RAM
// is too small, and copying kernel, initrd and device tree into guest RAM. Each
// architecture's image.hpp parses its own header and chooses where the kernel and the device
// tree go.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "libvmm/core/guest_memory.hpp"

namespace libvmm {

// A range of guest-physical addresses.
struct GpaRange {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t end() const { return gpa + size; }  // exclusive
  bool operator==(const GpaRange&) const = default;
};

// Where a kernel, its initrd and its device tree go (the architecture's plan_*_boot()).
struct DtbBootPlan {
  GpaRange kernel;         // size = image_size (incl. bss)
  uint64_t entry_gpa = 0;  // pc
  GpaRange initrd;         // size 0 without an initrd
  GpaRange dtb;            // the room reserved for the device tree
};

// What went where (for the vCPU setup and logs).
struct DtbBootInfo {
  uint64_t entry_gpa = 0;  // pc
  uint64_t dtb_gpa = 0;    // the device tree register (x0, a1)
  GpaRange kernel;         // the file bytes as copied
  GpaRange initrd;         // as copied; size 0 without an initrd
  GpaRange dtb;            // as copied
};

// The initrd's place: `size` bytes right below `dtb_gpa`, the start aligned down to `align`
// (a power of two), at or above `kernel_end`. Size 0 (no initrd): an empty range. nullopt
// when it does not fit.
std::optional<GpaRange> place_initrd_below(uint64_t dtb_gpa, uint64_t kernel_end, uint64_t size,
                                           uint64_t align);

// The UserError naming --memory when `ram_size` cannot hold the kernel `path` (`image_size`
// with its bss), the initrd and the device tree; `needed`: a lower bound to suggest.
[[noreturn]] void throw_ram_too_small(std::string_view path, uint64_t image_size, uint64_t ram_size,
                                      uint64_t initrd_size, uint64_t needed);

// Copies the Image's bytes (`image`, at most plan.kernel.size), the initrd (may be empty) and
// the dtb into `memory` as `plan` says. `initrd.size()` must equal plan.initrd.size and
// `dtb.size()` must be in (0, plan.dtb.size] (the dtb is built after planning, with the initrd
// bounds in /chosen); std::invalid_argument otherwise. Throws std::runtime_error if the plan
// does not fit `memory` (a VMM bug, not a user error). `arch` names the caller in messages.
DtbBootInfo load_dtb_boot(const GuestMemory& memory, std::string_view arch,
                          std::span<const uint8_t> image, const DtbBootPlan& plan,
                          std::span<const uint8_t> initrd, std::span<const uint8_t> dtb);

}  // namespace libvmm
