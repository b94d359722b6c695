#include "libvmm/arch/aarch64/pl011_fdt.hpp"

#include <fmt/format.h>

namespace libvmm::aarch64 {

uint32_t apb_pclk(FdtWriter& fdt, uint32_t clock_hz) {
  const uint32_t clock = fdt.phandle("apb-pclk");
  if (fdt.root().find_child("apb-pclk") != nullptr) return clock;
  FdtNode clock_node("apb-pclk");
  clock_node.string("compatible", "fixed-clock")
      .u32("#clock-cells", 0)
      .u32("clock-frequency", clock_hz)
      .string("clock-output-names", "clk24mhz")
      .u32("phandle", clock);
  fdt.add(std::move(clock_node));
  return clock;
}

void Pl011Fdt::describe_fdt(FdtWriter& fdt) const {
  const std::string what = node_name("pl011", base);
  std::vector<uint32_t> interrupts = fdt.interrupts(intid, FdtTrigger::level_high, what);
  fdt.claim_address(base, what);
  const uint32_t clock = apb_pclk(fdt, clock_hz);

  FdtNode node(node_name("serial", base));
  node.strings("compatible", {"arm,pl011", "arm,primecell"})
      .reg({{base, size}})
      .cells("interrupts", std::move(interrupts))
      .cells("clocks", {clock, clock})
      .strings("clock-names", {"uartclk", "apb_pclk"});
  fdt.node("chosen").string("stdout-path", fmt::format("/{}", node.name()));
  fdt.add(std::move(node));
}

void Pl061Fdt::describe_fdt(FdtWriter& fdt) const {
  const std::string what = node_name("pl061", base);
  std::vector<uint32_t> interrupts = fdt.interrupts(intid, FdtTrigger::level_high, what);
  fdt.claim_address(base, what);
  const uint32_t clock = apb_pclk(fdt, clock_hz);
  const uint32_t gpio = fdt.phandle("pl061");
  FdtNode node(what);
  node.strings("compatible", {"arm,pl061", "arm,primecell"})
      .reg({{base, size}})
      .cells("interrupts", std::move(interrupts))
      .empty("gpio-controller")
      .u32("#gpio-cells", 2)
      .u32("clocks", clock)
      .string("clock-names", "apb_pclk")
      .u32("phandle", gpio);
  fdt.add(std::move(node));

  constexpr uint32_t kKeyPower = 116;  // KEY_POWER, linux/input-event-codes.h
  constexpr uint32_t kGpioActiveHigh = 0;
  FdtNode key("poweroff");
  key.string("label", "GPIO Key Poweroff")
      .u32("linux,code", kKeyPower)
      .cells("gpios", {gpio, power_key_line, kGpioActiveHigh});
  FdtNode keys("gpio-keys");
  keys.string("compatible", "gpio-keys").child(std::move(key));
  fdt.add(std::move(keys));
}

}  // namespace libvmm::aarch64

namespace libvmm::aarch64 {

void Pl031Fdt::describe_fdt(FdtWriter& fdt) const {
  fdt.claim_address(base, node_name("pl031", base));
  const uint32_t clock = apb_pclk(fdt, clock_hz);
  FdtNode node(node_name("pl031", base));
  node.strings("compatible", {"arm,pl031", "arm,primecell"})
      .reg({{base, size}})
      .u32("clocks", clock)
      .string("clock-names", "apb_pclk");
  fdt.add(std::move(node));
}

}  // namespace libvmm::aarch64
