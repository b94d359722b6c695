// The x86_64 machine's options (arch/machine_option.hpp) as the machine reads them from a checked
// VmConfig. Internal to the library.
#pragma once

#include <optional>
#include <string>

#include "libvmm/core/vm_config.hpp"

namespace libvmm::x86 {

// <halt in="guest"/>, --halt guest: a vCPU's HLT (and PAUSE) stay in the guest, without VM exits
// (KVM_CAP_X86_DISABLE_EXITS). nullopt, or in_guest false: they exit to KVM, the default.
struct HaltOption {
  bool in_guest = false;
  std::string label;  // where it was asked for, for messages: "--halt guest", "f.system:9: <halt>"
};
std::optional<HaltOption> halt_option(const VmConfig& config);

}  // namespace libvmm::x86
