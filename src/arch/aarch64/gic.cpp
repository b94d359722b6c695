#include "libvmm/arch/aarch64/gic.hpp"

#include <fmt/format.h>

#include "libvmm/core/error.hpp"

namespace libvmm::aarch64 {
namespace {

constexpr uint32_t kPpiCpuMaskShift = 8;  // GICv2 PPI flags bits [15:8]

uint32_t trigger_cell(FdtTrigger trigger) {
  return trigger == FdtTrigger::level_high ? kFdtIrqLevelHigh : kFdtIrqEdgeRising;
}

}  // namespace

uint32_t spi_cell(uint32_t intid, std::string_view what) {
  if (intid < kFirstSpiIntid) {
    throw UserError(fmt::format(
        "{}: interrupt {} is not an SPI INTID: the description uses INTIDs, where SPIs start at "
        "32 (device tree SPI {} is INTID {})",
        what, intid, intid, intid + kFirstSpiIntid));
  }
  if (intid > kLastSpiIntid) {
    throw UserError(fmt::format("{}: interrupt {} is beyond the last SPI INTID ({})", what, intid,
                                kLastSpiIntid));
  }
  return intid - kFirstSpiIntid;
}

void GicFdt::describe_fdt(FdtWriter& fdt) const {
  const uint32_t phandle = fdt.phandle("gic");
  fdt.root().u32("interrupt-parent", phandle);
  FdtNode node(node_name("interrupt-controller", gic_.dist_base));
  node.string("compatible", gic_.version == GicVersion::v2 ? "arm,cortex-a15-gic" : "arm,gic-v3")
      .reg({{gic_.dist_base, gic_.dist_size}, {gic_.cpu_or_redist_base, gic_.cpu_or_redist_size}})
      .empty("interrupt-controller")
      .u32("#interrupt-cells", 3);
  if (gic_.its_size == 0) {
    node.u32("#address-cells", 0).u32("phandle", phandle);  // an interrupt provider, no children
  } else {
    node.u32("#address-cells", 2).u32("#size-cells", 2).empty("ranges").u32("phandle", phandle);
    FdtNode its(node_name("msi-controller", gic_.its_base));
    its.string("compatible", "arm,gic-v3-its")
        .reg({{gic_.its_base, gic_.its_size}})
        .empty("msi-controller")
        .u32("#msi-cells", 1)
        .u32("phandle", fdt.phandle("its"));
    node.child(std::move(its));
  }
  fdt.add(std::move(node));
}

std::vector<uint32_t> GicFdt::interrupt_cells(uint32_t intid, FdtTrigger trigger,
                                              std::string_view what) const {
  return {kFdtIrqTypeSpi, spi_cell(intid, what), trigger_cell(trigger)};
}

uint32_t GicFdt::ppi_flags(FdtTrigger trigger, uint32_t cpus) const {
  if (gic_.version != GicVersion::v2) return trigger_cell(trigger);
  return trigger_cell(trigger) | (((1u << cpus) - 1) << kPpiCpuMaskShift);
}

}  // namespace libvmm::aarch64
