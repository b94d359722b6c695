// The AArch64 board (QEMU virt's layout) as a description: pure code, built for every host.
#include "board.hpp"

#include <fmt/format.h>

#include "../board.hpp"
#include "libvmm/arch/aarch64/gic.hpp"

namespace libvmm {
namespace aarch64 {
namespace {

class Aarch64Board final : public Board {
 public:
  const char* name() const override { return "aarch64"; }
  const char* serial_name() const override { return "PL011 (ttyAMA0)"; }
  std::vector<RamRange> ram_layout(uint64_t memory_size) const override {
    return ram_below_pci64(kRamBase, kPciMmio64Base, memory_size, "an AArch64");
  }
  uint64_t ram_base() const override { return kRamBase; }
  std::vector<DeviceWindow> device_windows() const override {
    return {
        {"the GIC distributor", kGicDistBase, kGicDistSize},
        {"the GIC CPU interface / ITS / redistributors", kGicCpuBase, kGicRedistEnd - kGicCpuBase},
        {"the PL011 UART", kUartBase, 0x1000},
        {"the PL031 RTC", kRtcBase, 0x1000},
        {"the PL061 GPIO controller", kGpioBase, 0x1000},
        {"the virtio-mmio device window", kVirtioBase, kDeviceIntidCount * kVirtioMmioSlot}};
  }
  uint32_t irq_count() const override { return kFirstDeviceIntid + kDeviceIntidCount; }
  std::vector<uint32_t> device_irqs() const override {
    std::vector<uint32_t> out;
    for (uint32_t i = 0; i < kDeviceIntidCount; ++i) out.push_back(kFirstDeviceIntid + i);
    return out;
  }
  uint64_t virtio_mmio_base() const override { return kVirtioBase; }
  std::optional<pci::HostBridgeLayout> pci_layout() const override {
    return pci::HostBridgeLayout{{kPciEcamBase, kPciEcamSize},
                                 {kPciMmioBase, kPciMmioSize},
                                 {kPciMmio64Base, kPciMmio64Size},
                                 {}};
  }
  uint32_t max_vcpus() const override {
    // The v3 redistributor region ends where the UART's page begins.
    return static_cast<uint32_t>((kGicRedistEnd - kGicRedistBase) / kRedistFrameSize);
  }
  // Descriptions number interrupts as the GIC does (INTIDs): SGIs and PPIs are per-CPU, and
  // device trees number SPIs from 0, which users may write by mistake.
  std::string irq_problem(uint32_t number) const override {
    if (number < kFirstSpiIntid) {
      return fmt::format(
          "IRQ {} is not a shared interrupt (SPI): descriptions use the controller's numbering, "
          "where SPI n is INTID n+{} (a device tree's <0 {} 4> is irq=\"{}\")",
          number, kFirstSpiIntid, number, number + kFirstSpiIntid);
    }
    return Board::irq_problem(number);
  }
  // libvmm's QEMU virt examples map the PL011 where it is, and the GICv2 virtual CPU interface
  // (0x0804_0000 on QEMU virt) where the guest expects the CPU interface.
  std::vector<BoardDevice> devices() const override {
    return {{BoardDevice::Kind::serial, "the PL011 UART", kUartBase, kUartBase, 0x1000, kUartIntid,
             "the emulated PL011 (ttyAMA0)"},
            {BoardDevice::Kind::gic_v2_cpu, "the GICv2 virtual CPU interface", kGicVcpuPhysBase,
             kGicCpuBase, 0x2000, std::nullopt, "KVM's vGICv2 CPU interface"}};
  }
  // QEMU virt's device registers (flash, GIC, UART, RTC, GPIO, virtio-mmio, platform bus) are
  // below 0x1000_0000; above is its PCIe window, usable for shared memory here.
  DeviceWindow device_space() const override {
    return {"QEMU virt's device space", 0, 0x1000'0000};
  }
};

}  // namespace
}  // namespace aarch64

const Board& aarch64_board() {
  static const aarch64::Aarch64Board board;
  return board;
}

}  // namespace libvmm
