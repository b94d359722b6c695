#include "libvmm/arch/x86_64/long_mode.hpp"

#include <vector>

#include "guest_write.hpp"
#include "libvmm/arch/x86_64/boot_layout.hpp"

namespace libvmm::x86 {
namespace {

constexpr uint8_t kTypeCodeExecReadAccessed = 0xB;
constexpr uint8_t kTypeDataReadWriteAccessed = 0x3;
constexpr uint64_t kEntriesPerTable = 512;
constexpr uint64_t kTableSize = kEntriesPerTable * sizeof(uint64_t);
constexpr uint64_t kRflagsReserved = 1ull << 1;  // bit 1 always reads as 1

kvm_segment flat_segment(uint16_t selector, uint8_t type) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xFFFFFFFF;  // with g = 1: 4 GiB
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = 0;
  s.s = 1;  // code/data, not a system segment
  s.g = 1;
  return s;
}

}  // namespace

kvm_segment boot_code_segment() {
  kvm_segment s = flat_segment(kBootCodeSelector, kTypeCodeExecReadAccessed);
  s.l = 1;  // 64-bit code; db must then be 0
  return s;
}

kvm_segment boot_data_segment() {
  kvm_segment s = flat_segment(kBootDataSelector, kTypeDataReadWriteAccessed);
  s.db = 1;
  return s;
}

uint64_t gdt_descriptor(const kvm_segment& s) {
  const uint64_t limit = s.g ? (s.limit >> 12) : s.limit;  // 20 bits, in pages when g = 1
  const uint64_t access = (uint64_t{s.present} << 7) | (uint64_t{s.dpl & 3u} << 5) |
                          (uint64_t{s.s} << 4) | (s.type & 0xFu);
  const uint64_t flags =
      (uint64_t{s.g} << 3) | (uint64_t{s.db} << 2) | (uint64_t{s.l} << 1) | uint64_t{s.avl};
  return (limit & 0xFFFF) | ((s.base & 0xFFFFFF) << 16) | (access << 40) |
         (((limit >> 16) & 0xF) << 48) | (flags << 52) | (((s.base >> 24) & 0xFF) << 56);
}

std::array<uint64_t, kBootGdtEntries> boot_gdt() {
  return {0, 0, gdt_descriptor(boot_code_segment()), gdt_descriptor(boot_data_segment())};
}

void write_long_mode_tables(const GuestMemory& memory) {
  const auto gdt = boot_gdt();
  write_guest(memory, kGdtAddr, gdt.data(), sizeof(gdt), "GDT");

  std::vector<uint64_t> pml4(kEntriesPerTable, 0);
  pml4[0] = kPdptAddr | kPtePresent | kPteWritable;
  write_guest(memory, kPml4Addr, pml4.data(), kTableSize, "PML4");

  std::vector<uint64_t> pdpt(kEntriesPerTable, 0);
  for (uint64_t i = 0; i < kPageDirCount; ++i) {
    pdpt[i] = (kPageDirAddr + i * kTableSize) | kPtePresent | kPteWritable;
  }
  write_guest(memory, kPdptAddr, pdpt.data(), kTableSize, "PDPT");

  // The page directories are consecutive, so entry i of them all maps 2 MiB page i.
  std::vector<uint64_t> dirs(kPageDirCount * kEntriesPerTable);
  for (uint64_t i = 0; i < dirs.size(); ++i) {
    dirs[i] = (i * 2 * MiB) | kPtePresent | kPteWritable | kPteLargePage;
  }
  write_guest(memory, kPageDirAddr, dirs.data(), dirs.size() * sizeof(uint64_t),
              "page directories");
}

kvm_sregs long_mode_sregs(kvm_sregs sregs) {
  sregs.gdt.base = kGdtAddr;
  sregs.gdt.limit = static_cast<uint16_t>(kBootGdtEntries * sizeof(uint64_t) - 1);
  // No IDT until the kernel loads one: an early exception then triple-faults (a shutdown exit
  // the VMM reports) instead of jumping through whatever is in memory.
  sregs.idt.base = 0;
  sregs.idt.limit = 0;
  sregs.cs = boot_code_segment();
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = boot_data_segment();
  // Replaces the reset value, whose CD/NW bits would turn off caching.
  sregs.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Pg;
  sregs.cr3 = kPml4Addr;
  sregs.cr4 = kCr4Pae;
  sregs.efer |= kEferLme | kEferLma;
  return sregs;
}

kvm_regs long_mode_regs(uint64_t entry, uint64_t zero_page) {
  kvm_regs regs{};
  regs.rip = entry;
  regs.rsi = zero_page;
  regs.rflags = kRflagsReserved;
  return regs;
}

}  // namespace libvmm::x86
