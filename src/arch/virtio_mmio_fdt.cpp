#include "libvmm/arch/virtio_mmio_fdt.hpp"

#include <fmt/format.h>

namespace libvmm {

std::shared_ptr<VirtioMmioFdt> VirtioMmioFdt::at(uint64_t base, uint64_t size, uint32_t irq) {
  auto node = std::make_shared<VirtioMmioFdt>();
  node->base = base;
  node->size = size;
  node->irq = irq;
  node->name = fmt::format("virtio-mmio@{:#x}", base);
  return node;
}

void VirtioMmioFdt::describe_fdt(FdtWriter& fdt) const {
  const std::string what = name.empty() ? node_name("virtio-mmio", base) : name;
  std::vector<uint32_t> interrupts = fdt.interrupts(irq, trigger, what);
  fdt.claim_address(base, what);
  FdtNode node(node_name("virtio_mmio", base));
  node.string("compatible", "virtio,mmio")
      .reg({{base, size}})
      .cells("interrupts", std::move(interrupts));
  if (dma_coherent) node.empty("dma-coherent");
  fdt.add(std::move(node));
}

}  // namespace libvmm
