// The AArch64 machine's options: <gic version="2|3"/> / --gic v2|v3, and the device-tree
// machines' <dtb>/--dtb and <dtb_overlay>/--dtb-overlay (../device_tree_options.cpp). Pure code,
// built for every host so that others refuse these options by name.
#include "options.hpp"

#include <fmt/format.h>

#include "../device_tree_options.hpp"
#include "libvmm/arch/machine_option.hpp"

namespace libvmm {

const std::vector<const MachineOption*>& aarch64_machine_options();

namespace {

// "2", "3", "v2" or "v3" (the flag's spelling).
std::optional<aarch64::GicVersion> parse_gic_version(std::string_view text) {
  if (text == "2" || text == "v2") return aarch64::GicVersion::v2;
  if (text == "3" || text == "v3") return aarch64::GicVersion::v3;
  return std::nullopt;
}

class GicOptionKind final : public MachineOption {
 public:
  std::string_view element() const override { return "gic"; }
  std::string_view flag() const override { return "--gic"; }
  std::string_view flag_value() const override { return "v2|v3"; }
  std::string_view help() const override {
    return "Interrupt controller: v2 or v3 (default: what the host's KVM offers)";
  }
  std::string_view positional() const override { return "version"; }
  std::vector<AttributeRule> attributes() const override {
    return {{"version", true, false, "VERSION"}};
  }
  std::string_view purpose() const override { return "have a GIC"; }

  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    const std::string version = spec.value_or("version", "");
    if (parse_gic_version(version)) return;
    problems.push_back(version.starts_with('v')
                           ? "expected v2 or v3"
                           : fmt::format("version=\"{}\": expected 2 or 3", version));
  }

  std::string describe(const DeviceSpec& spec) const override {
    const auto version = parse_gic_version(spec.value_or("version", ""));
    return version == aarch64::GicVersion::v2 ? "v2" : "v3";
  }
  std::string pci_intx_reason(const DeviceSpec& spec) const override {
    const auto version = parse_gic_version(spec.value_or("version", ""));
    return version == aarch64::GicVersion::v2 ? "a GICv2 has no ITS" : "";
  }
};

const GicOptionKind& gic_kind() {
  static const GicOptionKind kind;
  return kind;
}

}  // namespace

const std::vector<const MachineOption*>& aarch64_machine_options() {
  static const std::vector<const MachineOption*> options = {&gic_kind(), &dtb_machine_option(),
                                                            &dtb_overlay_machine_option()};
  return options;
}

namespace aarch64 {

std::optional<GicOption> gic_option(const VmConfig& config) {
  const DeviceSpec* spec = find_option_spec(config.machine_options, gic_kind().element());
  if (spec == nullptr) return std::nullopt;
  const auto version = parse_gic_version(spec->value_or("version", ""));
  if (!version) return std::nullopt;  // refused by validation
  return GicOption{*version, machine_option_label(gic_kind(), *spec)};
}

}  // namespace aarch64
}  // namespace libvmm
