// Where the x86_64 boot code puts things in guest-physical memory, and the guest-physical map.
//
// Low memory (all inside the first MiB except the kernel and initrd):
//
//   Address                  Contents
//   0x0000_0500              GDT: null, null, code64 (selector 0x10), data (selector 0x18)
//   0x0000_7000              zero page (struct boot_params)
//   0x0000_9000              PML4
//   0x0000_A000              PDPT
//   0x0000_B000..0x0000_EFFF four page directories: identity map of [0, 4 GiB), 2 MiB pages
//   0x0002_0000              kernel command line (NUL-terminated)
//   0x0009_FC00..0x0009_FFFF EBDA (last KiB of base memory): MP table
//   0x000A_0000..0x000F_FFFF legacy VGA/BIOS area; reserved in the e820 map like the EBDA
//   0x0010_0000              protected-mode kernel; 64-bit entry point at +0x200
//   top of low RAM           initrd
//
// Guest-physical map for `size` bytes of RAM:
//
//   [0, min(size, 3 GiB))          RAM ("low RAM")
//   [3 GiB, 4 GiB)                 MMIO hole: virtio-mmio devices from 0xD000_0000 (4 KiB each),
//                                  IOAPIC at 0xFEC0_0000, local APIC at 0xFEE0_0000
//   [4 GiB, 4 GiB + size - 3 GiB)  the rest of the RAM, when size > 3 GiB
#pragma once

#include <cstdint>
#include <vector>

#include "libvmm/core/guest_memory.hpp"

namespace libvmm::x86 {

constexpr uint64_t kGdtAddr = 0x500;
constexpr uint64_t kZeroPageAddr = 0x7000;
constexpr uint64_t kPml4Addr = 0x9000;
constexpr uint64_t kPdptAddr = 0xA000;
constexpr uint64_t kPageDirAddr = 0xB000;  // first of kPageDirCount consecutive pages
constexpr uint64_t kPageDirCount = 4;      // one per GiB
constexpr uint64_t kCmdlineAddr = 0x20000;
constexpr uint64_t kCmdlineAreaSize = 0x10000;  // hard cap on top of the kernel's cmdline_size
constexpr uint64_t kMpTableAddr = 0x9FC00;
constexpr uint64_t kMpTableAreaSize = 0x400;  // the EBDA KiB Linux scans
constexpr uint64_t kKernelLoadAddr = 0x100000;
constexpr uint64_t kKernel64EntryOffset = 0x200;  // startup_64, per the 64-bit boot protocol

constexpr uint64_t kMmioHoleStart = 3 * GiB;
constexpr uint64_t kHighRamStart = 4 * GiB;
constexpr uint64_t kPciMmioBase = 0xC0000000;  // the PCI host bridge's 32-bit BAR window
constexpr uint64_t kPciMmioSize = 0x10000000;
// The 64-bit BAR window: [256 GiB, 512 GiB), above any RAM the guest can have (RAM ends below
// it) and within 39 physical address bits, the fewest an x86_64 host with KVM has in practice.
constexpr uint64_t kPciMmio64Base = 256 * GiB;
constexpr uint64_t kPciMmio64Size = 256 * GiB;
constexpr uint64_t kVirtioMmioBase = 0xD0000000;
constexpr uint64_t kPciEcamBase = 0xE0000000;  // ECAM for bus 0
constexpr uint64_t kPciEcamSize = 0x100000;
constexpr uint64_t kPciIoBase = 0xC000;  // the PCI host bridge's I/O BAR window
constexpr uint64_t kPciIoSize = 0x4000;
constexpr uint64_t kVirtioMmioSize = 0x1000;  // per device
constexpr uint64_t kIoapicAddr = 0xFEC00000;
constexpr uint64_t kLapicAddr = 0xFEE00000;
constexpr uint64_t kTssAddr = 0xFFFBD000;          // 3 pages KVM needs on Intel, below the BIOS
constexpr uint64_t kIdentityMapAddr = 0xFFFBC000;  // 1 page, just below

// e820 entry types (the boot protocol's memory map).
constexpr uint32_t kE820Ram = 1;
constexpr uint32_t kE820Reserved = 2;

// A range of guest-physical addresses.
struct GuestRange {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t end() const { return gpa + size; }
  bool operator==(const GuestRange&) const = default;
};
using RamRange = GuestRange;

// Where `memory_size` bytes of guest RAM go: [0, min(size, 3 GiB)), then the rest from 4 GiB.
// Throws UserError naming --memory when it is smaller than the fixed boot structures need
// (1 MiB) or not a whole number of 4 KiB pages.
std::vector<RamRange> x86_ram_layout(uint64_t memory_size);

}  // namespace libvmm::x86
