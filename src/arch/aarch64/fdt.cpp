#include "libvmm/arch/aarch64/fdt.hpp"

#include <fmt/format.h>
#include <libfdt.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"

namespace libvmm::aarch64 {
namespace {

constexpr uint64_t kMpidrAffinityMask = 0xff00ffffffULL;  // Aff3, Aff2, Aff1, Aff0

std::vector<uint64_t> cpu_affinities(const FdtMachine& machine) {
  std::vector<uint64_t> affinities;
  for (uint32_t i = 0; i < machine.cpus; ++i) {
    const uint64_t mpidr =
        machine.cpu_mpidrs.empty() ? kvm_default_mpidr(i) : machine.cpu_mpidrs[i];
    affinities.push_back(mpidr & kMpidrAffinityMask);
  }
  return affinities;
}

// A description mistake found here is the user's (their description file or flags). The
// devices' interrupts and addresses are checked as they describe themselves (FdtWriter).
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
}

FdtNode memory_node(const GpaRange& range) {
  FdtNode node(node_name("memory", range.gpa));
  node.string("device_type", "memory").reg({{range.gpa, range.size}});
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

FdtNode timer_node(const FdtMachine& machine, const GicFdt& gic) {
  const uint32_t flags = gic.ppi_flags(FdtTrigger::level_high, machine.cpus);
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

// The whole tree in `fdt`: the machine's nodes, then the GIC's, the board's and the devices'
// own; returns the index of the first device node under the root.
size_t describe(FdtWriter& fdt, const FdtMachine& machine, const GicFdt& gic) {
  validate(machine);
  fdt.root()
      .string("compatible", "linux,dummy-virt")
      .u32("#address-cells", 2)
      .u32("#size-cells", 2);
  FdtNode& chosen = fdt.node("chosen");  // first; the console adds its stdout-path
  if (!machine.bootargs.empty()) chosen.string("bootargs", machine.bootargs);
  if (machine.initrd && machine.initrd->size != 0) {
    chosen.u64("linux,initrd-start", machine.initrd->gpa)
        .u64("linux,initrd-end", machine.initrd->end());
  }
  for (const auto& range : machine.memory) fdt.add(memory_node(range));
  fdt.add(cpus_node(machine));
  fdt.add(psci_node());
  fdt.add(timer_node(machine, gic));
  gic.describe_fdt(fdt);
  for (const auto& part : machine.board) part->describe_fdt(fdt);
  const size_t first_device = fdt.root().children().size();
  for (const auto& device : machine.devices) device->describe_fdt(fdt);
  return first_device;
}

}  // namespace

uint64_t kvm_default_mpidr(uint32_t index) {
  return uint64_t{index & 0x0f} | (uint64_t{(index >> 4) & 0xff} << 8) |
         (uint64_t{(index >> 12) & 0xff} << 16);
}

std::vector<uint8_t> build_fdt(const FdtMachine& machine) {
  const GicFdt gic(machine.gic);
  FdtWriter fdt(&gic);
  describe(fdt, machine, gic);
  return fdt.blob();
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

void update_chosen(FdtEditor& editor, const FdtNode& wanted) {
  if (editor.path_offset("/chosen") < 0) editor.add(0, FdtNode("chosen"));
  const int chosen = editor.path_offset("/chosen");
  editor.remove_property(chosen, "linux,initrd-start");
  editor.remove_property(chosen, "linux,initrd-end");
  for (const FdtProperty& p : wanted.properties()) {
    // The user's tree knows its own console; keep its stdout-path.
    if (p.name == "stdout-path") continue;
    editor.set(editor.path_offset("/chosen"), p);
  }
}

// The first node with one of `compatibles`, tried in their order; -1 if none.
int node_by_compatible(const void* fdt, std::span<const char* const> compatibles) {
  for (const char* c : compatibles) {
    const int node = fdt_node_offset_by_compatible(fdt, -1, c);
    if (node >= 0) return node;
  }
  return -1;
}

bool has_compatible(const FdtEditor& editor, std::initializer_list<const char*> compatibles) {
  return node_by_compatible(editor.fdt(), {compatibles.begin(), compatibles.size()}) >= 0;
}

// Each GIC version's node, and the architected timer's, by their bindings' compatibles.
constexpr std::array<const char*, 4> kGicV2Compatibles{"arm,gic-400", "arm,cortex-a15-gic",
                                                       "arm,cortex-a7-gic", "arm,cortex-a9-gic"};
constexpr std::array<const char*, 1> kGicV3Compatibles{"arm,gic-v3"};
constexpr std::array<const char*, 2> kTimerCompatibles{"arm,armv8-timer", "arm,armv7-timer"};
std::span<const char* const> gic_compatibles(GicVersion version) {
  if (version == GicVersion::v3) return kGicV3Compatibles;
  return kGicV2Compatibles;
}

// The phandle of the interrupt controller devices we add use; nullopt when the root's
// interrupt-parent already points at it.
std::optional<uint32_t> interrupt_parent_for_new_nodes(const FdtEditor& editor,
                                                       const std::string& path) {
  const void* fdt = editor.fdt();
  int gic = -1;
  std::optional<uint32_t> explicit_parent;
  if (const auto parent = editor.u32(0, "interrupt-parent")) {
    gic = fdt_node_offset_by_phandle(fdt, *parent);
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
  if (editor.u32(gic, "#interrupt-cells") != 3u) {
    throw UserError(
        fmt::format("{}: the interrupt controller {} does not have #interrupt-cells = <3> (a GIC)",
                    path, fdt_get_name(fdt, gic, nullptr)));
  }
  return explicit_parent;
}

// KVM implements PSCI for its guests through HVC: a user's PSCI node that says "smc" (a tree
// written for a board whose firmware does, such as libvmm's QEMU virt examples) is pointed at
// KVM, or the guest could neither start secondary CPUs nor power off.
void use_kvm_psci_conduit(FdtEditor& editor) {
  for (const char* compatible : {"arm,psci-1.0", "arm,psci-0.2", "arm,psci"}) {
    const int psci = fdt_node_offset_by_compatible(editor.fdt(), -1, compatible);
    if (psci < 0) continue;
    if (editor.string(psci, "method") != "hvc") {
      editor.set(psci, FdtProperty{"method", {'h', 'v', 'c', '\0'}});
    }
    return;
  }
}

// The (address, size) pairs of a node's reg, in the root's 2/2 cells; empty if it has none.
std::vector<std::pair<uint64_t, uint64_t>> reg_pairs(const void* fdt, int node) {
  int length = 0;
  const auto* cells = static_cast<const fdt32_t*>(fdt_getprop(fdt, node, "reg", &length));
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  if (cells == nullptr || length < 0) return pairs;
  const auto count = static_cast<size_t>(length) / sizeof(fdt32_t);
  auto u64_at = [cells](size_t i) {
    return (uint64_t{fdt32_to_cpu(cells[i])} << 32) | fdt32_to_cpu(cells[i + 1]);
  };
  for (size_t i = 0; i + 4 <= count; i += 4) pairs.emplace_back(u64_at(i), u64_at(i + 2));
  return pairs;
}

// The user's GIC where KVM's is: a tree from another board (its distributor elsewhere) would
// boot a guest that finds no interrupt controller, and no word why. (A GIC below a bus node,
// whose reg its ranges would translate, is left alone.) Returns its node, or -1.
int check_user_gic(const void* fdt, const GicDescription& gic, const std::string& path) {
  const bool v3 = gic.version == GicVersion::v3;
  const int node = node_by_compatible(fdt, gic_compatibles(gic.version));
  if (node < 0 || fdt_parent_offset(fdt, node) != 0) return node;  // none: the VM's is added
  const auto reg = reg_pairs(fdt, node);
  const char* second = v3 ? "redistributors" : "CPU interface";
  // (A GICv2 CPU interface is written 0x2000 or 0x10000 long, both right; GICv3's redistributor
  // region must hold every vCPU's frames.)
  if (reg.size() < 2 || reg[0].first != gic.dist_base || reg[1].first != gic.cpu_or_redist_base ||
      (v3 && reg[1].second < gic.cpu_or_redist_size)) {
    throw UserError(fmt::format(
        "{}: its GIC's reg does not match this VM's: the distributor at {:#x} and the {} at "
        "{:#x}{}",
        path, gic.dist_base, second, gic.cpu_or_redist_base,
        v3 ? fmt::format(" ({:#x} bytes or more, for every vCPU)", gic.cpu_or_redist_size) : ""));
  }
  return node;
}

// The architected timer's four PPIs are the ones KVM raises (13, 14, 11, 10, in the binding's
// order); a user's timer node saying others leaves the guest without a clock tick. Read in the
// GIC's 3 interrupt cells (another count, e.g. GICv3's 4 with PPI partitions: left alone).
void check_user_timer(const FdtEditor& editor, int gic_node, const std::string& path) {
  const void* fdt = editor.fdt();
  const int node = node_by_compatible(fdt, kTimerCompatibles);
  if (node < 0 || gic_node < 0 || editor.u32(gic_node, "#interrupt-cells") != 3u) return;
  int length = 0;
  const auto* cells = static_cast<const fdt32_t*>(fdt_getprop(fdt, node, "interrupts", &length));
  const uint32_t expected[] = {kTimerSecurePhysIntid, kTimerNonSecurePhysIntid, kTimerVirtIntid,
                               kTimerHypIntid};
  bool matches = cells != nullptr && length >= static_cast<int>(4 * 3 * sizeof(fdt32_t));
  for (size_t i = 0; matches && i < 4; ++i) {
    matches = fdt32_to_cpu(cells[i * 3]) == kFdtIrqTypePpi &&
              fdt32_to_cpu(cells[i * 3 + 1]) == expected[i] - kFirstPpiIntid;
  }
  if (!matches) {
    throw UserError(fmt::format(
        "{}: its timer node's interrupts are not the PPIs KVM's timers raise ({}, {}, {}, {}: "
        "secure, non-secure, virtual and hypervisor physical timer); remove the node and vmm "
        "writes it",
        path, expected[0] - kFirstPpiIntid, expected[1] - kFirstPpiIntid,
        expected[2] - kFirstPpiIntid, expected[3] - kFirstPpiIntid));
  }
}

// What a user's tree must agree on with the VM, each a one-line refusal otherwise: the cells
// the memory and device nodes are written in, the GIC's version (a GICv2 tree on a GICv3 VM:
// a guest without interrupts, and no word why), and the CPUs (a vCPU the tree lacks stays off;
// a CPU it lists that the VM lacks fails to come up).
void check_user_tree(const FdtEditor& editor, const FdtMachine& machine, const std::string& path) {
  const void* fdt = editor.fdt();
  // Without the properties, the spec's defaults: 2 address cells, 1 size cell.
  const uint32_t address_cells = editor.u32(0, "#address-cells").value_or(2);
  const uint32_t size_cells = editor.u32(0, "#size-cells").value_or(1);
  if (address_cells != 2 || size_cells != 2) {
    throw UserError(fmt::format(
        "{}: the root's #address-cells/#size-cells are {}/{}; vmm writes the memory and device "
        "nodes with 2/2 (as QEMU's virt board does)",
        path, address_cells, size_cells));
  }
  const bool v3 = machine.gic.version == GicVersion::v3;
  const char* other = v3 ? "GICv2" : "GICv3";
  for (const char* compatible : gic_compatibles(v3 ? GicVersion::v2 : GicVersion::v3)) {
    if (fdt_node_offset_by_compatible(fdt, -1, compatible) >= 0) {
      throw UserError(
          fmt::format("{}: its interrupt controller is a {} (\"{}\"), this VM's is a "
                      "GICv{} (--gic)",
                      path, other, compatible, v3 ? 3 : 2));
    }
  }
  check_user_timer(editor, check_user_gic(fdt, machine.gic, path), path);
  const std::optional<uint32_t> enabled = editor.enabled_cpus();
  if (!enabled) return;  // /cpus is added from the machine
  if (const uint32_t listed = *enabled; listed != machine.cpus) {
    throw UserError(fmt::format("{}: /cpus lists {} CPU{}, the VM has {} vCPU{} (--vcpus)", path,
                                listed, listed == 1 ? "" : "s", machine.cpus,
                                machine.cpus == 1 ? "" : "s"));
  }
}

// The devices' nodes, each pointing at the user's GIC when the root does not.
void add_devices(FdtEditor& editor, const std::vector<FdtNode>& nodes,
                 std::optional<uint32_t> parent) {
  for (auto node = nodes.rbegin(); node != nodes.rend(); ++node) {
    FdtNode device = *node;
    if (parent) device.u32("interrupt-parent", *parent);
    editor.replace(0, device);
  }
}

}  // namespace

std::vector<uint8_t> patch_fdt(std::span<const uint8_t> user_dtb, const FdtMachine& machine,
                               const std::string& path) {
  // Our own tree, for the nodes that go into the user's (and its checks).
  const GicFdt gic(machine.gic);
  FdtWriter ours(&gic);
  const size_t first_device = describe(ours, machine, gic);
  const std::vector<FdtNode>& nodes = ours.root().children();
  const std::vector<FdtNode> devices(nodes.begin() + static_cast<ptrdiff_t>(first_device),
                                     nodes.end());

  FdtEditor editor(user_dtb, path);
  check_user_tree(editor, machine, path);
  // Present means a node with the binding's compatible, or any node of the name we would add.
  const bool needs_timer =
      node_by_compatible(editor.fdt(), kTimerCompatibles) < 0 && editor.path_offset("/timer") < 0;
  const bool needs_psci = !has_compatible(editor, {"arm,psci-1.0", "arm,psci-0.2", "arm,psci"}) &&
                          editor.path_offset("/psci") < 0;
  const bool needs_gic = !devices.empty() || needs_timer;
  const std::optional<uint32_t> parent =
      needs_gic ? interrupt_parent_for_new_nodes(editor, path) : std::nullopt;

  add_devices(editor, devices, parent);
  if (needs_timer) {
    FdtNode timer = timer_node(machine, gic);
    if (parent) timer.u32("interrupt-parent", *parent);
    editor.add(0, timer);
  }
  if (needs_psci) {
    editor.add(0, psci_node());
  } else {
    use_kvm_psci_conduit(editor);
  }
  if (editor.path_offset("/cpus") < 0) editor.add(0, cpus_node(machine));
  replace_memory(editor, machine);
  update_chosen(editor, *ours.root().find_child("chosen"));

  std::vector<uint8_t> blob = editor.finish();
  if (blob.size() > kDtbMaxSize) {
    throw UserError(fmt::format("{}: the patched device tree is {}, over the arm64 limit of 2 MiB",
                                path, format_size(blob.size())));
  }
  return blob;
}

}  // namespace libvmm::aarch64
