// Microkit descriptions as written (libvmm's QEMU virt examples, the manual's example): the
// maps of the real board's devices, the protection domain's interrupts and I/O ports, turned
// into what they are on KVM, or refused in one line that says what to use instead.
// (docs/SYSTEM_FORMAT.md, "Coming from libvmm / Microkit".)
#include <fmt/format.h>

#include <algorithm>

#include "../arch/board.hpp"
#include "libvmm/system/description.hpp"

namespace libvmm {
namespace {

constexpr uint64_t kCom1Port = 0x3f8;
constexpr uint64_t kCom1Ports = 8;
constexpr uint32_t kCom1Pin = 4;

std::string located(const SourceLocation& where, const std::string& what) {
  const std::string loc = where.str();
  return loc.empty() ? what : fmt::format("{}: {}", loc, what);
}

bool has_element(const VirtualMachineSpec& vm, std::string_view what) {
  return std::any_of(vm.element_locations.begin(), vm.element_locations.end(),
                     [what](const auto& e) { return e.first == what; });
}

// The board's UART, given to the VM by a map or an I/O port: its serial port, on the terminal
// unless the file says where (<serial>).
void give_serial(VirtualMachineSpec& vm, const SourceLocation& where) {
  if (has_element(vm, "serial")) return;
  vm.config.serial = "stdio";
  vm.element_locations.emplace_back("serial", where);
}

// The GICv2 virtual CPU interface mapped: the VM's vGIC is a v2.
void choose_gic_v2(VirtualMachineSpec& vm, const MapSpec& m, std::vector<std::string>& problems) {
  const std::string where = located(m.where, fmt::format("<map mr=\"{}\">", m.region));
  for (const DeviceSpec& spec : vm.config.machine_options) {
    if (spec.kind != "gic") continue;
    const std::string version = spec.value_or("version", "");
    if (version != "2" && version != "v2") {
      problems.push_back(fmt::format(
          "{}: the GICv2 virtual CPU interface asks for a GICv2, but {} asks for version {}; "
          "remove one",
          where, spec.where.empty() ? "<gic>" : spec.where, version));
    }
    return;
  }
  DeviceSpec gic;
  gic.kind = "gic";
  gic.where = where;
  gic.attributes.emplace_back("version", "2");
  vm.config.machine_options.push_back(std::move(gic));
}

void interpret_maps(const SystemDescription& d, VirtualMachineSpec& vm, const Board& board,
                    std::vector<std::string>& problems) {
  std::vector<MapSpec> kept;
  for (MapSpec& m : vm.maps) {
    const MemoryRegionSpec* r = d.find_region(m.region);
    // Only regions of plain memory at a fixed physical address can be a device's registers;
    // host-backed regions (path=, shm=) are this format's passthrough.
    if (r == nullptr || !r->phys_addr || r->backing != MemoryRegionSpec::Backing::memfd ||
        r->name == vm.ram_region) {
      kept.push_back(std::move(m));
      continue;
    }
    const uint64_t phys = *r->phys_addr;
    if (const std::optional<BoardDevice> device = board.device_at(phys)) {
      const uint64_t size = m.size.value_or(r->size);
      const uint64_t vaddr = m.vaddr.value_or(phys);
      // Checked here as the validator checks the maps it keeps (it never sees this one).
      if (const std::string why = m.perms_problem(); !why.empty()) {
        problems.push_back(located(m.where, why));
      }
      if (const std::string why = m.size_problem(); !why.empty()) {
        problems.push_back(located(m.where, why));
      } else if (vaddr != device->guest_addr) {
        problems.push_back(located(
            m.where,
            fmt::format("map of '{}' ({} at phys_addr {:#x}) at vaddr {:#x}: on KVM it "
                        "is {} at {:#x}; map it there",
                        r->name, device->name, phys, vaddr, device->becomes, device->guest_addr)));
      } else if (size > device->max_size) {
        problems.push_back(located(
            m.where, fmt::format("map of '{}' ({} at phys_addr {:#x}): {:#x} bytes is more than "
                                 "the device's {:#x}",
                                 r->name, device->name, phys, size, device->max_size)));
      }
      vm.board_maps.push_back({r->name, device->name, device->becomes, device->guest_addr, size,
                               std::nullopt, m.where});
      if (device->kind == BoardDevice::Kind::serial) give_serial(vm, m.where);
      if (device->kind == BoardDevice::Kind::gic_v2_cpu) choose_gic_v2(vm, m, problems);
      continue;
    }
    const DeviceWindow space = board.device_space();
    if (phys >= space.gpa && phys - space.gpa < space.size) {
      problems.push_back(located(
          m.where,
          fmt::format("map of '{}' (phys_addr {:#x}, in {}): a device of the real board, which a "
                      "KVM guest cannot be given; pass a host device through with <vfio "
                      "device=\"...\"/>, or back the region with path= or shm= to share it with "
                      "a host program",
                      r->name, phys, space.name)));
      continue;
    }
    kept.push_back(std::move(m));
  }
  vm.maps = std::move(kept);
}

void interpret_ioports(ProtectionDomainSpec& pd, const Board& board,
                       std::vector<std::string>& problems) {
  for (const IoportSpec& port : pd.ioports) {
    if (port.malformed) continue;  // the parser said what is wrong with its numbers
    if (!board.has_ioports()) {
      problems.push_back(located(
          port.where, fmt::format("<ioport addr=\"{:#x}\">: port I/O exists only on x86_64; on "
                                  "{} the serial port is the PL011 a map of the region at "
                                  "0x9000000 (or <serial>) gives the guest",
                                  port.addr, board.name())));
      continue;
    }
    if (port.addr != kCom1Port || port.size != kCom1Ports) {
      problems.push_back(located(
          port.where,
          fmt::format("<ioport addr=\"{:#x}\" size=\"{}\">: host I/O ports cannot be handed to a "
                      "KVM guest without VFIO (<vfio device=\"...\"/>); only COM1 (addr=\"0x3f8\" "
                      "size=\"8\") has a meaning: the emulated 16550",
                      port.addr, port.size)));
      continue;
    }
    for (VirtualMachineSpec& vm : pd.vms) {
      vm.board_maps.push_back({"ioport 0x3f8", "COM1", "the emulated 16550A (ttyS0)", kCom1Port,
                               kCom1Ports, std::nullopt, port.where});
      give_serial(vm, port.where);
    }
  }
}

// A protection domain's interrupt: the interrupt of a board device its VMs are given.
void interpret_irqs(ProtectionDomainSpec& pd, const Board& board,
                    std::vector<std::string>& problems) {
  for (const DomainIrqSpec& q : pd.irqs) {
    if (!q.irq && !q.pin) continue;  // reported by the parser
    const bool x86 = board.has_ioports();
    const std::optional<uint32_t> number = x86 ? q.pin : q.irq;
    const char* attr = x86 ? "pin" : "irq";
    const std::string what =
        q.irq ? fmt::format("<irq irq=\"{}\">", *q.irq) : fmt::format("<irq pin=\"{}\">", *q.pin);
    bool matched = false;
    for (VirtualMachineSpec& vm : pd.vms) {
      for (BoardMapSpec& bm : vm.board_maps) {
        std::optional<uint32_t> irq;
        if (bm.device == std::string_view("COM1")) irq = kCom1Pin;
        for (const BoardDevice& device : board.devices()) {
          if (device.name == bm.device) irq = device.irq;
        }
        if (number && irq && *number == *irq) {
          bm.irq = *irq;
          matched = true;
        }
      }
    }
    if (matched) continue;
    const std::string hint =
        x86 ? "COM1's pin=\"4\" with <ioport addr=\"0x3f8\" size=\"8\"/>"
            : "the PL011's irq=\"33\" with a map of the region at phys_addr 0x9000000";
    problems.push_back(located(
        q.where,
        fmt::format("{}: on KVM a protection domain's interrupt has a meaning only as the "
                    "interrupt of a board device its virtual machine is given ({}{}); a host "
                    "device's interrupt needs VFIO, and a host program raises a guest interrupt "
                    "with <irq irq=\"N\" fifo=\"PATH\"/> in <virtual_machine>",
                    what, hint,
                    number ? "" : fmt::format("; on {} it is written {}=", board.name(), attr))));
  }
}

}  // namespace

void SystemDescription::interpret_board_devices(std::vector<std::string>& problems) {
  const Board* board = arch.empty() ? &host_board() : find_board(arch);
  if (board == nullptr) return;  // reported by problems()
  for (ProtectionDomainSpec& pd : domains) {
    for (VirtualMachineSpec& vm : pd.vms) interpret_maps(*this, vm, *board, problems);
    interpret_ioports(pd, *board, problems);
    interpret_irqs(pd, *board, problems);
  }
}

}  // namespace libvmm
