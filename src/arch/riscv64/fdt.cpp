#include "libvmm/arch/riscv64/fdt.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <string_view>

#include "libvmm/core/error.hpp"

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
    FdtNode intc("interrupt-controller");
    intc.u32("#interrupt-cells", 1)
        .u32("#address-cells", 0)
        .empty("interrupt-controller")
        .string("compatible", "riscv,cpu-intc")
        .u32("phandle", fdt.phandle(cpu_intc_label(hart)));
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

std::vector<uint8_t> build_fdt(const FdtMachine& machine) {
  validate(machine);
  const IrqchipFdt irqchip(machine.irqchip, machine.cpus);
  FdtWriter fdt(&irqchip);
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
  for (const auto& device : machine.devices) device->describe_fdt(fdt);
  return fdt.blob();
}

}  // namespace libvmm::riscv64
