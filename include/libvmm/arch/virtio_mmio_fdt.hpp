// A virtio-mmio transport in a device tree (compatible "virtio,mmio"): what a device-tree machine
// (AArch64 now, RISC-V next) adds for each virtIO device it places. The interrupt specifier is
// the machine's interrupt controller's (FdtWriter::interrupts).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "libvmm/core/fdt.hpp"

namespace libvmm {

struct VirtioMmioFdt final : FdtNodeSource {
  // The node a machine adds for a transport it placed at BASE, named virtio-mmio@BASE.
  static std::shared_ptr<VirtioMmioFdt> at(uint64_t base, uint64_t size, uint32_t irq);

  void describe_fdt(FdtWriter& fdt) const override;

  uint64_t base = 0;
  uint64_t size = 0x200;
  uint32_t irq = 0;                              // the controller's number (GIC: SPI INTID)
  FdtTrigger trigger = FdtTrigger::edge_rising;  // irqfds are edges
  bool dma_coherent = true;                      // the platform's DMA is cache coherent
  std::string name{};  // for error messages, e.g. "virtio-blk disk0"; default virtio-mmio@BASE
};

}  // namespace libvmm
