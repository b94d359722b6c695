#include "libvmm/arch/riscv64/fdt.hpp"

#include <fmt/format.h>
#include <libfdt.h>

#include <algorithm>
#include <stdexcept>
#include <string_view>

#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"

namespace libvmm::riscv64 {
namespace {

// The ISA manual's canonical order of single-letter extensions. S and U (privilege modes in
// misa) are not extensions riscv,isa lists.
constexpr std::string_view kCanonicalLetters = "iemafdqlcbkjtpvh";

constexpr uint32_t kAplicEdgeRising = 1;  // IRQ_TYPE_EDGE_RISING
constexpr uint32_t kAplicLevelHigh = 4;   // IRQ_TYPE_LEVEL_HIGH

std::string cpu_intc_label(uint32_t hart) {
  return fmt::format("cpu{}-intc", hart);
}

void validate(const FdtMachine& machine) {
  if (machine.memory.empty()) throw UserError("device tree: the machine has no memory");
  if (machine.cpus == 0) throw UserError("device tree: the machine has no harts");
  if (!machine.isa.starts_with("rv64") || machine.isa.size() < 5 ||
      machine.isa.find_first_of(std::string_view(" ,\0", 3)) != std::string::npos) {
    throw std::invalid_argument(
        fmt::format("device tree: '{}' is not a riscv,isa string", machine.isa));
  }
  if (machine.timebase_hz == 0 || machine.timebase_hz > UINT32_MAX) {
    throw std::invalid_argument(
        fmt::format("device tree: timebase frequency {} does not fit a cell", machine.timebase_hz));
  }
  if (machine.irqchip.sources < 2) {
    throw std::invalid_argument("device tree: the interrupt controller has no sources");
  }
}

FdtNode memory_node(const GpaRange& range) {
  FdtNode node(node_name("memory", range.gpa));
  node.string("device_type", "memory").reg({{range.gpa, range.size}});
  return node;
}

FdtNode cpus_node(FdtWriter& fdt, const FdtMachine& machine) {
  FdtNode cpus("cpus");
  cpus.u32("#address-cells", 1)
      .u32("#size-cells", 0)
      .u32("timebase-frequency", static_cast<uint32_t>(machine.timebase_hz));
  for (uint32_t hart = 0; hart < machine.cpus; ++hart) {
    // Each hart's local controller is a root of the interrupt tree: its interrupt-parent is
    // itself, not the platform controller the root names for the devices (which Linux would
    // take for its parent, and then find no root: "No interrupt controller found").
    const uint32_t phandle = fdt.phandle(cpu_intc_label(hart));
    FdtNode intc("interrupt-controller");
    intc.u32("#interrupt-cells", 1)
        .u32("#address-cells", 0)
        .empty("interrupt-controller")
        .string("compatible", "riscv,cpu-intc")
        .u32("interrupt-parent", phandle)
        .u32("phandle", phandle);
    FdtNode cpu(node_name("cpu", hart));
    cpu.string("device_type", "cpu")
        .u32("reg", hart)
        .string("status", "okay")
        .string("compatible", "riscv")
        .string("riscv,isa", machine.isa)
        .string("mmu-type", machine.mmu_type)
        .child(std::move(intc));
    cpus.child(std::move(cpu));
  }
  return cpus;
}

// <&cpuN-intc 9> for every hart: each one's supervisor external interrupt.
std::vector<uint32_t> supervisor_externals(FdtWriter& fdt, uint32_t cpus) {
  std::vector<uint32_t> cells;
  for (uint32_t hart = 0; hart < cpus; ++hart) {
    cells.push_back(fdt.phandle(cpu_intc_label(hart)));
    cells.push_back(kSupervisorExternalIrq);
  }
  return cells;
}

}  // namespace

std::string riscv_isa_string(uint64_t letters, const std::vector<std::string>& extensions) {
  std::string isa = "rv64";
  for (char letter : kCanonicalLetters) {
    if ((letters >> (letter - 'a')) & 1) isa.push_back(letter);
  }
  for (const std::string& extension : extensions) {
    isa.push_back('_');
    isa.append(extension);
  }
  return isa;
}

std::optional<std::string> mmu_type_of_satp_mode(uint64_t satp_mode) {
  switch (satp_mode) {
    case 8:
      return "riscv,sv39";
    case 9:
      return "riscv,sv48";
    case 10:
      return "riscv,sv57";
    default:
      return std::nullopt;
  }
}

void IrqchipFdt::describe_fdt(FdtWriter& fdt) const {
  const uint32_t phandle = fdt.phandle("irqchip");
  fdt.root().u32("interrupt-parent", phandle);
  const uint32_t ndev = chip_.sources - 1;
  if (chip_.kind == IrqchipKind::plic) {
    FdtNode plic(node_name("plic", chip_.base));
    plic.strings("compatible", {"sifive,plic-1.0.0", "riscv,plic0"})
        .reg({{chip_.base, chip_.size}})
        .empty("interrupt-controller")
        .u32("#interrupt-cells", 1)
        .u32("#address-cells", 0)
        .cells("interrupts-extended", supervisor_externals(fdt, cpus_))
        .u32("riscv,ndev", ndev)
        .u32("phandle", phandle);
    fdt.add(std::move(plic));
    return;
  }
  const uint32_t imsic = fdt.phandle("imsic");
  FdtNode imsics(node_name("imsics", chip_.imsic_base));
  imsics.string("compatible", "riscv,imsics")
      .reg({{chip_.imsic_base, chip_.imsic_stride * cpus_}})
      .empty("interrupt-controller")
      .u32("#interrupt-cells", 0)
      .u32("#address-cells", 0)
      .empty("msi-controller")
      .u32("#msi-cells", 0)
      .cells("interrupts-extended", supervisor_externals(fdt, cpus_))
      .u32("riscv,num-ids", chip_.imsic_ids)
      .u32("phandle", imsic);
  fdt.add(std::move(imsics));
  FdtNode aplic(node_name("aplic", chip_.base));
  aplic.string("compatible", "riscv,aplic")
      .reg({{chip_.base, chip_.size}})
      .empty("interrupt-controller")
      .u32("#interrupt-cells", 2)
      .u32("#address-cells", 0)
      .u32("msi-parent", imsic)
      .u32("riscv,num-sources", ndev)
      .u32("phandle", phandle);
  fdt.add(std::move(aplic));
}

std::vector<uint32_t> IrqchipFdt::interrupt_cells(uint32_t number, FdtTrigger trigger,
                                                  std::string_view what) const {
  if (number == 0 || number >= chip_.sources) {
    throw UserError(fmt::format("{}: interrupt {} is not a source of the {} (1-{})", what, number,
                                chip_.kind == IrqchipKind::plic ? "PLIC" : "APLIC",
                                chip_.sources - 1));
  }
  if (chip_.kind == IrqchipKind::plic) return {number};
  return {number, trigger == FdtTrigger::level_high ? kAplicLevelHigh : kAplicEdgeRising};
}

void Uart16550Fdt::describe_fdt(FdtWriter& fdt) const {
  const std::string what = node_name("serial", base);
  std::vector<uint32_t> interrupts = fdt.interrupts(irq, FdtTrigger::level_high, what);
  fdt.claim_address(base, what);
  FdtNode node(what);
  node.string("compatible", "ns16550a")
      .reg({{base, size}})
      .cells("interrupts", std::move(interrupts))
      .u32("clock-frequency", clock_hz);
  fdt.node("chosen").string("stdout-path", fmt::format("/{}", node.name()));
  fdt.add(std::move(node));
}

namespace {

// The whole tree in `fdt`: the machine's nodes, then the interrupt controller's, the board's
// and the devices' own; returns the index of the first device node under the root.
size_t describe(FdtWriter& fdt, const FdtMachine& machine, const IrqchipFdt& irqchip) {
  validate(machine);
  fdt.root()
      .string("compatible", "riscv-virtio")
      .string("model", "libvmm riscv64 (QEMU virt layout)")
      .u32("#address-cells", 2)
      .u32("#size-cells", 2);
  FdtNode& chosen = fdt.node("chosen");  // first; the console adds its stdout-path
  if (!machine.bootargs.empty()) chosen.string("bootargs", machine.bootargs);
  if (machine.initrd && machine.initrd->size != 0) {
    chosen.u64("linux,initrd-start", machine.initrd->gpa)
        .u64("linux,initrd-end", machine.initrd->end());
  }
  for (const auto& range : machine.memory) fdt.add(memory_node(range));
  fdt.add(cpus_node(fdt, machine));
  irqchip.describe_fdt(fdt);
  for (const auto& part : machine.board) part->describe_fdt(fdt);
  const size_t first_device = fdt.root().children().size();
  for (const auto& device : machine.devices) device->describe_fdt(fdt);
  return first_device;
}

}  // namespace

std::vector<uint8_t> build_fdt(const FdtMachine& machine) {
  const IrqchipFdt irqchip(machine.irqchip, machine.cpus);
  FdtWriter fdt(&irqchip);
  describe(fdt, machine, irqchip);
  return fdt.blob();
}

namespace {

std::string_view chip_name(IrqchipKind kind) {
  return kind == IrqchipKind::plic ? "a PLIC" : "an APLIC";
}

// The interrupt-controller node of the hart whose /cpus child has reg = `hart`; -1 if none.
int hart_intc(const FdtEditor& editor, uint32_t hart) {
  const int cpus = editor.path_offset("/cpus");
  int child = 0;
  fdt_for_each_subnode(child, editor.fdt(), cpus) {
    if (editor.string(child, "device_type") != "cpu" || editor.u32(child, "reg") != hart) continue;
    int intc = 0;
    fdt_for_each_subnode(intc, editor.fdt(), child) {
      if (fdt_node_check_compatible(editor.fdt(), intc, "riscv,cpu-intc") == 0) return intc;
    }
  }
  return -1;
}

// vmm's PLIC has one context per hart, its supervisor external interrupt (9), in hart order: a
// tree whose PLIC lists others (a board's M-mode contexts first) would have Linux enable its
// interrupts in contexts that reach no hart.
void check_plic_contexts(const FdtEditor& editor, int plic, const char* name,
                         const std::string& path) {
  int len = 0;
  const auto* cells =
      static_cast<const fdt32_t*>(fdt_getprop(editor.fdt(), plic, "interrupts-extended", &len));
  const size_t count = cells == nullptr || len < 0 ? 0 : static_cast<size_t>(len) / 8;
  for (size_t context = 0; context < count; ++context) {
    const uint32_t phandle = fdt32_to_cpu(cells[2 * context]);
    const uint32_t irq = fdt32_to_cpu(cells[2 * context + 1]);
    const int intc = hart_intc(editor, static_cast<uint32_t>(context));
    if (irq != kSupervisorExternalIrq || intc < 0 ||
        fdt_node_offset_by_phandle(editor.fdt(), phandle) != intc) {
      throw UserError(fmt::format(
          "{}: the PLIC {}'s context {} is <{:#x} {}>, not hart {}'s supervisor external "
          "interrupt: vmm's PLIC has one context per hart, <&hart-intc {}>, in hart order",
          path, name, context, phandle, irq, context, kSupervisorExternalIrq));
    }
  }
  if (count == 0) {
    throw UserError(
        fmt::format("{}: the PLIC {} names no contexts (interrupts-extended)", path, name));
  }
}

// The user's platform interrupt controller: the root's interrupt-parent, else the first
// interrupt controller that is neither a hart's own nor an IMSIC. Devices we add are wired to
// it, so it must be the controller the VM has (kind and address); returns its phandle when the
// root does not name it (the added nodes then need their own interrupt-parent).
std::optional<uint32_t> check_user_irqchip(const FdtEditor& editor, const IrqchipDescription& chip,
                                           const std::string& path) {
  const void* fdt = editor.fdt();
  int node = -1;
  std::optional<uint32_t> explicit_parent;
  if (const auto parent = editor.u32(0, "interrupt-parent")) {
    node = fdt_node_offset_by_phandle(fdt, *parent);
  } else {
    for (node = fdt_node_offset_by_prop_value(fdt, -1, "interrupt-controller", "", 0); node >= 0;
         node = fdt_node_offset_by_prop_value(fdt, node, "interrupt-controller", "", 0)) {
      if (fdt_node_check_compatible(fdt, node, "riscv,cpu-intc") != 0 &&
          fdt_node_check_compatible(fdt, node, "riscv,imsics") != 0) {
        break;
      }
    }
    if (node >= 0) explicit_parent = fdt_get_phandle(fdt, node);
  }
  if (node < 0) {
    throw UserError(
        fmt::format("{}: no interrupt controller (PLIC or APLIC) for the added devices", path));
  }
  const char* name = fdt_get_name(fdt, node, nullptr);
  const bool plic = fdt_node_check_compatible(fdt, node, "riscv,plic0") == 0 ||
                    fdt_node_check_compatible(fdt, node, "sifive,plic-1.0.0") == 0;
  const bool aplic = fdt_node_check_compatible(fdt, node, "riscv,aplic") == 0;
  if (!plic && !aplic) {
    throw UserError(
        fmt::format("{}: the interrupt controller {} is neither a PLIC nor an APLIC", path, name));
  }
  const IrqchipKind kind = plic ? IrqchipKind::plic : IrqchipKind::aia;
  if (kind != chip.kind) {
    throw UserError(fmt::format(
        "{}: the interrupt controller {} is {}, the VM has {} (--irqchip {} for this tree)", path,
        name, chip_name(kind), chip_name(chip.kind), kind == IrqchipKind::plic ? "plic" : "aia"));
  }
  int len = 0;
  const auto* reg = static_cast<const fdt32_t*>(fdt_getprop(fdt, node, "reg", &len));
  const uint64_t base = reg != nullptr && len >= 8
                            ? (uint64_t{fdt32_to_cpu(reg[0])} << 32) | fdt32_to_cpu(reg[1])
                            : UINT64_MAX;
  if (base != chip.base) {
    throw UserError(
        fmt::format("{}: the interrupt controller {} is not at {:#x}, where the VM has it", path,
                    name, chip.base));
  }
  if (explicit_parent == 0u) {
    throw UserError(
        fmt::format("{}: the interrupt controller {} has no phandle for the added devices to name",
                    path, name));
  }
  if (kind == IrqchipKind::plic) check_plic_contexts(editor, node, name, path);
  if (kind == IrqchipKind::aia && fdt_getprop(fdt, node, "msi-parent", nullptr) == nullptr) {
    throw UserError(fmt::format(
        "{}: the APLIC {} delivers interrupts itself (no msi-parent); this VM's APLIC sends them "
        "as MSIs to the harts' IMSICs",
        path, name));
  }
  return explicit_parent;
}

void replace_memory(FdtEditor& editor, const FdtMachine& machine) {
  for (;;) {
    const int node =
        fdt_node_offset_by_prop_value(editor.fdt(), -1, "device_type", "memory", sizeof("memory"));
    if (node < 0) break;
    editor.remove_node(node);
  }
  for (auto range = machine.memory.rbegin(); range != machine.memory.rend(); ++range) {
    editor.replace(0, memory_node(*range));
  }
}

void update_chosen(FdtEditor& editor, const FdtNode& wanted) {
  if (editor.path_offset("/chosen") < 0) editor.add(0, FdtNode("chosen"));
  editor.remove_property(editor.path_offset("/chosen"), "linux,initrd-start");
  editor.remove_property(editor.path_offset("/chosen"), "linux,initrd-end");
  for (const FdtProperty& p : wanted.properties()) {
    if (p.name == "stdout-path") continue;  // the user's tree knows its own console
    editor.set(editor.path_offset("/chosen"), p);
  }
}

}  // namespace

std::vector<uint8_t> patch_fdt(std::span<const uint8_t> user_dtb, const FdtMachine& machine,
                               const std::string& path) {
  const IrqchipFdt irqchip(machine.irqchip, machine.cpus);
  FdtWriter ours(&irqchip);
  const size_t first_device = describe(ours, machine, irqchip);
  const std::vector<FdtNode>& nodes = ours.root().children();
  const std::vector<FdtNode> devices(nodes.begin() + static_cast<ptrdiff_t>(first_device),
                                     nodes.end());

  FdtEditor editor(user_dtb, path);
  if (editor.path_offset("/cpus") < 0) {
    throw UserError(fmt::format(
        "{}: no /cpus node (a RISC-V tree names each hart and its interrupt controller there)",
        path));
  }
  // A hart the tree lacks is never started; one the VM lacks fails to come up.
  if (const uint32_t listed = editor.enabled_cpus().value_or(0); listed != machine.cpus) {
    throw UserError(fmt::format("{}: /cpus lists {} hart{}, the VM has {} vCPU{} (--vcpus)", path,
                                listed, listed == 1 ? "" : "s", machine.cpus,
                                machine.cpus == 1 ? "" : "s"));
  }
  const std::optional<uint32_t> parent =
      devices.empty() ? std::nullopt : check_user_irqchip(editor, machine.irqchip, path);
  for (auto node = devices.rbegin(); node != devices.rend(); ++node) {
    FdtNode device = *node;
    if (parent) device.u32("interrupt-parent", *parent);
    editor.replace(0, device);
  }
  // The harts count time at the rate KVM says, whatever the tree was written for.
  FdtNode timebase("cpus");
  timebase.u32("timebase-frequency", static_cast<uint32_t>(machine.timebase_hz));
  editor.set(editor.path_offset("/cpus"), timebase.properties().front());
  replace_memory(editor, machine);
  update_chosen(editor, *ours.root().find_child("chosen"));

  std::vector<uint8_t> blob = editor.finish();
  if (blob.size() > kDtbMaxSize) {
    throw UserError(
        fmt::format("{}: the patched device tree is {}, over the riscv64 limit of 2 MiB", path,
                    format_size(blob.size())));
  }
  return blob;
}

}  // namespace libvmm::riscv64
