// The riscv64 board as every host sees it: its memory map, interrupt numbering and options,
// and `vmm check --arch riscv64` of a description.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../../src/arch/board.hpp"
#include "libvmm/arch/machine_option.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"

using namespace libvmm;
using ::testing::HasSubstr;

namespace riscv64_board_test {

const Board& board() {
  const Board* b = find_board("riscv64");
  EXPECT_NE(b, nullptr);
  return *b;
}

// RAM ends below the PCI 64-bit BAR window, on both device-tree boards: more is refused by
// --memory, not placed under the BARs.
TEST(Riscv64Board, RamEndsBelowThePci64BitWindowOnEveryDeviceTreeBoard) {
  for (const char* name : {"riscv64", "aarch64"}) {
    const Board& b = *find_board(name);
    const uint64_t window = b.pci_layout()->mmio64.base;
    const uint64_t most = window - b.ram_base();
    EXPECT_EQ(b.ram_layout(most).back().gpa + b.ram_layout(most).back().size, window) << name;
    try {
      b.ram_layout(most + MiB);
      ADD_FAILURE() << name << ": more RAM than fits below the window was accepted";
    } catch (const UserError& e) {
      EXPECT_THAT(e.what(), HasSubstr("--memory: ")) << name;
      EXPECT_THAT(e.what(), HasSubstr("PCI 64-bit BAR window")) << name;
    }
  }
}

TEST(Riscv64Board, QemuVirtLikeMemoryMap) {
  const MemoryMap map = board().memory_map(512 * MiB);
  ASSERT_EQ(map.ram.size(), 1u);
  EXPECT_EQ(map.ram[0].gpa, 0x8000'0000u);
  EXPECT_EQ(map.ram[0].size, 512 * MiB);
  EXPECT_EQ(map.virtio_mmio_base, 0x1000'1000u);
  EXPECT_EQ(map.virtio_mmio_slots, 32u);
  EXPECT_EQ(map.device_irqs.front(), 32u);
  EXPECT_EQ(map.device_irqs.back(), 63u);
  // Every window is in the device space and below RAM, and none overlaps another.
  for (size_t i = 0; i < map.device_windows.size(); ++i) {
    const DeviceWindow& w = map.device_windows[i];
    EXPECT_LE(w.gpa + w.size, board().device_space().size) << w.name;
    for (size_t j = i + 1; j < map.device_windows.size(); ++j) {
      const DeviceWindow& o = map.device_windows[j];
      EXPECT_TRUE(w.gpa + w.size <= o.gpa || o.gpa + o.size <= w.gpa) << w.name << " " << o.name;
    }
  }
  EXPECT_EQ(std::string(board().name()), "riscv64");
}

// QEMU virt's PCIe windows: the ECAM above the device space, 32-bit BARs between it and RAM,
// 64-bit BARs above the most RAM a guest is given here; no port I/O.
TEST(Riscv64Board, PciHostBridgeInQemuVirtsPcieWindows) {
  const MemoryMap map = board().memory_map(64 * GiB);
  ASSERT_TRUE(map.pci);
  EXPECT_EQ(map.pci->ecam.base, 0x3000'0000u);
  EXPECT_EQ(map.pci->mmio32.base, 0x4000'0000u);
  EXPECT_GE(map.pci->ecam.base, board().device_space().size);
  EXPECT_LE(map.pci->ecam.base + map.pci->ecam.size, map.pci->mmio32.base);
  EXPECT_LE(map.pci->mmio32.base + map.pci->mmio32.size, map.ram[0].gpa);
  EXPECT_GE(map.pci->mmio64.base, map.ram[0].gpa + map.ram[0].size);
  EXPECT_LE(map.pci->mmio64.base + map.pci->mmio64.size, 1ull << 41);  // Sv39x4's G-stage
  EXPECT_EQ(map.pci->io.size, 0u);
}

TEST(Riscv64Board, InterruptNumbersAreSources) {
  EXPECT_EQ(board().irq_problem(40), "");
  EXPECT_THAT(board().irq_problem(0), HasSubstr("number sources from 1"));
  EXPECT_THAT(board().irq_problem(10), HasSubstr("belongs to the machine's own devices"));
  EXPECT_THAT(board().irq_problem(64), HasSubstr("outside the interrupt controller's range 0-63"));
  const auto uart = board().device_at(0x1000'0000);
  ASSERT_TRUE(uart);
  EXPECT_EQ(uart->kind, BoardDevice::Kind::serial);
  EXPECT_EQ(uart->irq, 10u);
}

TEST(Riscv64Board, IrqchipOptionIsRiscvOnly) {
  const Architecture* riscv = find_architecture("riscv64");
  ASSERT_NE(riscv, nullptr);
  const MachineOption* irqchip = find_machine_option(*riscv, "irqchip");
  ASSERT_NE(irqchip, nullptr);
  EXPECT_TRUE(
      check_machine_options(*riscv, {machine_option_from_flag(*irqchip, "plic")}, HostFiles::real())
          .empty());
  EXPECT_EQ(check_machine_options(*riscv, {machine_option_from_flag(*irqchip, "apic")},
                                  HostFiles::real()),
            std::vector<std::string>{"--irqchip apic: kind=\"apic\": expected aia or plic"});
  EXPECT_EQ(irqchip->describe(machine_option_from_flag(*irqchip, "plic")),
            "plic (emulated by vmm)");
  const Architecture* x86 = find_architecture("x86_64");
  ASSERT_NE(x86, nullptr);
  EXPECT_EQ(
      check_machine_options(*x86, {machine_option_from_flag(*irqchip, "aia")}, HostFiles::real()),
      std::vector<std::string>{"--irqchip aia: only RISC-V machines choose between an AIA "
                               "and a PLIC; this vmm runs x86_64 guests"});
}

}  // namespace riscv64_board_test
