#include "libvmm/arch/dtb_boot.hpp"

#include <fmt/format.h>

#include <stdexcept>
#include <string>

#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"

namespace libvmm {

std::optional<GpaRange> place_initrd_below(uint64_t dtb_gpa, uint64_t kernel_end, uint64_t size,
                                           uint64_t align) {
  if (size == 0) return GpaRange{};
  if (dtb_gpa < kernel_end || size > dtb_gpa - kernel_end) return std::nullopt;
  const uint64_t gpa = (dtb_gpa - size) & ~(align - 1);
  if (gpa < kernel_end) return std::nullopt;
  return GpaRange{gpa, size};
}

void throw_ram_too_small(std::string_view path, uint64_t image_size, uint64_t ram_size,
                         uint64_t initrd_size, uint64_t needed) {
  throw UserError(fmt::format(
      "--memory: {} of RAM cannot hold the kernel {} ({} with bss){} and the device tree; "
      "give it at least {}",
      format_size(ram_size), path, format_size(image_size),
      initrd_size == 0 ? std::string{} : fmt::format(", the initrd ({})", format_size(initrd_size)),
      format_size(needed)));
}

namespace {

void write_guest(const GuestMemory& memory, std::string_view arch, uint64_t gpa,
                 std::span<const uint8_t> bytes, const char* what) {
  if (!memory.write(gpa, bytes.data(), bytes.size())) {
    throw std::runtime_error(
        fmt::format("{} boot: cannot write the {} ({:#x} bytes at {:#x}): not writable guest RAM",
                    arch, what, bytes.size(), gpa));
  }
}

}  // namespace

DtbBootInfo load_dtb_boot(const GuestMemory& memory, std::string_view arch,
                          std::span<const uint8_t> image, const DtbBootPlan& plan,
                          std::span<const uint8_t> initrd, std::span<const uint8_t> dtb) {
  if (initrd.size() != plan.initrd.size) {
    throw std::invalid_argument(
        fmt::format("{} boot: initrd is {:#x} bytes, the plan has room for {:#x}", arch,
                    initrd.size(), plan.initrd.size));
  }
  if (dtb.empty() || dtb.size() > plan.dtb.size) {
    throw std::invalid_argument(
        fmt::format("{} boot: dtb is {:#x} bytes, the plan has room for {:#x}", arch, dtb.size(),
                    plan.dtb.size));
  }
  if (image.size() > plan.kernel.size) {
    throw std::invalid_argument(fmt::format("{} boot: the plan was made for another Image", arch));
  }
  // The whole image_size must be RAM: the kernel clears its bss there.
  if (!memory.contains(plan.kernel.gpa, plan.kernel.size)) {
    throw std::runtime_error(fmt::format("{} boot: kernel range [{:#x}, {:#x}) is not guest RAM",
                                         arch, plan.kernel.gpa, plan.kernel.end()));
  }
  write_guest(memory, arch, plan.kernel.gpa, image, "kernel");
  if (!initrd.empty()) write_guest(memory, arch, plan.initrd.gpa, initrd, "initrd");
  write_guest(memory, arch, plan.dtb.gpa, dtb, "device tree");

  DtbBootInfo info;
  info.entry_gpa = plan.entry_gpa;
  info.dtb_gpa = plan.dtb.gpa;
  info.kernel = {plan.kernel.gpa, image.size()};
  info.initrd = plan.initrd;
  info.dtb = {plan.dtb.gpa, dtb.size()};
  return info;
}

}  // namespace libvmm
