// The device-tree machines' options (device_tree_options.hpp): pure code, built for every host.
#include "device_tree_options.hpp"

#include <fmt/format.h>

namespace libvmm {
namespace {

// A device-tree file a machine boots with (--dtb, --dtb-overlay): the two differ only in their
// names, the noun their messages use, and what vmm does with the file.
class DeviceTreeFileOption final : public MachineOption {
 public:
  struct Names {
    std::string_view element, flag, help;
    std::string_view noun;  // in problems: "device tree board.dtb: ..."
    std::string_view done;  // in `vmm check`: "board.dtb (patched)"
  };
  explicit constexpr DeviceTreeFileOption(Names names) : names_(names) {}

  std::string_view element() const override { return names_.element; }
  std::string_view flag() const override { return names_.flag; }
  std::string_view flag_value() const override { return "FILE"; }
  std::string_view help() const override { return names_.help; }
  std::string_view positional() const override { return "path"; }
  std::vector<AttributeRule> attributes() const override { return {{"path", true, true, "FILE"}}; }
  std::string_view purpose() const override { return "boot with a device tree"; }

  void check(const DeviceSpec& spec, const HostFiles& files,
             std::vector<std::string>& problems) const override {
    const std::string path = spec.value_or("path", "");
    if (std::string why = files.check_readable(path); !why.empty()) {
      problems.push_back(fmt::format("{} {}: {}", names_.noun, path,
                                     why == "is a directory" ? "not a regular file" : why));
    }
  }

  std::string describe(const DeviceSpec& spec) const override {
    return fmt::format("{} ({})", spec.value_or("path", ""), names_.done);
  }

  // The file asked for with this option, if any, and who asked (the flag, or the element's place).
  std::optional<DtbOption> in(const VmConfig& config) const {
    const DeviceSpec* spec = find_option_spec(config.machine_options, element());
    if (spec == nullptr) return std::nullopt;
    const bool from_flag = spec->where.empty() || spec->where.starts_with(flag());
    return DtbOption{spec->value_or("path", ""), from_flag ? std::string(flag()) : spec->where};
  }

 private:
  Names names_;
};

const DeviceTreeFileOption& dtb_kind() {
  static const DeviceTreeFileOption kind({
      .element = "dtb",
      .flag = "--dtb",
      .help = "Your device tree blob; vmm patches memory, chosen and virtIO devices into it "
              "(default: a generated one)",
      .noun = "device tree",
      .done = "patched",
  });
  return kind;
}

const DeviceTreeFileOption& dtb_overlay_kind() {
  static const DeviceTreeFileOption kind({
      .element = "dtb_overlay",
      .flag = "--dtb-overlay",
      .help = "A device-tree overlay (dtc -@ of a /plugin/ source) applied to the guest's device "
              "tree (generated, or --dtb's) before vmm patches memory, chosen and virtIO devices "
              "into it",
      .noun = "device-tree overlay",
      .done = "applied",
  });
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
  return dtb_kind().in(config);
}

std::optional<DtbOption> dtb_overlay_option(const VmConfig& config) {
  return dtb_overlay_kind().in(config);
}

}  // namespace libvmm
