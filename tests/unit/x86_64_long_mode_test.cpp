// GDT, identity page tables and vCPU registers for the 64-bit entry.
#include <gtest/gtest.h>

#include <optional>

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/long_mode.hpp"

using namespace libvmm;
using namespace libvmm::x86;

namespace x86_64_long_mode_test {

struct LongModeTest : ::testing::Test {
  LongModeTest() {
    memory.map(0, MemoryRegion::create("ram", 2 * MiB), 0, 2 * MiB);
    write_long_mode_tables(memory);
  }

  // Walks the tables like the MMU does for a 2 MiB page; nullopt if not present.
  std::optional<uint64_t> translate(uint64_t va) const {
    const uint64_t pml4e = memory.read_obj<uint64_t>(kPml4Addr + ((va >> 39) & 511) * 8).value();
    if (!(pml4e & kPtePresent)) return std::nullopt;
    const uint64_t pdpt = pml4e & ~uint64_t{0xfff};
    const uint64_t pdpte = memory.read_obj<uint64_t>(pdpt + ((va >> 30) & 511) * 8).value();
    if (!(pdpte & kPtePresent)) return std::nullopt;
    const uint64_t pd = pdpte & ~uint64_t{0xfff};
    const uint64_t pde = memory.read_obj<uint64_t>(pd + ((va >> 21) & 511) * 8).value();
    if (!(pde & kPtePresent) || !(pde & kPteWritable) || !(pde & kPteLargePage)) {
      return std::nullopt;
    }
    return (pde & ~uint64_t{2 * MiB - 1} & ((uint64_t{1} << 52) - 1)) | (va & (2 * MiB - 1));
  }

  GuestMemory memory;
};

TEST_F(LongModeTest, PageTablesIdentityMapTheFirst4GiB) {
  EXPECT_EQ(memory.read_obj<uint64_t>(kPml4Addr), kPdptAddr | kPtePresent | kPteWritable);
  for (uint64_t va : {uint64_t{0}, uint64_t{0x7000}, uint64_t{0x100200}, 16 * MiB + 12345,
                      1 * GiB - 1, 1 * GiB, 3 * GiB + 5, uint64_t{0xFEE00000}, 4 * GiB - 1}) {
    EXPECT_EQ(translate(va), va) << std::hex << va;
  }
  for (uint64_t i = 0; i < 4 * GiB; i += 2 * MiB) ASSERT_EQ(translate(i), i);
  EXPECT_EQ(translate(4 * GiB), std::nullopt);
  EXPECT_EQ(translate(uint64_t{1} << 39), std::nullopt);
}

TEST_F(LongModeTest, GdtHoldsTheBootSegments) {
  EXPECT_EQ(memory.read_obj<uint64_t>(kGdtAddr), 0u);
  EXPECT_EQ(memory.read_obj<uint64_t>(kGdtAddr + 8), 0u);
  // The well-known encodings of flat 64-bit code and flat data (accessed bits set).
  EXPECT_EQ(memory.read_obj<uint64_t>(kGdtAddr + kBootCodeSelector), 0x00AF9B000000FFFFu);
  EXPECT_EQ(memory.read_obj<uint64_t>(kGdtAddr + kBootDataSelector), 0x00CF93000000FFFFu);
}

TEST(GdtDescriptor, DecodesBackToTheSegment) {
  const kvm_segment cs = boot_code_segment();
  const uint64_t d = gdt_descriptor(cs);
  EXPECT_EQ((d >> 40) & 0xF, cs.type);
  EXPECT_EQ((d >> 44) & 1, 1u);                               // S: code/data
  EXPECT_EQ((d >> 45) & 3, 0u);                               // DPL 0
  EXPECT_EQ((d >> 47) & 1, 1u);                               // present
  EXPECT_EQ((d >> 53) & 1, 1u);                               // L: 64-bit
  EXPECT_EQ((d >> 54) & 1, 0u);                               // D must be 0 with L
  EXPECT_EQ((d >> 55) & 1, 1u);                               // G: 4 KiB granularity
  EXPECT_EQ((d & 0xFFFF) | ((d >> 32) & 0xF0000), 0xFFFFFu);  // limit

  kvm_segment odd{};
  odd.base = 0x12345678;
  odd.limit = 0xABCDE;
  odd.type = 2;
  odd.present = 1;
  odd.dpl = 3;
  odd.s = 1;
  const uint64_t e = gdt_descriptor(odd);
  EXPECT_EQ(((e >> 16) & 0xFFFFFF) | ((e >> 56) << 24), 0x12345678u);
  EXPECT_EQ((e & 0xFFFF) | ((e >> 32) & 0xF0000), 0xABCDEu);
  EXPECT_EQ((e >> 45) & 3, 3u);
}

TEST(LongModeSregs, SetsUpLongModeOnTheTables) {
  kvm_sregs reset{};
  reset.cr0 = 0x60000010;  // KVM's reset value: CD | NW | ET
  reset.tr.type = 11;
  reset.tr.present = 1;
  reset.ldt.type = 2;
  reset.apic_base = 0xFEE00900;
  const kvm_sregs s = long_mode_sregs(reset);

  EXPECT_EQ(s.cr0, kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Pg);
  EXPECT_EQ(s.cr3, kPml4Addr);
  EXPECT_EQ(s.cr4, kCr4Pae);
  EXPECT_EQ(s.efer, kEferLme | kEferLma);
  EXPECT_EQ(s.gdt.base, kGdtAddr);
  EXPECT_EQ(s.gdt.limit, 31);
  EXPECT_EQ(s.idt.limit, 0);

  EXPECT_EQ(s.cs.selector, kBootCodeSelector);
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.cs.db, 0);
  EXPECT_EQ(s.cs.present, 1);
  EXPECT_EQ(s.cs.type, 0xB);
  EXPECT_EQ(gdt_descriptor(s.cs), 0x00AF9B000000FFFFu);  // consistent with the GDT
  for (const kvm_segment* seg : {&s.ds, &s.es, &s.fs, &s.gs, &s.ss}) {
    EXPECT_EQ(seg->selector, kBootDataSelector);
    EXPECT_EQ(seg->type, 0x3);
    EXPECT_EQ(seg->db, 1);
    EXPECT_EQ(gdt_descriptor(*seg), 0x00CF93000000FFFFu);
  }
  EXPECT_EQ(s.tr.type, 11);  // untouched
  EXPECT_EQ(s.ldt.type, 2);
  EXPECT_EQ(s.apic_base, 0xFEE00900u);
}

TEST(LongModeRegs, StartAtTheEntryWithTheZeroPage) {
  const kvm_regs r = long_mode_regs(0x100200, 0x7000);
  EXPECT_EQ(r.rip, 0x100200u);
  EXPECT_EQ(r.rsi, 0x7000u);
  EXPECT_EQ(r.rflags, 2u);
  EXPECT_EQ(r.rax | r.rbx | r.rcx | r.rdx | r.rdi | r.rbp | r.rsp, 0u);
}

TEST(LongModeTables, ThrowWhenTheyDoNotFitGuestMemory) {
  GuestMemory memory;
  memory.map(0, MemoryRegion::create("ram", 0xC000), 0, 0xC000);  // ends inside the directories
  EXPECT_THROW(write_long_mode_tables(memory), std::runtime_error);
}

}  // namespace x86_64_long_mode_test
