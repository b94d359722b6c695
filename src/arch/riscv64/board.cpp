// The RISC-V board (QEMU virt's layout) as a description: pure code, built for every host.
#include "board.hpp"

#include <fmt/format.h>

#include "../board.hpp"

namespace libvmm {
namespace riscv64 {
namespace {

class Riscv64Board final : public Board {
 public:
  const char* name() const override { return "riscv64"; }
  const char* serial_name() const override { return "16550A (ttyS0)"; }
  std::vector<RamRange> ram_layout(uint64_t memory_size) const override {
    return ram_below_pci64(kRamBase, kPciMmio64Base, memory_size, "a RISC-V");
  }
  uint64_t ram_base() const override { return kRamBase; }
  std::vector<DeviceWindow> device_windows() const override {
    return {{"the interrupt controller (PLIC or APLIC)", kIrqchipBase, kIrqchipWindow},
            {"the 16550A UART", kUartBase, 0x1000},
            {"the virtio-mmio device window", kVirtioBase, kDeviceIrqCount * kVirtioMmioSlot},
            {"the IMSIC interrupt files", kImsicBase, kMaxVcpus * kImsicPageSize}};
  }
  uint32_t irq_count() const override { return kIrqSources; }
  std::vector<uint32_t> device_irqs() const override {
    std::vector<uint32_t> out;
    for (uint32_t i = 0; i < kDeviceIrqCount; ++i) out.push_back(kFirstDeviceIrq + i);
    return out;
  }
  uint64_t virtio_mmio_base() const override { return kVirtioBase; }
  std::optional<pci::HostBridgeLayout> pci_layout() const override {
    return pci::HostBridgeLayout{{kPciEcamBase, kPciEcamSize},
                                 {kPciMmioBase, kPciMmioSize},
                                 {kPciMmio64Base, kPciMmio64Size},
                                 {}};
  }
  uint32_t max_vcpus() const override { return kMaxVcpus; }
  std::string irq_problem(uint32_t number) const override {
    if (number == 0) {
      return "IRQ 0 is not an interrupt source: the PLIC and the APLIC number sources from 1";
    }
    return Board::irq_problem(number);
  }
  std::vector<BoardDevice> devices() const override {
    return {{BoardDevice::Kind::serial, "the 16550A UART", kUartBase, kUartBase, 0x1000, kUartIrq,
             "the emulated 16550A (ttyS0)"}};
  }
  // QEMU virt's device registers (test device, RTC, PLIC/APLIC, UART, virtio-mmio, flash,
  // IMSIC) are below 0x3000_0000; above are its PCIe windows: the PCI host bridge's in a VM
  // with PCI devices, else usable for shared memory.
  DeviceWindow device_space() const override {
    return {"QEMU virt's device space", 0, 0x3000'0000};
  }
};

}  // namespace
}  // namespace riscv64

const Board& riscv64_board() {
  static const riscv64::Riscv64Board board;
  return board;
}

}  // namespace libvmm
