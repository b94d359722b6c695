#include "libvmm/arch/virtio_mmio_fdt.hpp"

namespace libvmm {

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
