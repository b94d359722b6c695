// What a vCPU needs to start a Linux kernel at its 64-bit entry point: a GDT with the boot
// protocol's flat segments, identity-mapped page tables for [0, 4 GiB), and the register values.
// Pure code over guest memory and KVM's register structures; the caller does the ioctls.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "libvmm/core/guest_memory.hpp"

namespace libvmm::x86 {

// The selectors the 64-bit boot protocol requires (__BOOT_CS, __BOOT_DS); entries 0 and 1 of
// the GDT are null.
constexpr uint16_t kBootCodeSelector = 0x10;
constexpr uint16_t kBootDataSelector = 0x18;
constexpr size_t kBootGdtEntries = 4;

// Control-register and EFER bits used for long mode.
constexpr uint64_t kCr0Pe = 1ull << 0;   // protected mode
constexpr uint64_t kCr0Mp = 1ull << 1;   // monitor coprocessor
constexpr uint64_t kCr0Et = 1ull << 4;   // extension type (always 1 on modern CPUs)
constexpr uint64_t kCr0Ne = 1ull << 5;   // native x87 error reporting
constexpr uint64_t kCr0Pg = 1ull << 31;  // paging
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8;   // long mode enable
constexpr uint64_t kEferLma = 1ull << 10;  // long mode active

// Page-table entry bits.
constexpr uint64_t kPtePresent = 1ull << 0;
constexpr uint64_t kPteWritable = 1ull << 1;
constexpr uint64_t kPteLargePage = 1ull << 7;  // in a page directory: a 2 MiB page

// The flat 4 GiB segments: 64-bit code (execute/read) and data (read/write).
kvm_segment boot_code_segment();
kvm_segment boot_data_segment();

// Encodes a segment as the 8-byte descriptor the GDT holds for it.
uint64_t gdt_descriptor(const kvm_segment& segment);

// null, null, code (0x10), data (0x18).
std::array<uint64_t, kBootGdtEntries> boot_gdt();

// Writes boot_gdt() at kGdtAddr and the identity-mapping page tables at kPml4Addr, kPdptAddr
// and kPageDirAddr. Throws if those addresses are not guest RAM.
void write_long_mode_tables(const GuestMemory& memory);

// `sregs` (as read with KVM_GET_SREGS) changed to run 64-bit code on those tables: CR0/CR3/CR4,
// EFER, GDT, no IDT, and the segment registers. TR and LDT keep their reset values, which
// already satisfy VMX's checks for long mode (busy TSS, LDT type).
kvm_sregs long_mode_sregs(kvm_sregs sregs);

// Registers at the 64-bit entry: RIP = entry, RSI = zero page, interrupts off.
kvm_regs long_mode_regs(uint64_t entry, uint64_t zero_page);

}  // namespace libvmm::x86
