#include "libvmm/arch/x86_64/boot_layout.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "libvmm/core/error.hpp"

namespace libvmm::x86 {

std::vector<RamRange> x86_ram_layout(uint64_t memory_size) {
  if (memory_size < kKernelLoadAddr) {
    throw UserError(
        fmt::format("--memory: {} bytes is too small; an x86 guest needs at least 1 MiB "
                    "for its boot structures, plus room for the kernel",
                    memory_size));
  }
  if (memory_size % (4 * KiB) != 0) {
    throw UserError(
        fmt::format("--memory: {:#x} bytes is not a whole number of 4 KiB pages", memory_size));
  }
  // RAM above the 1 GiB MMIO hole ends below the PCI 64-bit BAR window.
  constexpr uint64_t kMaxMemory = kPciMmio64Base - (kHighRamStart - kMmioHoleStart);
  if (memory_size > kMaxMemory) {
    throw UserError(fmt::format(
        "--memory: {:#x} bytes is more than an x86_64 guest can have (at most {} GiB: RAM ends "
        "below the PCI 64-bit BAR window at {:#x})",
        memory_size, kMaxMemory / GiB, kPciMmio64Base));
  }
  const uint64_t low = std::min(memory_size, kMmioHoleStart);
  std::vector<RamRange> ram{{0, low}};
  if (memory_size > low) ram.push_back({kHighRamStart, memory_size - low});
  return ram;
}

}  // namespace libvmm::x86
