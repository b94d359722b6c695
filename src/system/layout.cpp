// SystemDescription::layout(): the resolved layout `vmm check` prints, placing devices exactly
// as Vm does (virtio-mmio slots from the machine's base, interrupt lines in the machine's
// order, skipping lines wired to host event sources).
#include <fmt/format.h>

#include <algorithm>
#include <sstream>

#include "../arch/machine.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/system/description.hpp"
#include "libvmm/virtio/net.hpp"

namespace libvmm {
namespace {

std::string backing(const MemoryRegionSpec& r) {
  switch (r.backing) {
    case MemoryRegionSpec::Backing::memfd:
      return r.page_size == 2 * MiB ? "memfd, 2 MiB huge pages" : "memfd";
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
               const Machine& machine) {
  const VmConfig& c = vm.config;
  out << fmt::format("virtual machine '{}' (id {}): {} {} vCPU{}\n", c.name, vm.id, c.vcpus,
                     machine.name(), c.vcpus == 1 ? "" : "s");
  out << fmt::format("  kernel   {}\n", c.kernel.string());
  if (!c.initrd.empty()) out << fmt::format("  initrd   {}\n", c.initrd.string());
  if (!c.cmdline.empty()) out << fmt::format("  cmdline  \"{}\"\n", c.cmdline);
  bool ram_done = false;
  for (const MapSpec& m : vm.maps) {
    const MemoryRegionSpec* r = d.find_region(m.region);
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
  out << fmt::format("  serial   {} -> {}\n", machine.serial_name(), c.serial);
  if (vm.gic_version) out << fmt::format("  gic      v{}\n", *vm.gic_version);
  if (!vm.dtb.empty()) out << fmt::format("  dtb      {} (patched)\n", vm.dtb.string());

  std::vector<uint32_t> lines = machine.device_irqs();
  std::erase_if(lines, [&vm](uint32_t n) {
    return std::any_of(vm.irqs.begin(), vm.irqs.end(),
                       [n](const IrqSpec& q) { return q.irq == n; });
  });
  size_t slot = 0;
  auto device = [&](const std::string& what) {
    const uint64_t base = machine.virtio_mmio_base() + slot * kVirtioMmioSlot;
    const std::string irq = slot < lines.size() ? std::to_string(lines[slot]) : "none left";
    out << fmt::format("  virtio   [{:#012x}, {:#012x}) IRQ {:>2} {}\n", base,
                       base + kVirtioMmioSlot, irq, what);
    ++slot;
  };
  for (size_t i = 0; i < c.disks.size(); ++i) {
    const BlockConfig& b = c.disks[i];
    device(fmt::format("virtio-blk vd{} {}{}", static_cast<char>('a' + i), b.path,
                       b.readonly ? " (read-only)" : ""));
  }
  if (!c.console.empty()) device(fmt::format("virtio-console hvc0 -> {}", c.console));
  for (size_t i = 0; i < c.nets.size(); ++i) {
    const NetConfig& n = c.nets[i];
    device(fmt::format("virtio-net eth{} tap {} MAC {} MTU {}", i, n.tap,
                       format_mac(n.mac.value_or(default_mac(c.name, i))), n.mtu));
  }
  for (const IrqSpec& q : vm.irqs) {
    out << fmt::format("  irq      {} <- {} {}\n", q.irq, source_name(q.source),
                       q.source == IrqSpec::Source::eventfd ? q.name : q.path);
  }
  for (const VfioSpec& v : vm.vfio) {
    out << fmt::format("  vfio     {} (not yet supported: vmm run refuses it)\n", v.device);
  }
}

}  // namespace

std::string SystemDescription::layout() const {
  const auto machine = make_host_machine();
  std::ostringstream out;
  out << fmt::format("system {}\n", file.empty() ? "(from flags)" : file);
  out << "memory regions:\n";
  for (const auto& r : regions) {
    out << fmt::format("  {:<16} {:>10}  {}{}\n", r.name, format_size(r.size), backing(r),
                       r.phys_addr ? fmt::format(", phys_addr {:#x}", *r.phys_addr) : "");
  }
  for (const auto& pd : domains) {
    out << fmt::format("protection domain '{}' (this vmm process)\n", pd.name);
    for (const auto& m : pd.maps) {
      out << fmt::format("  vmm map  '{}' {}{}\n", m.region, m.perms,
                         m.setvar_vaddr.empty() ? "" : " as " + m.setvar_vaddr);
    }
    for (const auto& vm : pd.vms) vm_layout(out, *this, vm, *machine);
  }
  return out.str();
}

}  // namespace libvmm
