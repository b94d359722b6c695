// The AArch64 machine's options: <gic version="2|3"/> / --gic v2|v3, <dtb path="FILE"/> /
// --dtb FILE, and <dtb_overlay path="FILE"/> / --dtb-overlay FILE. Pure code, built for every
// host so that others refuse these options by name.
#include "options.hpp"

#include <fmt/format.h>

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

// Where a spec was written, for the machine's messages; "--flag VALUE" for one built in code.
std::string label(const DeviceSpec& spec, std::string_view flag, std::string_view positional) {
  if (!spec.where.empty()) return spec.where;
  return fmt::format("{} {}", flag, spec.value_or(positional, ""));
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
};

class DtbOptionKind final : public MachineOption {
 public:
  std::string_view element() const override { return "dtb"; }
  std::string_view flag() const override { return "--dtb"; }
  std::string_view flag_value() const override { return "FILE"; }
  std::string_view help() const override {
    return "Your device tree blob; vmm patches memory, chosen and virtIO devices into it "
           "(default: a generated one)";
  }
  std::string_view positional() const override { return "path"; }
  std::vector<AttributeRule> attributes() const override { return {{"path", true, true, "FILE"}}; }
  std::string_view purpose() const override { return "boot with a device tree"; }

  void check(const DeviceSpec& spec, const HostFiles& files,
             std::vector<std::string>& problems) const override {
    const std::string path = spec.value_or("path", "");
    if (std::string why = files.check_readable(path); !why.empty()) {
      problems.push_back(fmt::format("device tree {}: {}", path,
                                     why == "is a directory" ? "not a regular file" : why));
    }
  }

  std::string describe(const DeviceSpec& spec) const override {
    return spec.value_or("path", "") + " (patched)";
  }
};

class DtbOverlayOptionKind final : public MachineOption {
 public:
  std::string_view element() const override { return "dtb_overlay"; }
  std::string_view flag() const override { return "--dtb-overlay"; }
  std::string_view flag_value() const override { return "FILE"; }
  std::string_view help() const override {
    return "A device-tree overlay (dtc -@ of a /plugin/ source) applied to the guest's device "
           "tree (generated, or --dtb's) before vmm patches memory, chosen and virtIO devices "
           "into it";
  }
  std::string_view positional() const override { return "path"; }
  std::vector<AttributeRule> attributes() const override { return {{"path", true, true, "FILE"}}; }
  std::string_view purpose() const override { return "boot with a device tree"; }

  void check(const DeviceSpec& spec, const HostFiles& files,
             std::vector<std::string>& problems) const override {
    const std::string path = spec.value_or("path", "");
    if (std::string why = files.check_readable(path); !why.empty()) {
      problems.push_back(fmt::format("device-tree overlay {}: {}", path,
                                     why == "is a directory" ? "not a regular file" : why));
    }
  }

  std::string describe(const DeviceSpec& spec) const override {
    return spec.value_or("path", "") + " (applied)";
  }
};

const GicOptionKind& gic_kind() {
  static const GicOptionKind kind;
  return kind;
}

const DtbOptionKind& dtb_kind() {
  static const DtbOptionKind kind;
  return kind;
}

const DtbOverlayOptionKind& dtb_overlay_kind() {
  static const DtbOverlayOptionKind kind;
  return kind;
}

}  // namespace

const std::vector<const MachineOption*>& aarch64_machine_options() {
  static const std::vector<const MachineOption*> options = {&gic_kind(), &dtb_kind(),
                                                            &dtb_overlay_kind()};
  return options;
}

namespace aarch64 {

std::optional<GicOption> gic_option(const VmConfig& config) {
  const DeviceSpec* spec = find_option_spec(config.machine_options, gic_kind().element());
  if (spec == nullptr) return std::nullopt;
  const auto version = parse_gic_version(spec->value_or("version", ""));
  if (!version) return std::nullopt;  // refused by validation
  return GicOption{*version, label(*spec, gic_kind().flag(), "version")};
}

std::optional<DtbOption> dtb_option(const VmConfig& config) {
  const DeviceSpec* spec = find_option_spec(config.machine_options, dtb_kind().element());
  if (spec == nullptr) return std::nullopt;
  const std::string_view flag = dtb_kind().flag();
  const bool from_flag = spec->where.empty() || spec->where.starts_with(flag);
  return DtbOption{spec->value_or("path", ""), from_flag ? std::string(flag) : spec->where};
}

std::optional<DtbOption> dtb_overlay_option(const VmConfig& config) {
  const DeviceSpec* spec = find_option_spec(config.machine_options, dtb_overlay_kind().element());
  if (spec == nullptr) return std::nullopt;
  const std::string_view flag = dtb_overlay_kind().flag();
  const bool from_flag = spec->where.empty() || spec->where.starts_with(flag);
  return DtbOption{spec->value_or("path", ""), from_flag ? std::string(flag) : spec->where};
}

}  // namespace aarch64
}  // namespace libvmm
