// A PCI host bridge in a device tree (compatible "pci-host-ecam-generic", the binding of
// Linux's pci-host-generic driver): what a device-tree machine (AArch64, RISC-V) adds when the
// VM has PCI devices. Its windows map PCI addresses 1:1 onto the CPU's; INTx pins route through
// an interrupt-map to the machine's interrupt controller, MSIs to the controller named by
// `msi_parent`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "libvmm/core/fdt.hpp"
#include "libvmm/pci/host_bridge.hpp"

namespace libvmm {

struct PciEcamFdt final : FdtNodeSource {
  void describe_fdt(FdtWriter& fdt) const override;

  struct Intx {
    uint8_t device = 0;  // on bus 0
    uint8_t pin = 0;     // 0 = INTA
    uint32_t irq = 0;    // the controller's number (GIC: SPI INTID), level-triggered
  };
  pci::HostBridgeLayout layout{};
  std::vector<Intx> intx{};
  std::string msi_parent{};  // the MSI controller's phandle label ("its"); empty: no MSIs
  // msi-map, requester ID n = device ID n (the GICv3 ITS translates per device); false: a plain
  // msi-parent (RISC-V's IMSIC, whose MSIs carry no device ID).
  bool msi_device_ids = true;
};

}  // namespace libvmm
