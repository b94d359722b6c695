// The AArch64 machine's options (arch/machine_option.hpp) as the machine reads them from a
// checked VmConfig. Internal to the library.
#pragma once

#include <optional>
#include <string>

#include "../device_tree_options.hpp"
#include "libvmm/arch/aarch64/gic.hpp"
#include "libvmm/core/vm_config.hpp"

namespace libvmm::aarch64 {

// <gic version="3"/>, --gic v3: the vGIC asked for; nullopt for what the host's KVM offers.
struct GicOption {
  GicVersion version;
  std::string label;  // where it was asked for, for messages: "--gic v3", "f.system:9: <gic>"
};
std::optional<GicOption> gic_option(const VmConfig& config);

// <dtb>/--dtb and <dtb_overlay>/--dtb-overlay: shared by the device-tree machines.
using libvmm::dtb_option;
using libvmm::dtb_overlay_option;
using libvmm::DtbOption;

}  // namespace libvmm::aarch64
