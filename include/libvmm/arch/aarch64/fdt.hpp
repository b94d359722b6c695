// The device tree an arm64 guest boots with: generated with libfdt from a plain description
// of the machine, or a user's DTB patched with the parts the VMM decides (memory, chosen,
// virtio-mmio devices).
//
// Interrupt numbers: the description (and the GIC/KVM side) uses INTIDs — SPI n is INTID
// n + 32. The device tree's SPI cell is INTID - 32; spi_cell() is the one place that converts.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/arch/aarch64/image.hpp"

namespace libvmm::aarch64 {

constexpr uint32_t kFirstSpiIntid = 32;
constexpr uint32_t kLastSpiIntid = 1019;
constexpr uint32_t kFirstPpiIntid = 16;

// Architected timer PPIs (INTIDs, as KVM and the SBSA use them).
constexpr uint32_t kTimerSecurePhysIntid = 29;     // PPI 13
constexpr uint32_t kTimerNonSecurePhysIntid = 30;  // PPI 14
constexpr uint32_t kTimerVirtIntid = 27;           // PPI 11
constexpr uint32_t kTimerHypIntid = 26;            // PPI 10

// Device tree interrupt specifier cells (arm,gic bindings).
constexpr uint32_t kFdtIrqTypeSpi = 0;
constexpr uint32_t kFdtIrqTypePpi = 1;
constexpr uint32_t kFdtIrqEdgeRising = 1;
constexpr uint32_t kFdtIrqLevelHigh = 4;

enum class GicVersion : uint8_t { v2 = 2, v3 = 3 };

struct GicDescription {
  GicVersion version = GicVersion::v3;
  uint64_t dist_base = 0;
  uint64_t dist_size = 0;
  // v2: the CPU interface (GICC); v3: the redistributor region (all vCPUs' frames).
  uint64_t cpu_or_redist_base = 0;
  uint64_t cpu_or_redist_size = 0;
};

struct UartDescription {  // a PL011
  uint64_t base = 0;
  uint64_t size = 0x1000;
  uint32_t intid = 0;              // an SPI INTID (>= 32)
  uint32_t clock_hz = 24'000'000;  // the apb-pclk fixed clock
};

struct VirtioMmioDescription {
  uint64_t base = 0;
  uint64_t size = 0x200;
  uint32_t intid = 0;            // an SPI INTID (>= 32)
  bool level_triggered = false;  // edge rising (irqfd) unless set
  std::string name{};            // for error messages, e.g. "virtio-blk disk0"
};

struct FdtMachine {
  std::vector<GpaRange> memory;  // one /memory@... node each
  uint32_t cpus = 1;
  // MPIDR of each vCPU (affinity bits only used); empty: kvm_default_mpidr(0..cpus-1).
  std::vector<uint64_t> cpu_mpidrs;
  GicDescription gic;
  std::optional<UartDescription> uart;  // also /chosen/stdout-path when set
  std::vector<VirtioMmioDescription> virtio;
  std::string bootargs;
  std::optional<GpaRange> initrd;  // linux,initrd-start/end; none when unset or size 0
};

// The MPIDR affinity KVM gives vCPU `index` at reset (Aff0 = index % 16, Aff1 = index / 16,
// Aff2 = index / 4096), which the /cpus reg property must match.
uint64_t kvm_default_mpidr(uint32_t index);

// The device tree SPI cell for `intid`. Throws UserError naming `what` when `intid` is not an
// SPI INTID (< 32, e.g. a device tree number put in the description, or > 1019).
uint32_t spi_cell(uint32_t intid, std::string_view what);

// Builds the whole tree: root (#address-cells/#size-cells 2, interrupt-parent = GIC), memory,
// cpus (arm,arm-v8, enable-method psci), psci (1.0/0.2, hvc), timer, GIC, apb-pclk + PL011,
// virtio-mmio devices (dma-coherent), chosen. Throws UserError on a bad description (no
// memory, 0 cpus, non-SPI interrupts).
std::vector<uint8_t> build_fdt(const FdtMachine& machine);

// Patches a user's DTB: replaces every memory node with `machine.memory`, sets /chosen bootargs
// (when non-empty) and initrd bounds (removes stale ones), adds the virtio-mmio nodes
// (replacing nodes at the same unit address), and adds cpus/psci/timer when the DTB has none.
// Everything else is kept. The GIC must be in the user's tree (interrupt-parent of the root or
// the first interrupt-controller). Throws UserError "PATH: reason" for a DTB that is not
// valid, has no interrupt controller, or outgrows kDtbMaxSize.
std::vector<uint8_t> patch_fdt(std::span<const uint8_t> user_dtb, const FdtMachine& machine,
                               const std::string& path);

}  // namespace libvmm::aarch64
