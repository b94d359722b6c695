// The GIC as the device tree sees it: its interrupt numbering (INTIDs), its node, and how a
// device's interrupt is written (the arm,gic bindings). KVM's vGIC itself is created by the
// AArch64 machine (src/arch/aarch64/machine.cpp), which describes it with a GicDescription.
//
// Interrupt numbers: the description (and the GIC/KVM side) uses INTIDs — SPI n is INTID
// n + 32. The device tree's SPI cell is INTID - 32; spi_cell() is the one place that converts.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "libvmm/core/fdt.hpp"

namespace libvmm::aarch64 {

constexpr uint32_t kFirstSpiIntid = 32;
constexpr uint32_t kLastSpiIntid = 1019;
constexpr uint32_t kFirstPpiIntid = 16;

// Device tree interrupt specifier cells (arm,gic bindings).
constexpr uint32_t kFdtIrqTypeSpi = 0;
constexpr uint32_t kFdtIrqTypePpi = 1;
constexpr uint32_t kFdtIrqEdgeRising = 1;
constexpr uint32_t kFdtIrqLevelHigh = 4;

constexpr uint32_t kGicV2MaxCpus = 8;

enum class GicVersion : uint8_t { v2 = 2, v3 = 3 };

struct GicDescription {
  GicVersion version = GicVersion::v3;
  uint64_t dist_base = 0;
  uint64_t dist_size = 0;
  // v2: the CPU interface (GICC); v3: the redistributor region (all vCPUs' frames).
  uint64_t cpu_or_redist_base = 0;
  uint64_t cpu_or_redist_size = 0;
  // v3: the ITS (MSIs from PCI devices), a child node "msi-controller" with phandle "its";
  // size 0: none.
  uint64_t its_base = 0;
  uint64_t its_size = 0;
};

// The device tree SPI cell for `intid`. Throws UserError naming `what` when `intid` is not an
// SPI INTID (< 32, e.g. a device tree number put in the description, or > 1019).
uint32_t spi_cell(uint32_t intid, std::string_view what);

// The GIC in a device tree: its node (arm,gic-v3 or arm,cortex-a15-gic, phandle "gic", and the
// root's interrupt-parent), and the binding devices' SPIs are written in.
class GicFdt final : public FdtNodeSource, public FdtInterruptBinding {
 public:
  explicit GicFdt(const GicDescription& gic) : gic_(gic) {}

  void describe_fdt(FdtWriter& fdt) const override;
  // <GIC_SPI, INTID - 32, trigger>.
  std::vector<uint32_t> interrupt_cells(uint32_t intid, FdtTrigger trigger,
                                        std::string_view what) const override;
  std::string_view number_name() const override { return "INTID"; }
  std::string_view phandle_label() const override { return "gic"; }
  // 2 with the ITS child (its reg is in the root's address space), else 0.
  uint32_t address_cells() const override { return gic_.its_size != 0 ? 2 : 0; }
  // The flags cell of a PPI wired to every one of `cpus` vCPUs (GICv2 names the CPUs too).
  uint32_t ppi_flags(FdtTrigger trigger, uint32_t cpus) const;

  const GicDescription& description() const { return gic_; }

 private:
  GicDescription gic_;
};

}  // namespace libvmm::aarch64
