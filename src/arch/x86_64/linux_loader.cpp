#include "libvmm/arch/x86_64/linux_loader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "guest_write.hpp"
#include "libvmm/core/error.hpp"

namespace libvmm::x86 {
namespace {

constexpr uint64_t kPageSize = 4 * KiB;
constexpr uint8_t kLoaderTypeUndefined = 0xff;
constexpr uint16_t kVidModeNormal = 0xffff;
// End of the real-mode heap, as the boot protocol's sample loader sets it. Only the real-mode
// setup code (which the 64-bit entry skips) uses it.
constexpr uint16_t kHeapEnd = 0xe000;
// A vmlinux has no setup header to say these, so the values every x86_64 Linux has: its
// COMMAND_LINE_SIZE (2048, with the NUL) and the initrd limit of boot protocol 2.03 and later.
constexpr uint64_t kVmlinuxCmdlineMax = 2047;
constexpr uint64_t kVmlinuxInitrdAddrMax = 0x7fffffff;

uint64_t align_up(uint64_t value, uint64_t align) {
  return (value + align - 1) & ~(align - 1);
}
uint64_t align_down(uint64_t value, uint64_t align) {
  return value & ~(align - 1);
}
uint64_t mib_rounded_up(uint64_t bytes) {
  return (bytes + MiB - 1) / MiB;
}

const RamRange& low_ram(const std::vector<RamRange>& ram) {
  for (const auto& r : ram) {
    if (r.gpa == 0 && r.size >= kKernelLoadAddr) return r;
  }
  throw std::logic_error("x86 boot: the RAM layout has no low RAM range of at least 1 MiB");
}

uint64_t total_size(const std::vector<RamRange>& ram) {
  uint64_t total = 0;
  for (const auto& r : ram) total += r.size;
  return total;
}

// The decompressor runs at max(load address aligned up, pref_address) when relocatable, else
// at pref_address, and needs init_size bytes from there.
GuestRange kernel_run_range(const BzImage& kernel, uint64_t low_end) {
  uint64_t start = kernel.pref_address();
  if (kernel.relocatable()) {
    start = std::max(align_up(kKernelLoadAddr, kernel.kernel_alignment()), start);
  }
  if (start < kKernelLoadAddr) {
    throw UserError(
        fmt::format("{}: kernel wants to run at {:#x} (pref_address), below 1 MiB "
                    "where the boot structures live",
                    kernel.path(), start));
  }
  const uint64_t size = kernel.init_size();
  if (start > low_end || size > low_end - start) {
    throw UserError(
        fmt::format("{}: kernel needs {} MiB of RAM from {:#x} (init_size), but the guest's "
                    "low RAM ends at {} MiB; give the guest more memory (--memory)",
                    kernel.path(), mib_rounded_up(size), start, low_end / MiB));
  }
  const uint64_t image_size = kernel.protected_mode_kernel().size();
  if (image_size > low_end - kKernelLoadAddr) {
    throw UserError(
        fmt::format("{}: kernel is {} MiB, more than the guest's low RAM above 1 MiB; "
                    "give the guest more memory (--memory)",
                    kernel.path(), mib_rounded_up(image_size)));
  }
  return {start, size};
}

// `max`: the longest command line the kernel takes, without the NUL; `appended`: the bytes vmm
// added at its end (the user's --cmdline may be short, the parameters many).
void check_cmdline(std::string_view cmdline, uint64_t max, std::string_view whose,
                   size_t appended) {
  if (cmdline.find('\0') != std::string_view::npos) {
    throw UserError("--cmdline: contains a NUL byte");
  }
  max = std::min<uint64_t>(max, kCmdlineAreaSize - 1);
  if (cmdline.size() > max) {
    const std::string added = appended == 0
                                  ? std::string{}
                                  : fmt::format(
                                        " ({} of them the virtio_mmio.device= parameters vmm adds "
                                        "with acpi=off, one per virtio-mmio device)",
                                        appended);
    throw UserError(fmt::format("--cmdline: {} bytes{} is longer than the {} bytes {}",
                                cmdline.size(), added, max, whose));
  }
}

// The highest page-aligned spot below both initrd_addr_max and the end of low RAM, above the
// kernel: the kernel's own decompression must not overwrite it.
GuestRange place_initrd(uint64_t size, std::string_view path, uint64_t initrd_addr_max,
                        uint64_t kernel_end, uint64_t low_end, uint64_t memory_size) {
  const uint64_t limit = std::min(initrd_addr_max + 1, low_end);
  if (size > limit || align_down(limit - size, kPageSize) < kernel_end) {
    // More memory helps only if the initrd fits with the most low RAM there can be (up to the
    // MMIO hole) below initrd_addr_max.
    const uint64_t ceiling = std::min(initrd_addr_max + 1, kMmioHoleStart);
    const bool more_memory_helps =
        size <= ceiling && align_down(ceiling - size, kPageSize) >= kernel_end;
    std::string advice = "give the guest more memory (--memory)";
    if (!more_memory_helps && initrd_addr_max + 1 < kMmioHoleStart) {
      advice = fmt::format(
          "this kernel takes an initrd only below {:#x} (its initrd_addr_max), "
          "whatever --memory is: use a smaller initrd",
          initrd_addr_max + 1);
    } else if (!more_memory_helps) {
      advice = fmt::format(
          "the initrd must lie in low RAM, which ends at {:#x} at most whatever "
          "--memory is: use a smaller initrd",
          kMmioHoleStart);
    }
    throw UserError(fmt::format(
        "{}: initrd of {} bytes ({} MiB) does not fit between the kernel "
        "(ends at {:#x}) and {:#x} in {} MiB of guest memory; {}",
        path, size, mib_rounded_up(size), kernel_end, limit, memory_size / MiB, advice));
  }
  return {align_down(limit - size, kPageSize), size};
}

// The zero page's common part: where the command line, initrd and memory are. `hdr` already
// holds the kernel's setup header (or, for a vmlinux, the fields a header would have).
boot_params make_zero_page(const setup_header& hdr, const LinuxBootInfo& info) {
  boot_params params{};
  params.hdr = hdr;
  params.hdr.type_of_loader = kLoaderTypeUndefined;
  params.hdr.cmd_line_ptr = static_cast<uint32_t>(info.cmdline.gpa);
  // Both lie in low RAM, below 3 GiB: the ext_* high halves stay zero.
  params.hdr.ramdisk_image = static_cast<uint32_t>(info.initrd.gpa);
  params.hdr.ramdisk_size = static_cast<uint32_t>(info.initrd.size);
  if (info.e820.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    throw std::logic_error("x86 boot: too many e820 entries for the zero page");
  }
  params.e820_entries = static_cast<uint8_t>(info.e820.size());
  std::copy(info.e820.begin(), info.e820.end(), params.e820_table);
  return params;
}

setup_header bzimage_header(const BzImage& kernel) {
  setup_header hdr{};
  const auto bytes = kernel.setup_header_bytes();
  std::memcpy(&hdr, bytes.data(), std::min(bytes.size(), sizeof(hdr)));
  hdr.loadflags = static_cast<uint8_t>(hdr.loadflags | CAN_USE_HEAP);
  hdr.heap_end_ptr = kHeapEnd - 0x200;
  hdr.vid_mode = kVidModeNormal;
  return hdr;
}

// What the kernel reads of a header when it was not booted from a bzImage: a protocol 2.12
// header with the loader's fields only.
setup_header vmlinux_header() {
  setup_header hdr{};
  hdr.boot_flag = kBootFlag;
  hdr.header = kHdrSMagic;
  hdr.version = kMinBootProtocol;
  hdr.loadflags = LOADED_HIGH;
  hdr.vid_mode = kVidModeNormal;
  hdr.cmdline_size = kVmlinuxCmdlineMax;
  hdr.initrd_addr_max = kVmlinuxInitrdAddrMax;
  return hdr;
}

// The vmlinux's segments, all in low RAM above the first MiB.
void check_segments(const Vmlinux& kernel, uint64_t low_end) {
  if (kernel.start() < kKernelLoadAddr) {
    throw UserError(
        fmt::format("{}: kernel wants to load at {:#x}, below 1 MiB where the boot "
                    "structures live",
                    kernel.path(), kernel.start()));
  }
  if (kernel.end() > low_end) {
    throw UserError(
        fmt::format("{}: kernel needs RAM up to {} MiB ({:#x}), but the guest's low RAM ends at "
                    "{} MiB; give the guest more memory (--memory)",
                    kernel.path(), mib_rounded_up(kernel.end()), kernel.end(), low_end / MiB));
  }
}

void write_common(const GuestMemory& memory, const LinuxBootInfo& info,
                  std::span<const uint8_t> initrd, std::string_view cmdline,
                  const setup_header& hdr) {
  write_guest(memory, info.cmdline.gpa, cmdline.data(), cmdline.size(), "command line");
  const uint8_t nul = 0;
  write_guest(memory, info.cmdline.gpa + cmdline.size(), &nul, 1, "command line");
  if (!initrd.empty()) write_guest(memory, info.initrd.gpa, initrd, "initrd");
  const boot_params params = make_zero_page(hdr, info);
  write_guest(memory, info.zero_page, &params, sizeof(params), "zero page");
}

}  // namespace

std::vector<boot_e820_entry> e820_map(const std::vector<RamRange>& ram) {
  std::vector<boot_e820_entry> map;
  for (const auto& r : ram) {
    if (r.gpa != 0) {
      map.push_back({r.gpa, r.size, kE820Ram});
      continue;
    }
    if (r.size < kKernelLoadAddr) {
      throw std::logic_error("x86 boot: low RAM is smaller than 1 MiB");
    }
    map.push_back({0, kMpTableAddr, kE820Ram});
    map.push_back({kMpTableAddr, kKernelLoadAddr - kMpTableAddr, kE820Reserved});
    if (r.size > kKernelLoadAddr) {
      map.push_back({kKernelLoadAddr, r.size - kKernelLoadAddr, kE820Ram});
    }
  }
  return map;
}

LinuxBootInfo load_linux(const GuestMemory& memory, const BzImage& kernel,
                         std::span<const uint8_t> initrd, std::string_view initrd_path,
                         std::string_view cmdline, const std::vector<RamRange>& ram,
                         size_t appended) {
  const uint64_t low_end = low_ram(ram).end();
  check_cmdline(cmdline, kernel.cmdline_size(), "this kernel accepts (its cmdline_size)", appended);

  LinuxBootInfo info;
  info.entry = kKernelLoadAddr + kKernel64EntryOffset;
  info.zero_page = kZeroPageAddr;
  info.kernel = {kKernelLoadAddr, kernel.protected_mode_kernel().size()};
  info.kernel_run = kernel_run_range(kernel, low_end);
  info.cmdline = {kCmdlineAddr, cmdline.size() + 1};
  if (!initrd.empty()) {
    const uint64_t kernel_end = std::max(info.kernel.end(), info.kernel_run.end());
    info.initrd = place_initrd(initrd.size(), initrd_path, kernel.initrd_addr_max(), kernel_end,
                               low_end, total_size(ram));
  }
  info.e820 = e820_map(ram);

  write_guest(memory, info.kernel.gpa, kernel.protected_mode_kernel(), "kernel");
  write_common(memory, info, initrd, cmdline, bzimage_header(kernel));
  return info;
}

LinuxBootInfo load_linux(const GuestMemory& memory, const Vmlinux& kernel,
                         std::span<const uint8_t> initrd, std::string_view initrd_path,
                         std::string_view cmdline, const std::vector<RamRange>& ram,
                         size_t appended) {
  const uint64_t low_end = low_ram(ram).end();
  check_cmdline(cmdline, kVmlinuxCmdlineMax, "x86_64 Linux accepts (COMMAND_LINE_SIZE)", appended);
  check_segments(kernel, low_end);

  LinuxBootInfo info;
  info.entry = kernel.entry();
  info.zero_page = kZeroPageAddr;
  info.kernel = {kernel.start(), kernel.end() - kernel.start()};
  info.kernel_run = info.kernel;  // it runs where it is loaded
  info.cmdline = {kCmdlineAddr, cmdline.size() + 1};
  if (!initrd.empty()) {
    info.initrd = place_initrd(initrd.size(), initrd_path, kVmlinuxInitrdAddrMax, info.kernel.end(),
                               low_end, total_size(ram));
  }
  info.e820 = e820_map(ram);

  for (const Vmlinux::Segment& segment : kernel.segments()) {
    write_guest(memory, segment.paddr, segment.bytes, "kernel");
    // .bss and the like: RAM may hold an earlier boot's bytes.
    const uint64_t zeroed = segment.mem_size - segment.bytes.size();
    if (zeroed != 0 && !memory.fill(segment.paddr + segment.bytes.size(), 0, zeroed)) {
      throw std::runtime_error("x86 boot: cannot clear the kernel's .bss: not writable guest RAM");
    }
  }
  write_common(memory, info, initrd, cmdline, vmlinux_header());
  return info;
}

}  // namespace libvmm::x86
