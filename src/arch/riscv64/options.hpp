// The RISC-V machine's options (arch/machine_option.hpp) as the machine reads them from a
// checked VmConfig. Internal to the library.
#pragma once

#include <optional>
#include <string>

#include "libvmm/arch/riscv64/fdt.hpp"
#include "libvmm/core/vm_config.hpp"

namespace libvmm::riscv64 {

// <irqchip kind="plic"/>, --irqchip plic: the interrupt controller asked for; nullopt for the
// best the host's KVM offers (its in-kernel AIA, else vmm's PLIC).
struct IrqchipOption {
  IrqchipKind kind;
  std::string label;  // where it was asked for, for messages: "--irqchip aia"
};
std::optional<IrqchipOption> irqchip_option(const VmConfig& config);

}  // namespace libvmm::riscv64
