#include "libvmm/arch/pci_ecam_fdt.hpp"

#include <fmt/format.h>

namespace libvmm {
namespace {

// The first cell of a PCI address (IEEE 1275 PCI binding): the space code in bits 25:24.
constexpr uint32_t kSpaceIo = 0x0100'0000;
constexpr uint32_t kSpaceMem32 = 0x0200'0000;
constexpr uint32_t kSpaceMem64 = 0x0300'0000;

uint32_t hi(uint64_t v) {
  return static_cast<uint32_t>(v >> 32);
}
uint32_t lo(uint64_t v) {
  return static_cast<uint32_t>(v);
}

// One `ranges` entry: PCI address (3 cells), CPU address (2), size (2). Identity-mapped
// memory; I/O space from PCI address 0.
void add_range(std::vector<uint32_t>& ranges, uint32_t space, const pci::Window& w) {
  const uint64_t pci_address = space == kSpaceIo ? 0 : w.base;
  ranges.insert(ranges.end(), {space, hi(pci_address), lo(pci_address), hi(w.base), lo(w.base),
                               hi(w.size), lo(w.size)});
}

}  // namespace

void PciEcamFdt::describe_fdt(FdtWriter& fdt) const {
  const std::string what = node_name("pcie", layout.ecam.base);
  fdt.claim_address(layout.ecam.base, what);
  std::vector<uint32_t> ranges;
  if (layout.io.size != 0) add_range(ranges, kSpaceIo, layout.io);
  add_range(ranges, kSpaceMem32, layout.mmio32);
  if (layout.mmio64.size != 0) add_range(ranges, kSpaceMem64, layout.mmio64);
  const auto last_bus = static_cast<uint32_t>(layout.ecam.size / pci::HostBridge::kEcamBusSize) - 1;

  FdtNode node(what);
  node.string("compatible", "pci-host-ecam-generic")
      .string("device_type", "pci")
      .reg({{layout.ecam.base, layout.ecam.size}})
      .cells("bus-range", {0, last_bus})
      .u32("#address-cells", 3)
      .u32("#size-cells", 2)
      .cells("ranges", std::move(ranges))
      .empty("dma-coherent");
  if (!intx.empty()) {
    // Matched on the device number (PCI address bits 15:11) and the pin (1 = INTA).
    std::vector<uint32_t> map;
    for (const Intx& i : intx) {
      const std::string who =
          fmt::format("{} device {:02x} INT{}", what, i.device, static_cast<char>('A' + i.pin));
      map.insert(map.end(), {uint32_t{i.device} << 11, 0, 0, uint32_t{i.pin} + 1u});
      const std::vector<uint32_t> parent =
          fdt.interrupt_map_parent(i.irq, FdtTrigger::level_high, who);
      map.insert(map.end(), parent.begin(), parent.end());
    }
    node.u32("#interrupt-cells", 1)
        .cells("interrupt-map-mask", {0x1f << 11, 0, 0, 7})
        .cells("interrupt-map", std::move(map));
  }
  // Requester ID n is device ID n at the MSI controller (the ITS's #msi-cells is 1: msi-parent
  // would need a device ID of its own); an IMSIC (#msi-cells 0) is named as it is.
  if (!msi_parent.empty()) {
    const uint32_t controller = fdt.phandle(msi_parent);
    if (msi_device_ids) {
      node.cells("msi-map", {0, controller, 0, 0x1'0000});
    } else {
      node.u32("msi-parent", controller);
    }
  }
  fdt.add(std::move(node));
}

}  // namespace libvmm
