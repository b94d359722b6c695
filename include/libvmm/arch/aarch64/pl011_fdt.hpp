// The PrimeCell devices in a device tree: the PL011 UART (arm,pl011 with the fixed apb-pclk clock
// it needs, and /chosen/stdout-path pointing at it), the PL031 real-time clock and the PL061
// GPIO controller with the power key on one of its lines.
#pragma once

#include <cstdint>

#include "libvmm/core/fdt.hpp"

namespace libvmm::aarch64 {

// The fixed APB clock PrimeCell devices name as "apb_pclk" (node /apb-pclk, added by the first
// device that asks for it): its phandle.
uint32_t apb_pclk(FdtWriter& fdt, uint32_t clock_hz);

struct Pl011Fdt final : FdtNodeSource {
  Pl011Fdt(uint64_t base_gpa, uint32_t spi_intid) : base(base_gpa), intid(spi_intid) {}

  void describe_fdt(FdtWriter& fdt) const override;

  uint64_t base = 0;
  uint64_t size = 0x1000;
  uint32_t intid = 0;              // an SPI INTID (>= 32)
  uint32_t clock_hz = 24'000'000;  // the apb-pclk fixed clock
};

// The PL031 real-time clock: arm,pl031 with the apb-pclk clock and no interrupt (no alarm; see
// libvmm/devices/pl031.hpp).
struct Pl031Fdt final : FdtNodeSource {
  explicit Pl031Fdt(uint64_t base_gpa) : base(base_gpa) {}

  void describe_fdt(FdtWriter& fdt) const override;

  uint64_t base = 0;
  uint64_t size = 0x1000;
  uint32_t clock_hz = 24'000'000;
};

// The PL061 GPIO controller (arm,pl061: gpio-controller, two GPIO cells) and, as on QEMU's virt
// board, a `gpio-keys` node whose "poweroff" key is KEY_POWER (116) on line `power_key_line`,
// active high: Linux's gpio-keys driver reports it, systemd-logind powers off.
struct Pl061Fdt final : FdtNodeSource {
  Pl061Fdt(uint64_t base_gpa, uint32_t spi_intid) : base(base_gpa), intid(spi_intid) {}

  void describe_fdt(FdtWriter& fdt) const override;

  uint64_t base = 0;
  uint64_t size = 0x1000;
  uint32_t intid = 0;  // an SPI INTID (>= 32)
  uint32_t power_key_line = 3;
  uint32_t clock_hz = 24'000'000;
};

}  // namespace libvmm::aarch64
