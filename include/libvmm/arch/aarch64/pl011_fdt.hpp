// The PL011 UART in a device tree: its node (arm,pl011 with the fixed apb-pclk clock it needs)
// and /chosen/stdout-path pointing at it.
#pragma once

#include <cstdint>

#include "libvmm/core/fdt.hpp"

namespace libvmm::aarch64 {

struct Pl011Fdt final : FdtNodeSource {
  Pl011Fdt(uint64_t base_gpa, uint32_t spi_intid) : base(base_gpa), intid(spi_intid) {}

  void describe_fdt(FdtWriter& fdt) const override;

  uint64_t base = 0;
  uint64_t size = 0x1000;
  uint32_t intid = 0;              // an SPI INTID (>= 32)
  uint32_t clock_hz = 24'000'000;  // the apb-pclk fixed clock
};

}  // namespace libvmm::aarch64
