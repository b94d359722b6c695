// The x86_64 PC-like board as a description: pure code, built for every host.
#include "../board.hpp"

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/mptable.hpp"

namespace libvmm {
namespace {

class X86Board final : public Board {
 public:
  const char* name() const override { return "x86_64"; }
  const char* serial_name() const override { return "COM1"; }
  std::vector<RamRange> ram_layout(uint64_t memory_size) const override {
    std::vector<RamRange> out;
    for (const auto& r : x86::x86_ram_layout(memory_size)) out.push_back({r.gpa, r.size});
    return out;
  }
  uint64_t ram_base() const override { return 0; }
  std::vector<DeviceWindow> device_windows() const override {
    const uint64_t virtio_slots = device_irqs().size();
    return {{"the virtio-mmio device window", x86::kVirtioMmioBase, virtio_slots * kVirtioMmioSlot},
            {"the IOAPIC", x86::kIoapicAddr, 0x1000},
            {"the local APIC", x86::kLapicAddr, 0x1000},
            {"KVM's TSS and identity map", x86::kIdentityMapAddr, 0x4000}};
  }
  uint32_t irq_count() const override { return x86::kMpIoapicPins; }
  // IOAPIC pins no PC device claims: not the timer (0, 2), keyboard (1), COM2/COM1 (3, 4),
  // RTC (8) or ACPI SCI (9).
  std::vector<uint32_t> device_irqs() const override {
    return {5, 6, 7, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
  }
  uint64_t virtio_mmio_base() const override { return x86::kVirtioMmioBase; }
  uint32_t max_vcpus() const override { return x86::kMaxMpCpus; }
  // The chipset's devices: IOAPIC, HPET, local APIC, firmware.
  DeviceWindow device_space() const override {
    return {"the PC chipset's devices (IOAPIC, HPET, local APIC, firmware)", x86::kIoapicAddr,
            x86::kHighRamStart - x86::kIoapicAddr};
  }
  bool has_ioports() const override { return true; }
  std::optional<pci::HostBridgeLayout> pci_layout() const override {
    return pci::HostBridgeLayout{{x86::kPciEcamBase, x86::kPciEcamSize},
                                 {x86::kPciMmioBase, x86::kPciMmioSize},
                                 {x86::kPciMmio64Base, x86::kPciMmio64Size},
                                 {x86::kPciIoBase, x86::kPciIoSize}};
  }
  // PC guests have virtio_pci (Debian's kernels, our own), and the local APICs take MSIs
  // always: a virtio-pci function's MSI-X vectors skip the IOAPIC line's acknowledgement that
  // costs a virtio-mmio interrupt three exits (docs/PERFORMANCE.md, "virtio-pci or
  // virtio-mmio").
  bool prefers_virtio_pci() const override { return true; }
};

}  // namespace

const Board& x86_64_board() {
  static const X86Board board;
  return board;
}

}  // namespace libvmm
