// The RISC-V machine's options: <irqchip kind="aia|plic"/> / --irqchip aia|plic, and the
// device-tree machines' <dtb>/--dtb and <dtb_overlay>/--dtb-overlay (../device_tree_options.cpp).
// Pure code, built for every host so that others refuse them by name.
#include "options.hpp"

#include <fmt/format.h>

#include "../device_tree_options.hpp"
#include "libvmm/arch/machine_option.hpp"

namespace libvmm {

const std::vector<const MachineOption*>& riscv64_machine_options();

namespace {

std::optional<riscv64::IrqchipKind> parse_irqchip(std::string_view text) {
  if (text == "aia") return riscv64::IrqchipKind::aia;
  if (text == "plic") return riscv64::IrqchipKind::plic;
  return std::nullopt;
}

class IrqchipOptionKind final : public MachineOption {
 public:
  std::string_view element() const override { return "irqchip"; }
  std::string_view flag() const override { return "--irqchip"; }
  std::string_view flag_value() const override { return "aia|plic"; }
  std::string_view help() const override {
    return "Interrupt controller: aia (KVM's in-kernel APLIC + IMSIC, Linux 6.5+ hosts) or plic "
           "(emulated by vmm) (default: aia where the host's KVM has it)";
  }
  std::string_view positional() const override { return "kind"; }
  std::vector<AttributeRule> attributes() const override { return {{"kind", true, false, "KIND"}}; }
  std::string_view purpose() const override { return "choose between an AIA and a PLIC"; }

  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    const std::string kind = spec.value_or("kind", "");
    if (parse_irqchip(kind)) return;
    problems.push_back(fmt::format("kind=\"{}\": expected aia or plic", kind));
  }

  std::string describe(const DeviceSpec& spec) const override {
    const auto kind = parse_irqchip(spec.value_or("kind", ""));
    return kind == riscv64::IrqchipKind::plic ? "plic (emulated by vmm)"
                                              : "aia (KVM's APLIC + IMSIC)";
  }
  std::string pci_intx_reason(const DeviceSpec& spec) const override {
    const auto kind = parse_irqchip(spec.value_or("kind", ""));
    return kind == riscv64::IrqchipKind::plic ? "the PLIC has no MSIs" : "";
  }
};

const IrqchipOptionKind& irqchip_kind() {
  static const IrqchipOptionKind kind;
  return kind;
}

}  // namespace

const std::vector<const MachineOption*>& riscv64_machine_options() {
  static const std::vector<const MachineOption*> options = {&irqchip_kind(), &dtb_machine_option(),
                                                            &dtb_overlay_machine_option()};
  return options;
}

namespace riscv64 {

std::optional<IrqchipOption> irqchip_option(const VmConfig& config) {
  const DeviceSpec* spec = find_option_spec(config.machine_options, irqchip_kind().element());
  if (spec == nullptr) return std::nullopt;
  const auto kind = parse_irqchip(spec->value_or("kind", ""));
  if (!kind) return std::nullopt;  // refused by validation
  return IrqchipOption{*kind, machine_option_label(irqchip_kind(), *spec)};
}

}  // namespace riscv64
}  // namespace libvmm
