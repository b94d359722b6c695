// Loads a bzImage or a vmlinux, its command line and an initrd into guest memory and writes the
// zero page (struct boot_params) for the 64-bit boot protocol.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/bzimage.hpp"
#include "libvmm/arch/x86_64/vmlinux.hpp"
#include "libvmm/core/guest_memory.hpp"

namespace libvmm::x86 {

// Where everything went, for the vCPU setup (entry, zero_page) and for logs.
struct LinuxBootInfo {
  uint64_t entry = 0;      // RIP: the 64-bit entry point
  uint64_t zero_page = 0;  // RSI: struct boot_params
  GuestRange kernel;       // the protected-mode kernel (or vmlinux segments) as copied
  GuestRange kernel_run;   // where it decompresses and runs: init_size bytes
  GuestRange cmdline;      // including the terminating NUL
  GuestRange initrd;       // size 0 without an initrd
  std::vector<boot_e820_entry> e820;
};

// The boot protocol's memory map for `ram` (from x86_ram_layout): the range at 0 is split
// into usable base memory, the reserved EBDA + BIOS area [0x9FC00, 1 MiB), and usable RAM from
// 1 MiB; any other range is usable as is.
std::vector<boot_e820_entry> e820_map(const std::vector<RamRange>& ram);

// Copies the kernel to kKernelLoadAddr, the command line to kCmdlineAddr and the initrd (may be
// empty) to the top of low RAM, and writes the zero page at kZeroPageAddr. `memory` must map
// `ram`. Throws UserError naming the file or flag when something does not fit. `appended`:
// how many of the command line's last bytes vmm added to the user's (said when it is too long).
LinuxBootInfo load_linux(const GuestMemory& memory, const BzImage& kernel,
                         std::span<const uint8_t> initrd, std::string_view initrd_path,
                         std::string_view cmdline, const std::vector<RamRange>& ram,
                         size_t appended = 0);

// The same for a vmlinux: its segments go to their physical addresses (at or above 1 MiB, in
// low RAM), the initrd to the top of low RAM below 2 GiB, and the zero page gets a protocol
// 2.12 setup header written by the loader. The entry is the ELF's.
LinuxBootInfo load_linux(const GuestMemory& memory, const Vmlinux& kernel,
                         std::span<const uint8_t> initrd, std::string_view initrd_path,
                         std::string_view cmdline, const std::vector<RamRange>& ram,
                         size_t appended = 0);

}  // namespace libvmm::x86
