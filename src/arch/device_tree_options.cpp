// The device-tree machines' options (device_tree_options.hpp): pure code, built for every host.
#include "device_tree_options.hpp"

#include <fmt/format.h>

namespace libvmm {
namespace {

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

const DtbOptionKind& dtb_kind() {
  static const DtbOptionKind kind;
  return kind;
}

const DtbOverlayOptionKind& dtb_overlay_kind() {
  static const DtbOverlayOptionKind kind;
  return kind;
}

}  // namespace

const MachineOption& dtb_machine_option() {
  return dtb_kind();
}

const MachineOption& dtb_overlay_machine_option() {
  return dtb_overlay_kind();
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

}  // namespace libvmm
