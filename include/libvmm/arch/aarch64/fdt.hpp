// The device tree an arm64 guest boots with: generated with libfdt, or a user's DTB patched
// with the parts the VMM decides. The machine describes its own nodes (memory, cpus, psci,
// timer, chosen); the GIC (gic.hpp), the board's devices (the PL011, pl011_fdt.hpp) and the
// devices vmm places (virtio-mmio, arch/virtio_mmio_fdt.hpp) describe theirs (core/fdt.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "libvmm/arch/aarch64/gic.hpp"
#include "libvmm/arch/aarch64/image.hpp"
#include "libvmm/core/fdt.hpp"

namespace libvmm::aarch64 {

// Architected timer PPIs (INTIDs, as KVM and the SBSA use them).
constexpr uint32_t kTimerSecurePhysIntid = 29;     // PPI 13
constexpr uint32_t kTimerNonSecurePhysIntid = 30;  // PPI 14
constexpr uint32_t kTimerVirtIntid = 27;           // PPI 11
constexpr uint32_t kTimerHypIntid = 26;            // PPI 10

struct FdtMachine {
  std::vector<GpaRange> memory;  // one /memory@... node each
  uint32_t cpus = 1;
  // MPIDR of each vCPU (affinity bits only used); empty: kvm_default_mpidr(0..cpus-1).
  std::vector<uint64_t> cpu_mpidrs;
  // The interrupt controller: its node, and the binding every device interrupt is written in.
  GicDescription gic;
  // The board's own devices at fixed addresses (the PL011, which also sets stdout-path): in a
  // generated tree only, since a user's tree describes its board itself.
  std::vector<std::shared_ptr<const FdtNodeSource>> board;
  // The devices vmm places (virtio-mmio transports): in a generated tree and patched into a
  // user's.
  std::vector<std::shared_ptr<const FdtNodeSource>> devices;
  std::string bootargs;
  std::optional<GpaRange> initrd;  // linux,initrd-start/end; none when unset or size 0
};

// The MPIDR affinity KVM gives vCPU `index` at reset (Aff0 = index % 16, Aff1 = index / 16,
// Aff2 = index / 4096), which the /cpus reg property must match.
uint64_t kvm_default_mpidr(uint32_t index);

// Builds the whole tree: root (#address-cells/#size-cells 2, interrupt-parent = GIC), chosen,
// memory, cpus (arm,arm-v8, enable-method psci), psci (1.0/0.2, hvc), timer, then the GIC's,
// the board's and the devices' own nodes in that order. Throws UserError on a bad description
// (no memory, 0 cpus, too many vCPUs for a GICv2, non-SPI or shared interrupts, shared
// addresses).
std::vector<uint8_t> build_fdt(const FdtMachine& machine);

// Patches a user's DTB: replaces every memory node with `machine.memory`, sets /chosen bootargs
// (when non-empty) and initrd bounds (removes stale ones), adds the devices' nodes (replacing
// nodes of the same name), and adds cpus/psci/timer when the DTB has none. Everything else,
// including the board's devices, is kept. The GIC must be in the user's tree (interrupt-parent
// of the root or the first interrupt-controller). Throws UserError "PATH: reason" for a DTB
// that is not valid, has no interrupt controller, or outgrows kDtbMaxSize.
std::vector<uint8_t> patch_fdt(std::span<const uint8_t> user_dtb, const FdtMachine& machine,
                               const std::string& path);

}  // namespace libvmm::aarch64
