// The AArch64 machine's options (arch/machine_option.hpp) as the machine reads them from a
// checked VmConfig. Internal to the library.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "libvmm/arch/aarch64/gic.hpp"
#include "libvmm/core/vm_config.hpp"

namespace libvmm::aarch64 {

// <gic version="3"/>, --gic v3: the vGIC asked for; nullopt for what the host's KVM offers.
struct GicOption {
  GicVersion version;
  std::string label;  // where it was asked for, for messages: "--gic v3", "f.system:9: <gic>"
};
std::optional<GicOption> gic_option(const VmConfig& config);

// <dtb path="board.dtb"/>, --dtb board.dtb: the user's device tree to patch; nullopt to
// generate one.
struct DtbOption {
  std::filesystem::path path;
  std::string what;  // who asked, for messages: "--dtb", "f.system:9: <dtb>"
  std::string label() const { return what + " " + path.string(); }  // "--dtb board.dtb"
};
std::optional<DtbOption> dtb_option(const VmConfig& config);
// <dtb_overlay path="o.dtbo"/>, --dtb-overlay o.dtbo: applied to the tree before vmm's patches.
std::optional<DtbOption> dtb_overlay_option(const VmConfig& config);

}  // namespace libvmm::aarch64
