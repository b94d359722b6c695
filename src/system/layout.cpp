// SystemDescription::layout(): the resolved layout `vmm check` prints, with the devices where
// the resource planner puts them (the same plan Vm builds).
#include <fmt/format.h>

#include <algorithm>
#include <sstream>

#include "../arch/board.hpp"
#include "../vm/device_plan.hpp"
#include "libvmm/arch/machine_option.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/system/description.hpp"

namespace libvmm {
namespace {

std::string backing(const MemoryRegionSpec& r) {
  switch (r.backing) {
    case MemoryRegionSpec::Backing::memfd:
      // Backed as run time finds best (create_region): anonymous with THP, or a memfd.
      return r.page_size == 2 * MiB ? "private, 2 MiB huge pages (hugetlb)" : "private";
    case MemoryRegionSpec::Backing::host_file:
      return "host file " + r.path;
    case MemoryRegionSpec::Backing::shm:
      return "shm object " + r.path;
  }
  return "";
}

const char* source_name(IrqSpec::Source s) {
  switch (s) {
    case IrqSpec::Source::eventfd:
      return "eventfd";
    case IrqSpec::Source::fifo:
      return "fifo";
    case IrqSpec::Source::socket:
      return "socket";
  }
  return "";
}

void vm_layout(std::ostream& out, const SystemDescription& d, const VirtualMachineSpec& vm,
               const Board& machine, const Architecture& arch) {
  const VmConfig& c = vm.config;
  out << fmt::format("virtual machine '{}' (id {}): {} {} vCPU{}\n", c.name, vm.id, c.vcpus,
                     machine.name(), c.vcpus == 1 ? "" : "s");
  if (c.kernel.empty()) {
    out << "  kernel   (none: give it with vmm run FILE --kernel IMAGE)\n";
  } else {
    out << fmt::format("  kernel   {}\n", c.kernel.string());
  }
  for (const auto& [vcpu, cpu] : c.vcpu_host_cpus) {
    out << fmt::format("  vcpu {}   on host CPU {}\n", vcpu, cpu);
  }
  if (!c.initrd.empty()) out << fmt::format("  initrd   {}\n", c.initrd.string());
  if (!c.cmdline.empty()) out << fmt::format("  cmdline  \"{}\"\n", c.cmdline);
  bool ram_done = false;
  for (const MapSpec& m : vm.maps) {
    const MemoryRegionSpec* r = d.find_region(m.region);
    if (r == nullptr) continue;  // a valid description has none; layout() must not crash
    const uint64_t size = m.size.value_or(r->size);
    if (m.region == vm.ram_region && !ram_done) {
      ram_done = true;
      for (const RamRange& range : machine.ram_layout(size)) {
        out << fmt::format("  RAM      [{:#012x}, {:#012x}) '{}' {}\n", range.gpa,
                           range.gpa + range.size, r->name, m.perms);
      }
      continue;
    }
    const uint64_t gpa = m.vaddr.value_or(r->phys_addr.value_or(0));
    out << fmt::format("  map      [{:#012x}, {:#012x}) '{}' {}{}\n", gpa, gpa + size, r->name,
                       m.perms, m.readonly() ? " (read-only KVM slot)" : "");
  }
  for (const BoardMapSpec& b : vm.board_maps) {
    out << fmt::format("  board    '{}' at {:#x}: {} -> {}{}\n", b.region, b.guest_addr, b.device,
                       b.becomes, b.irq ? fmt::format(", IRQ {}", *b.irq) : "");
  }
  out << fmt::format("  serial   {} -> {}\n", machine.serial_name(), c.serial);
  for (const MachineOption* option : arch.options) {
    if (const DeviceSpec* spec = find_option_spec(c.machine_options, option->element())) {
      out << fmt::format("  {:<8} {}\n", option->element(), option->describe(*spec));
    }
  }

  // PCI functions interrupt through MSI-X unless a machine option gives them INTx lines (a
  // GICv2, the PLIC). Where the host decides (no option), MSI-X is what vmm asks for.
  const std::string intx_reason = pci_intx_reason(arch, c.machine_options);
  std::vector<uint32_t> taken;
  for (const IrqSpec& q : vm.irqs) taken.push_back(q.irq);
  for (const DevicePlacement& p :
       plan_devices(machine.memory_map(c.memory_size), c.devices, taken, !intx_reason.empty())) {
    if (p.slot.pci_device) {
      const std::string interrupts =
          !p.slot.pci_intx ? "MSI-X"
          : p.slot.irq     ? fmt::format("INTx on IRQ {} ({})", *p.slot.irq, intx_reason)
                           : fmt::format("INTx, no line left ({})", intx_reason);
      out << fmt::format("  virtio   PCI 00:{:02x}.0 {:<18} {}\n", *p.slot.pci_device, interrupts,
                         p.device.kind->describe(*p.device.spec, p.device.index, c.name));
      continue;
    }
    const std::string irq = p.slot.irq ? std::to_string(*p.slot.irq) : "none left";
    out << fmt::format("  virtio   [{:#012x}, {:#012x}) IRQ {:>2} {}\n", p.slot.base,
                       p.slot.base + p.slot.size, irq,
                       p.device.kind->describe(*p.device.spec, p.device.index, c.name));
  }
  for (const IrqSpec& q : vm.irqs) {
    out << fmt::format("  irq      {} <- {} {}\n", q.irq, source_name(q.source),
                       q.source == IrqSpec::Source::eventfd ? q.name : q.path);
  }
  for (const VfioSpec& v : vm.vfio) {
    out << fmt::format("  vfio     {} (a host PCI device passed through)\n", v.device);
  }
}

}  // namespace

std::string SystemDescription::layout() const {
  const Board* machine = arch.empty() ? &host_board() : find_board(arch);
  const Architecture* architecture = find_architecture(machine ? machine->name() : "");
  if (machine == nullptr || architecture == nullptr) return "";  // refused by problems()
  std::ostringstream out;
  out << fmt::format("system {}\n", file.empty() ? "(from flags)" : file);
  out << "memory regions:\n";
  auto board_device = [this](const std::string& name) {
    for (const VirtualMachineSpec* vm : vms()) {
      for (const BoardMapSpec& b : vm->board_maps) {
        if (b.region == name) return true;
      }
    }
    return false;
  };
  for (const auto& r : regions) {
    out << fmt::format(
        "  {:<16} {:>10}  {}{}\n", r.name, format_size(r.size),
        board_device(r.name) ? "the board's device (see its VM's board line)" : backing(r),
        r.phys_addr ? fmt::format(", phys_addr {:#x}", *r.phys_addr) : "");
  }
  for (const auto& pd : domains) {
    out << fmt::format("protection domain '{}' (this vmm process)\n", pd.name);
    if (!pd.program_image.empty()) {
      out << fmt::format("  program_image {}: not loaded (the VMM is this vmm process)\n",
                         pd.program_image);
    }
    if (pd.cpu) out << fmt::format("  runs on host CPU {}\n", *pd.cpu);
    for (const auto& m : pd.maps) {
      out << fmt::format("  vmm map  '{}' {}{}\n", m.region, m.perms,
                         m.setvar_vaddr.empty() ? "" : " as " + m.setvar_vaddr);
    }
    for (const auto& vm : pd.vms) vm_layout(out, *this, vm, *machine, *architecture);
  }
  return out.str();
}

}  // namespace libvmm
