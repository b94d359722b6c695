#include "libvmm/arch/aarch64/fdt.hpp"

#include <fmt/format.h>
#include <libfdt.h>

#include <algorithm>
#include <map>

#include "fdt_node.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"

namespace libvmm::aarch64 {
namespace {

constexpr uint32_t kGicPhandle = 1;
constexpr uint32_t kClockPhandle = 2;
constexpr uint32_t kGicV2MaxCpus = 8;
constexpr uint64_t kMpidrAffinityMask = 0xff00ffffffULL;  // Aff3, Aff2, Aff1, Aff0
constexpr uint32_t kPpiCpuMaskShift = 8;                  // GICv2 PPI flags bits [15:8]

std::string description_name(const VirtioMmioDescription& device) {
  return device.name.empty() ? node_name("virtio-mmio", device.base) : device.name;
}

std::vector<uint64_t> cpu_affinities(const FdtMachine& machine) {
  std::vector<uint64_t> affinities;
  for (uint32_t i = 0; i < machine.cpus; ++i) {
    const uint64_t mpidr =
        machine.cpu_mpidrs.empty() ? kvm_default_mpidr(i) : machine.cpu_mpidrs[i];
    affinities.push_back(mpidr & kMpidrAffinityMask);
  }
  return affinities;
}

// A description mistake found here is the user's (their description file or flags).
void validate(const FdtMachine& machine) {
  if (machine.memory.empty()) throw UserError("device tree: the machine has no memory");
  if (machine.cpus == 0) throw UserError("device tree: the machine has no vCPUs");
  if (!machine.cpu_mpidrs.empty() && machine.cpu_mpidrs.size() != machine.cpus) {
    throw std::invalid_argument("device tree: cpu_mpidrs must have one entry per vCPU");
  }
  if (machine.gic.version == GicVersion::v2 && machine.cpus > kGicV2MaxCpus) {
    throw UserError(fmt::format("--gic v2: a GICv2 serves at most {} vCPUs, the machine has {}",
                                kGicV2MaxCpus, machine.cpus));
  }
  // Every interrupt is an SPI of its own: the VMM raises each device's line separately.
  std::map<uint32_t, std::string> owners;
  std::map<uint64_t, std::string> bases;
  auto claim = [&](uint32_t intid, uint64_t base, const std::string& what) {
    spi_cell(intid, what);
    if (auto [it, fresh] = owners.emplace(intid, what); !fresh) {
      throw UserError(fmt::format("{}: INTID {} is already used by {}", what, intid, it->second));
    }
    if (auto [it, fresh] = bases.emplace(base, what); !fresh) {
      throw UserError(
          fmt::format("{}: address {:#x} is already used by {}", what, base, it->second));
    }
  };
  if (machine.uart)
    claim(machine.uart->intid, machine.uart->base, node_name("pl011", machine.uart->base));
  for (const auto& device : machine.virtio)
    claim(device.intid, device.base, description_name(device));
}

// Interrupt specifier flags for PPIs: GICv2 also names the CPUs the PPI is wired to.
uint32_t ppi_flags(const FdtMachine& machine, uint32_t trigger) {
  if (machine.gic.version != GicVersion::v2) return trigger;
  return trigger | (((1u << machine.cpus) - 1) << kPpiCpuMaskShift);
}

std::string uart_path(const UartDescription& uart) {
  return fmt::format("/{}", node_name("serial", uart.base));
}

FdtNode memory_node(const GpaRange& range) {
  FdtNode node(node_name("memory", range.gpa));
  node.string("device_type", "memory").reg({range});
  return node;
}

FdtNode cpus_node(const FdtMachine& machine) {
  const auto affinities = cpu_affinities(machine);
  // One address cell unless some vCPU has an Aff3 (bits 39:32).
  const bool two_cells = std::any_of(affinities.begin(), affinities.end(),
                                     [](uint64_t aff) { return (aff >> 32) != 0; });
  FdtNode cpus("cpus");
  cpus.u32("#address-cells", two_cells ? 2 : 1).u32("#size-cells", 0);
  for (uint64_t aff : affinities) {
    FdtNode cpu(node_name("cpu", aff));
    cpu.string("device_type", "cpu").string("compatible", "arm,arm-v8");
    if (two_cells) {
      cpu.u64("reg", aff);
    } else {
      cpu.u32("reg", static_cast<uint32_t>(aff));
    }
    cpu.string("enable-method", "psci");
    cpus.child(std::move(cpu));
  }
  return cpus;
}

FdtNode psci_node() {
  FdtNode node("psci");
  node.strings("compatible", {"arm,psci-1.0", "arm,psci-0.2"}).string("method", "hvc");
  return node;
}

FdtNode timer_node(const FdtMachine& machine) {
  const uint32_t flags = ppi_flags(machine, kFdtIrqLevelHigh);
  std::vector<uint32_t> interrupts;
  // The binding's order: secure, non-secure, virtual, hypervisor physical timer.
  for (uint32_t intid :
       {kTimerSecurePhysIntid, kTimerNonSecurePhysIntid, kTimerVirtIntid, kTimerHypIntid}) {
    interrupts.insert(interrupts.end(), {kFdtIrqTypePpi, intid - kFirstPpiIntid, flags});
  }
  FdtNode node("timer");
  node.string("compatible", "arm,armv8-timer").cells("interrupts", std::move(interrupts));
  return node;
}

FdtNode gic_node(const GicDescription& gic) {
  FdtNode node(node_name("interrupt-controller", gic.dist_base));
  const GpaRange dist{gic.dist_base, gic.dist_size};
  const GpaRange second{gic.cpu_or_redist_base, gic.cpu_or_redist_size};
  node.string("compatible", gic.version == GicVersion::v2 ? "arm,cortex-a15-gic" : "arm,gic-v3")
      .reg({dist, second})
      .empty("interrupt-controller")
      .u32("#interrupt-cells", 3)
      .u32("#address-cells", 0)  // an interrupt provider without interrupt-map children
      .u32("phandle", kGicPhandle);
  return node;
}

FdtNode clock_node(const UartDescription& uart) {
  FdtNode node("apb-pclk");
  node.string("compatible", "fixed-clock")
      .u32("#clock-cells", 0)
      .u32("clock-frequency", uart.clock_hz)
      .string("clock-output-names", "clk24mhz")
      .u32("phandle", kClockPhandle);
  return node;
}

FdtNode uart_node(const UartDescription& uart) {
  FdtNode node(uart_path(uart).substr(1));
  node.strings("compatible", {"arm,pl011", "arm,primecell"})
      .reg({{uart.base, uart.size}})
      .cells("interrupts", {kFdtIrqTypeSpi, spi_cell(uart.intid, "pl011"), kFdtIrqLevelHigh})
      .cells("clocks", {kClockPhandle, kClockPhandle})
      .strings("clock-names", {"uartclk", "apb_pclk"});
  return node;
}

FdtNode virtio_node(const VirtioMmioDescription& device, std::optional<uint32_t> interrupt_parent) {
  FdtNode node(node_name("virtio_mmio", device.base));
  const uint32_t trigger = device.level_triggered ? kFdtIrqLevelHigh : kFdtIrqEdgeRising;
  node.string("compatible", "virtio,mmio")
      .reg({{device.base, device.size}})
      .cells("interrupts",
             {kFdtIrqTypeSpi, spi_cell(device.intid, description_name(device)), trigger})
      .empty("dma-coherent");
  if (interrupt_parent) node.u32("interrupt-parent", *interrupt_parent);
  return node;
}

FdtNode chosen_node(const FdtMachine& machine) {
  FdtNode node("chosen");
  if (!machine.bootargs.empty()) node.string("bootargs", machine.bootargs);
  if (machine.initrd && machine.initrd->size != 0) {
    node.u64("linux,initrd-start", machine.initrd->gpa)
        .u64("linux,initrd-end", machine.initrd->end());
  }
  if (machine.uart) node.string("stdout-path", uart_path(*machine.uart));
  return node;
}

}  // namespace

uint64_t kvm_default_mpidr(uint32_t index) {
  return uint64_t{index & 0x0f} | (uint64_t{(index >> 4) & 0xff} << 8) |
         (uint64_t{(index >> 12) & 0xff} << 16);
}

uint32_t spi_cell(uint32_t intid, std::string_view what) {
  if (intid < kFirstSpiIntid) {
    throw UserError(fmt::format(
        "{}: interrupt {} is not an SPI INTID: the description uses INTIDs, where SPIs start at "
        "32 (device tree SPI {} is INTID {})",
        what, intid, intid, intid + kFirstSpiIntid));
  }
  if (intid > kLastSpiIntid) {
    throw UserError(fmt::format("{}: interrupt {} is beyond the last SPI INTID ({})", what, intid,
                                kLastSpiIntid));
  }
  return intid - kFirstSpiIntid;
}

std::vector<uint8_t> build_fdt(const FdtMachine& machine) {
  validate(machine);
  FdtNode root("");
  root.string("compatible", "linux,dummy-virt")
      .u32("#address-cells", 2)
      .u32("#size-cells", 2)
      .u32("interrupt-parent", kGicPhandle);
  root.child(chosen_node(machine));
  for (const auto& range : machine.memory) root.child(memory_node(range));
  root.child(cpus_node(machine)).child(psci_node()).child(timer_node(machine));
  root.child(gic_node(machine.gic));
  if (machine.uart) root.child(clock_node(*machine.uart)).child(uart_node(*machine.uart));
  for (const auto& device : machine.virtio) root.child(virtio_node(device, std::nullopt));
  return serialize_fdt(root);
}

namespace {

void replace_memory(FdtEditor& editor, const FdtMachine& machine) {
  for (;;) {
    const int node =
        fdt_node_offset_by_prop_value(editor.fdt(), -1, "device_type", "memory", sizeof("memory"));
    if (node < 0) break;
    editor.remove_node(node);
  }
  // Added in reverse: each lands first under the root.
  for (auto range = machine.memory.rbegin(); range != machine.memory.rend(); ++range) {
    editor.replace(0, memory_node(*range));
  }
}

void update_chosen(FdtEditor& editor, const FdtMachine& machine) {
  if (editor.path_offset("/chosen") < 0) editor.add(0, FdtNode("chosen"));
  const FdtNode wanted = chosen_node(machine);
  const int chosen = editor.path_offset("/chosen");
  editor.remove_property(chosen, "linux,initrd-start");
  editor.remove_property(chosen, "linux,initrd-end");
  for (const FdtProperty& p : wanted.properties()) {
    // The user's tree knows its own console; keep its stdout-path.
    if (p.name == "stdout-path") continue;
    editor.set(editor.path_offset("/chosen"), p);
  }
}

bool has_compatible(const FdtEditor& editor, std::initializer_list<const char*> compatibles) {
  return std::any_of(compatibles.begin(), compatibles.end(), [&](const char* c) {
    return fdt_node_offset_by_compatible(editor.fdt(), -1, c) >= 0;
  });
}

// The phandle of the interrupt controller devices we add use; nullopt when the root's
// interrupt-parent already points at it.
std::optional<uint32_t> interrupt_parent_for_new_nodes(const FdtEditor& editor,
                                                       const std::string& path) {
  const void* fdt = editor.fdt();
  int gic = -1;
  std::optional<uint32_t> explicit_parent;
  int len = 0;
  if (const auto* cell = static_cast<const fdt32_t*>(fdt_getprop(fdt, 0, "interrupt-parent", &len));
      cell != nullptr && len == sizeof(fdt32_t)) {
    gic = fdt_node_offset_by_phandle(fdt, fdt32_to_cpu(*cell));
  } else {
    gic = fdt_node_offset_by_prop_value(fdt, -1, "interrupt-controller", "", 0);
    if (gic >= 0) {
      const uint32_t phandle = fdt_get_phandle(fdt, gic);
      if (phandle == 0) {
        throw UserError(
            fmt::format("{}: the interrupt controller has no phandle to refer to", path));
      }
      explicit_parent = phandle;
    }
  }
  if (gic < 0) {
    throw UserError(fmt::format("{}: no interrupt controller (GIC) for the added devices", path));
  }
  const auto* cells = static_cast<const fdt32_t*>(fdt_getprop(fdt, gic, "#interrupt-cells", &len));
  if (cells == nullptr || len != sizeof(fdt32_t) || fdt32_to_cpu(*cells) != 3) {
    throw UserError(
        fmt::format("{}: the interrupt controller {} does not have #interrupt-cells = <3> (a GIC)",
                    path, fdt_get_name(fdt, gic, nullptr)));
  }
  return explicit_parent;
}

void add_virtio(FdtEditor& editor, const FdtMachine& machine, std::optional<uint32_t> parent) {
  for (auto device = machine.virtio.rbegin(); device != machine.virtio.rend(); ++device) {
    editor.replace(0, virtio_node(*device, parent));
  }
}

}  // namespace

std::vector<uint8_t> patch_fdt(std::span<const uint8_t> user_dtb, const FdtMachine& machine,
                               const std::string& path) {
  validate(machine);
  FdtEditor editor(user_dtb, path);
  // Present means a node with the binding's compatible, or any node of the name we would add.
  const bool needs_timer = !has_compatible(editor, {"arm,armv8-timer", "arm,armv7-timer"}) &&
                           editor.path_offset("/timer") < 0;
  const bool needs_psci = !has_compatible(editor, {"arm,psci-1.0", "arm,psci-0.2", "arm,psci"}) &&
                          editor.path_offset("/psci") < 0;
  const bool needs_gic = !machine.virtio.empty() || needs_timer;
  const std::optional<uint32_t> parent =
      needs_gic ? interrupt_parent_for_new_nodes(editor, path) : std::nullopt;

  add_virtio(editor, machine, parent);
  if (needs_timer) {
    FdtNode timer = timer_node(machine);
    if (parent) timer.u32("interrupt-parent", *parent);
    editor.add(0, timer);
  }
  if (needs_psci) editor.add(0, psci_node());
  if (editor.path_offset("/cpus") < 0) editor.add(0, cpus_node(machine));
  replace_memory(editor, machine);
  update_chosen(editor, machine);

  std::vector<uint8_t> blob = editor.finish();
  if (blob.size() > kDtbMaxSize) {
    throw UserError(fmt::format("{}: the patched device tree is {}, over the arm64 limit of 2 MiB",
                                path, format_size(blob.size())));
  }
  return blob;
}

}  // namespace libvmm::aarch64
