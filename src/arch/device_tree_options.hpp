// The options of machines that boot with a device tree (AArch64, RISC-V): <dtb path="FILE"/> /
// --dtb FILE, a user's tree patched with what vmm decides, and <dtb_overlay path="FILE"/> /
// --dtb-overlay FILE, applied before the patches. Each such architecture lists both among its
// options (src/arch/<arch>/options.cpp). Internal to the library.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "libvmm/arch/machine_option.hpp"
#include "libvmm/core/vm_config.hpp"

namespace libvmm {

const MachineOption& dtb_machine_option();
const MachineOption& dtb_overlay_machine_option();

// The user's device tree (or overlay) asked for; nullopt to generate one (or to apply none).
struct DtbOption {
  std::filesystem::path path;
  std::string what;  // who asked, for messages: "--dtb", "f.system:9: <dtb>"
  std::string label() const { return what + " " + path.string(); }  // "--dtb board.dtb"
};
std::optional<DtbOption> dtb_option(const VmConfig& config);
std::optional<DtbOption> dtb_overlay_option(const VmConfig& config);

}  // namespace libvmm
