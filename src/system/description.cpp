// SystemDescription: loading, the `vmm` flags' shorthand, and the validation pass that checks
// a description against itself and against this host's machine before anything is created.
#include "libvmm/system/description.hpp"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "../arch/board.hpp"
#include "../vm/device_plan.hpp"
#include "libvmm/arch/machine_option.hpp"
#include "libvmm/backends/vhost_user.hpp"
#include "libvmm/core/file.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/pci/vfio.hpp"
#include "libvmm/vm.hpp"

namespace libvmm {

std::string VfioSpec::label() const {
  const std::string at = where.str();
  return fmt::format("{}{}<vfio device=\"{}\">", at, at.empty() ? "" : ": ", device);
}

std::string SourceLocation::str() const {
  if (file.empty()) return "";
  return line == 0 ? file : fmt::format("{}:{}", file, line);
}

SourceLocation VirtualMachineSpec::location_of(std::string_view what) const {
  for (const auto& [name, loc] : element_locations) {
    if (name == what) return loc;
  }
  return where;
}

namespace {

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : "\n") + l;
  return out;
}

}  // namespace

DescriptionError::DescriptionError(std::vector<std::string> problems)
    : UserError(join_lines(problems)), problems_(std::move(problems)) {}

SystemDescription SystemDescription::read(const std::filesystem::path& path,
                                          const std::string& arch,
                                          std::vector<std::string>& problems) {
  const std::vector<uint8_t> bytes = read_file(path, "system description");
  SystemDescription d =
      parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
            path.string(), problems);
  d.arch = arch;
  d.interpret_board_devices(problems);
  return d;
}

SystemDescription SystemDescription::load(const std::filesystem::path& path) {
  std::vector<std::string> problems;
  SystemDescription d = read(path, "", problems);
  for (auto& p : d.problems()) problems.push_back(std::move(p));
  if (!problems.empty()) throw DescriptionError(std::move(problems));
  return d;
}

SystemDescription SystemDescription::from_vm_config(const VmConfig& config) {
  SystemDescription d;
  MemoryRegionSpec ram;
  ram.name = "guest_ram";
  ram.size = config.memory_size;
  ram.where.file = "--memory";
  d.regions.push_back(ram);
  ProtectionDomainSpec vmm;
  vmm.name = "vmm";
  VirtualMachineSpec vm;
  vm.config = config;
  vm.ram_region = ram.name;
  MapSpec map;
  map.region = ram.name;
  map.vaddr = host_board().ram_base();
  map.perms = "rwx";
  map.where.file = "--memory";
  vm.maps.push_back(map);
  vmm.vms.push_back(std::move(vm));
  d.domains.push_back(std::move(vmm));
  return d;
}

void SystemDescription::validate() const {
  if (auto p = problems(); !p.empty()) throw DescriptionError(std::move(p));
}

void SystemDescription::bind_eventfd(std::string_view name, int fd) {
  for (auto* vm : vms()) {
    for (auto& irq : vm->irqs) {
      if (irq.source == IrqSpec::Source::eventfd && irq.name == name) irq.eventfd = fd;
    }
  }
}

const MemoryRegionSpec* SystemDescription::find_region(std::string_view name) const {
  for (const auto& r : regions) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

std::vector<VirtualMachineSpec*> SystemDescription::vms() {
  std::vector<VirtualMachineSpec*> out;
  for (auto& pd : domains) {
    for (auto& vm : pd.vms) out.push_back(&vm);
  }
  return out;
}

std::string MapSpec::perms_problem() const {
  if (perms.empty() || perms.find_first_not_of("rwx") != std::string::npos) {
    return fmt::format("map of '{}': perms=\"{}\" may only hold the letters r, w and x", region,
                       perms);
  }
  if (perms.find('r') == std::string::npos) {
    return fmt::format(
        "map of '{}': perms=\"{}\" without r: KVM cannot map memory the guest "
        "cannot read",
        region, perms);
  }
  return "";
}

std::string MapSpec::size_problem() const {
  return size && *size == 0 ? fmt::format("map of '{}': size 0", region) : "";
}

std::vector<const VirtualMachineSpec*> SystemDescription::vms() const {
  std::vector<const VirtualMachineSpec*> out;
  for (const auto& pd : domains) {
    for (const auto& vm : pd.vms) out.push_back(&vm);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Validation

namespace {

// A region's page size for alignment checks: 1 when it is invalid (reported once, with the
// region), so later checks neither divide by zero nor repeat the problem.
uint64_t alignment(const MemoryRegionSpec& r) {
  return r.page_size == 4 * KiB || r.page_size == 2 * MiB ? r.page_size : 1;
}

struct Range {
  std::string what;
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t end() const { return gpa + size; }
};

class Validator {
 public:
  Validator(const SystemDescription& d, const Board& board, const Architecture& arch,
            const HostFiles& files, const CheckOptions& options)
      : d_(d), machine_(board), arch_(arch), files_(files), options_(options) {}

  std::vector<std::string> run() {
    check_regions();
    std::set<std::string> pd_names;
    std::set<std::string> setvars;
    std::set<std::string> vm_names;
    std::map<uint32_t, const VirtualMachineSpec*> vm_ids;
    std::vector<std::string> stdio_users;
    for (const auto& pd : d_.domains) {
      if (!pd_names.insert(pd.name).second) {
        add(pd.where, fmt::format("duplicate protection domain name '{}'", pd.name));
      }
      for (const auto& m : pd.maps) {
        if (!m.malformed) check_map(m);
        if (!m.setvar_vaddr.empty() && !setvars.insert(m.setvar_vaddr).second) {
          add(m.where, fmt::format("duplicate setvar_vaddr '{}'", m.setvar_vaddr));
        }
      }
      for (const auto& vm : pd.vms) {
        if (!vm_names.insert(vm.config.name).second) {
          add(vm.where, fmt::format("duplicate virtual machine name '{}'", vm.config.name));
        }
        if (auto [it, fresh] = vm_ids.emplace(vm.id, &vm); !fresh) {
          add(vm.where, fmt::format("duplicate virtual machine id {} (also '{}' at {})", vm.id,
                                    it->second->config.name, it->second->where.str()));
        }
        check_vm(vm, stdio_users);
      }
    }
    return std::move(problems_);
  }

 private:
  void add(const SourceLocation& where, const std::string& what) {
    const std::string loc = where.str();
    problems_.push_back(loc.empty() ? what : fmt::format("{}: {}", loc, what));
  }

  void check_regions() {
    std::set<std::string> names;
    for (const auto& r : d_.regions) {
      const std::string name = fmt::format("memory region '{}'", r.name);
      if (r.name.empty()) add(r.where, "a memory region needs a name");
      if (!names.insert(r.name).second) add(r.where, fmt::format("duplicate {}", name));
      if (r.page_size != 4 * KiB && r.page_size != 2 * MiB) {
        add(r.where, fmt::format("{}: page_size {:#x} is neither 0x1000 (4 KiB) nor 0x200000 "
                                 "(2 MiB huge pages)",
                                 name, r.page_size));
      } else if (r.size == 0 && !r.where.file.empty()) {
        // A file's missing, malformed or zero size was reported by the parser.
      } else if (r.size == 0 || r.size % r.page_size != 0) {
        add(r.where, fmt::format("{}: size {:#x} is not a non-zero multiple of its page size {:#x}",
                                 name, r.size, r.page_size));
      }
      if (r.page_size == 2 * MiB && r.backing != MemoryRegionSpec::Backing::memfd) {
        add(r.where, fmt::format("{}: huge pages (page_size 2 MiB) need a memfd region, not a "
                                 "host file or shm object",
                                 name));
      }
      if (r.phys_addr && *r.phys_addr % alignment(r) != 0) {
        add(r.where, fmt::format("{}: phys_addr {:#x} is not aligned to its page size {:#x}", name,
                                 *r.phys_addr, r.page_size));
      }
      if (r.backing != MemoryRegionSpec::Backing::memfd && r.path.empty()) {
        add(r.where, fmt::format("{}: empty path", name));
      }
      if (r.backing == MemoryRegionSpec::Backing::host_file && !r.path.empty()) {
        // Opened read-write (created if missing) and mapped shared: no other use's file.
        const std::string who = fmt::format("{}: {}", r.where.str(), name);
        try {
          file_uses_.add({r.path, HostPath::Use::create, {}}, who,
                         [&](std::string_view m) { return fmt::format("{}: {}", who, m); });
        } catch (const UserError& e) {
          problems_.push_back(e.what());
        }
      }
      if (r.backing == MemoryRegionSpec::Backing::shm &&
          (r.path.size() < 2 || r.path[0] != '/' || r.path.find('/', 1) != std::string::npos)) {
        add(r.where, fmt::format("{}: shm=\"{}\" must be a name like /my-region (one leading "
                                 "slash, no others)",
                                 name, r.path));
      }
    }
  }

  // Checks a map's region, permissions and size; returns the region when it exists.
  const MemoryRegionSpec* check_map(const MapSpec& m) {
    const MemoryRegionSpec* r = d_.find_region(m.region);
    if (const std::string why = m.perms_problem(); !why.empty()) add(m.where, why);
    if (r == nullptr && m.region.empty() && !m.where.file.empty()) return nullptr;  // no mr=
    if (r == nullptr) {
      add(m.where, fmt::format("map of memory region '{}', which does not exist", m.region));
      return nullptr;
    }
    if (const std::string why = m.size_problem(); !why.empty()) {
      add(m.where, why);
    } else if (m.size && *m.size > r->size) {
      add(m.where, fmt::format("map of {:#x} bytes is larger than memory region '{}' ({:#x} bytes)",
                               *m.size, r->name, r->size));
    } else if (m.size && *m.size % alignment(*r) != 0) {
      add(m.where, fmt::format("map of '{}': size {:#x} is not a multiple of its page size {:#x}",
                               r->name, *m.size, r->page_size));
    }
    return r;
  }

  void check_file(const SourceLocation& where, const std::string& what,
                  const std::filesystem::path& path) {
    if (const std::string why = files_.check_readable(path); !why.empty()) {
      add(where, fmt::format("{} {}: {}", what, path.string(),
                             why == "is a directory" ? "not a regular file" : why));
    }
  }

  // `element`: "serial" or "console"; `what`: the device's name in messages.
  void check_backend(const VirtualMachineSpec& vm, const char* element, const std::string& what,
                     const std::string& spec, std::vector<std::string>& stdio_users) {
    const SourceLocation where = vm.location_of(element);
    // Without a file (flags, code), opening the backend reports a bad spec by its flag.
    if (where.file.empty()) return;
    const bool known = spec == "stdio" || spec == "none" || spec == "pty" ||
                       (spec.starts_with("file:") && spec.size() > 5) ||
                       (spec.starts_with("socket:") && spec.size() > 7);
    if (!known) {
      add(where, fmt::format("{} backend '{}' is none of stdio, file:PATH, socket:PATH, pty, none",
                             what, spec));
    }
    // One terminal serves one console, across every VM of the description.
    if (spec == "stdio") {
      if (!stdio_users.empty()) {
        add(where, fmt::format("{} of '{}' wants stdio, which {} already has", what, vm.config.name,
                               stdio_users.front()));
      }
      stdio_users.push_back(fmt::format("{} of '{}'", what, vm.config.name));
    }
  }

  // Each device through its kind's checks, the host resources they claim, and the plan.
  void check_devices(const VirtualMachineSpec& vm, std::vector<std::string>& stdio_users) {
    // A file one use writes and another uses, as `vmm run` refuses it (the serial port named
    // by its element, as there), in this VM or another (file:b.img in one, b.img a disk in
    // another: the first to start emptied the other's image), or a region's file.
    VmConfig named = vm.config;
    if (const SourceLocation serial = vm.location_of("serial"); !serial.file.empty()) {
      named.labels.emplace("serial", fmt::format("{}: <serial>", serial.str()));
    }
    if (std::string clash = host_file_clash(named, file_uses_); !clash.empty()) {
      problems_.push_back(std::move(clash));
    }
    std::map<std::string, std::string> claimed;
    for (const DeviceSpec& spec : vm.config.devices) {
      for (auto& p : check_spec(spec, files_)) problems_.push_back(std::move(p));
      const VirtioDeviceKind* kind = find_virtio_device_kind(spec.kind);
      if (kind == nullptr) continue;
      for (const auto& claim : kind->claims(spec, files_)) {
        if (claim.resource == "stdio") {
          if (!stdio_users.empty()) {
            problems_.push_back(spec.located(
                fmt::format("wants stdio, which {} already has", stdio_users.front())));
          }
          stdio_users.push_back(fmt::format("{} of '{}'", kind->element(), vm.config.name));
        } else if (auto [it, fresh] = claimed.emplace(claim.resource, spec.where); !fresh) {
          problems_.push_back(spec.located(fmt::format(
              "{} is already used by {}; give it to one device only", claim.what, it->second)));
        }
      }
    }
    std::vector<uint32_t> taken;
    for (const IrqSpec& q : vm.irqs) {
      if (!q.malformed) taken.push_back(q.irq);
    }
    MemoryMap map;
    try {
      map = machine_.memory_map(vm.config.memory_size);
    } catch (const UserError&) {
      return;  // the RAM problem is reported with the RAM map
    }
    // The devices passed through: PCI device numbers after the virtio-pci ones (as Vm adds
    // them; still in the file's <vfio> elements, or from --vfio already).
    std::vector<std::string> passthrough;
    for (const VfioSpec& v : vm.vfio) passthrough.push_back(v.label());
    for (const VfioDeviceConfig& v : vm.config.vfio) passthrough.push_back(v.label);
    const bool pci_intx = !pci_intx_reason(arch_, vm.config.machine_options).empty();
    for (auto& p :
         plan_problems(map, plan_devices(map, vm.config.devices, taken, pci_intx), passthrough)) {
      problems_.push_back(std::move(p));
    }
  }

  // Devices served by another process (vhost-user) map the guest's RAM through its file
  // descriptors: RAM must have them, in no more regions than the protocol's table holds.
  void check_shared_ram(const VirtualMachineSpec& vm) {
    const DeviceSpec* first = nullptr;
    for (const DeviceSpec& spec : vm.config.devices) {
      const VirtioDeviceKind* kind = find_virtio_device_kind(spec.kind);
      if (kind != nullptr && kind->needs_shared_ram()) {
        first = &spec;
        break;
      }
    }
    if (first == nullptr) return;
    if (vm.config.ram_backing == RamBacking::anonymous) {
      problems_.push_back(first->located(
          "guest RAM is anonymous memory (--memory-backing anonymous), which has no file "
          "descriptor to share with the device's back-end; use auto, memfd or hugetlb"));
    }
    // RAM is shared as one region per range of the machine's RAM layout (x86_64: two above
    // 3 GiB, below and above the PCI hole), each other writable map as one (read-only ones
    // are not shared: the back-end maps what it gets writable).
    uint64_t ram_size = vm.config.memory_size;  // a VM from flags; a file's: its RAM map's
    for (const auto& m : vm.maps) {
      const MemoryRegionSpec* r = d_.find_region(m.region);
      if (r == nullptr || m.region != vm.ram_region) continue;
      ram_size = m.size.value_or(r->size);
      break;
    }
    const size_t ram_pieces = std::max<size_t>(ram_ranges(ram_size).size(), 1);
    const auto writable_maps = static_cast<size_t>(std::count_if(
        vm.maps.begin(), vm.maps.end(), [](const MapSpec& m) { return !m.readonly(); }));
    const size_t regions = writable_maps + ram_pieces - 1;
    if (regions > vhost::kMaxRegions) {
      problems_.push_back(first->located(fmt::format(
          "virtual machine '{}' shares {} memory regions (its maps, RAM in {} piece{}); a "
          "vhost-user back-end takes at most {}",
          vm.config.name, regions, ram_pieces, ram_pieces == 1 ? "" : "s", vhost::kMaxRegions)));
    }
    // Each writable map is a table entry of its own, and a back-end refuses two entries over
    // the same memory (ours: "overlap in user addresses"): a region mapped twice would fail
    // only once the guest's driver starts the device.
    std::map<std::string, const MapSpec*, std::less<>> shared;
    for (const MapSpec& m : vm.maps) {
      if (m.readonly() || m.malformed) continue;
      if (const auto [it, added] = shared.emplace(m.region, &m); !added) {
        add(m.where, fmt::format("map of '{}': the region is mapped at line {} already; a "
                                 "device served by another process ({}) takes each region once",
                                 m.region, it->second->where.line, first->kind));
      }
    }
  }

  void check_vm(const VirtualMachineSpec& vm, std::vector<std::string>& stdio_users) {
    const VmConfig& c = vm.config;
    const std::string name = fmt::format("virtual machine '{}'", c.name);
    if (c.name.empty()) add(vm.where, "a virtual machine needs a name");
    if (c.vcpus == 0 || c.vcpus > machine_.max_vcpus()) {
      add(vm.location_of("vcpus"), fmt::format("{}: {} vCPUs; {} supports 1 to {}", name, c.vcpus,
                                               machine_.name(), machine_.max_vcpus()));
    }
    // Images of descriptions without a file (flags, code) are checked, by flag, when opened.
    if (!vm.where.file.empty()) {
      if (c.kernel.empty() && options_.kernel_required) {
        add(vm.where, fmt::format("{} needs a <kernel path=\"...\"/> (or: vmm run FILE --kernel "
                                  "IMAGE)",
                                  name));
      }
      if (!c.kernel.empty()) check_file(vm.location_of("kernel"), "kernel", c.kernel);
      if (!c.initrd.empty()) check_file(vm.location_of("initrd"), "initrd", c.initrd);
    }
    check_backend(vm, "serial", machine_.serial_name(), c.serial, stdio_users);
    check_devices(vm, stdio_users);
    check_shared_ram(vm);
    // The machine's options by its architecture's rules; another architecture's are refused.
    for (auto& p : check_machine_options(arch_, c.machine_options, files_)) {
      problems_.push_back(std::move(p));
    }
    check_guest_maps(vm, name);
    check_irqs(vm, name);
    check_vfio(vm);
  }

  // The address's form is the description's (the device itself is the host's: checked by run).
  void check_vfio(const VirtualMachineSpec& vm) {
    std::map<std::string, const VfioSpec*> seen;
    for (const VfioSpec& v : vm.vfio) {
      const std::string label = fmt::format("<vfio device=\"{}\">", v.device);
      const std::optional<std::string> address = pci::parse_pci_address(v.device);
      if (!address) {
        add(v.where, label +
                         ": not a PCI address; write it as lspci -D shows it, e.g. "
                         "0000:01:00.0");
      } else if (const auto [it, added] = seen.emplace(*address, &v); !added) {
        add(v.where, fmt::format("{}: device {} is already given to this VM at line {}", label,
                                 *address, it->second->where.line));
      }
    }
  }

  void check_guest_maps(const VirtualMachineSpec& vm, const std::string& name) {
    std::vector<std::pair<Range, SourceLocation>> used;
    for (const auto& w : machine_.device_windows()) used.push_back({{w.name, w.gpa, w.size}, {}});
    // The PCI host bridge decodes its windows only in a VM with PCI devices: virtio-pci
    // functions, or devices passed through with VFIO (always PCI functions).
    const bool pci_by_default = machine_.virtio_pci_by_default();
    if (!vm.vfio.empty() || std::any_of(vm.config.devices.begin(), vm.config.devices.end(),
                                        [pci_by_default](const DeviceSpec& d) {
                                          return uses_pci_transport(d, pci_by_default);
                                        })) {
      for (const auto& w : machine_.pci_windows()) {
        used.push_back({{fmt::format("{} (the VM has PCI devices)", w.name), w.gpa, w.size}, {}});
      }
    }
    bool has_ram = false;
    for (const auto& m : vm.maps) {
      if (m.malformed) {  // its problem is reported; what follows from its value would repeat it
        has_ram = has_ram || m.region == vm.ram_region;
        continue;
      }
      if (!m.setvar_vaddr.empty()) {
        add(m.where, fmt::format("map of '{}': setvar_vaddr names a mapping of the VMM (a "
                                 "protection domain's <map>); a virtual machine's map has none",
                                 m.region));
      }
      const MemoryRegionSpec* r = check_map(m);
      if (r == nullptr) continue;
      // The first map of the RAM region is the RAM, whatever is wrong with it (one line each).
      const bool is_ram = r->name == vm.ram_region && !has_ram;
      has_ram = has_ram || is_ram;
      const uint64_t size = m.size.value_or(r->size);
      std::optional<uint64_t> gpa = m.vaddr ? m.vaddr : r->phys_addr;
      if (!gpa) {
        add(m.where, fmt::format("map of '{}' needs vaddr (the region has no phys_addr)", r->name));
        continue;
      }
      if (m.vaddr && r->phys_addr && *m.vaddr != *r->phys_addr) {
        add(m.where, fmt::format("map of '{}' at vaddr {:#x}, but the region is fixed at "
                                 "phys_addr {:#x}",
                                 r->name, *m.vaddr, *r->phys_addr));
      }
      if (*gpa % alignment(*r) != 0) {
        add(m.where, fmt::format("map of '{}': vaddr {:#x} is not aligned to the region's page "
                                 "size {:#x}",
                                 r->name, *gpa, r->page_size));
        continue;
      }
      std::vector<Range> ranges;
      if (is_ram) {
        if (*gpa != machine_.ram_base()) {
          add(m.where, fmt::format("{}: its RAM '{}' must be mapped at {:#x} on {}", name, r->name,
                                   machine_.ram_base(), machine_.name()));
          continue;
        }
        if (size % MiB != 0) {
          add(m.where, fmt::format("{}: its RAM '{}' ({:#x} bytes) is not a multiple of 1 MiB",
                                   name, r->name, size));
          continue;
        }
        if (m.readonly())
          add(m.where, fmt::format("{}: its RAM '{}' must be writable", name, r->name));
        // The machine may split RAM around holes (x86: 3-4 GiB); it says what it cannot hold.
        std::vector<RamRange> layout;
        try {
          layout = machine_.ram_layout(size);
        } catch (const UserError& e) {
          std::string_view why = e.what();
          if (why.starts_with("--memory: ")) why.remove_prefix(10);
          add(m.where, fmt::format("{}: its RAM '{}': {}", name, r->name, why));
          continue;
        }
        for (const auto& rr : layout)
          ranges.push_back({"guest RAM '" + r->name + "'", rr.gpa, rr.size});
      } else {
        if (*gpa + size < *gpa) {
          add(m.where, fmt::format("map of '{}' at {:#x} wraps the address space", r->name, *gpa));
          continue;
        }
        ranges.push_back({fmt::format("map of '{}'", r->name), *gpa, size});
      }
      for (const Range& range : ranges) {
        for (const auto& [other, where] : used) {
          if (range.gpa < other.end() && other.gpa < range.end()) {
            const std::string at = where.str();
            add(m.where, fmt::format("{} at [{:#x}, {:#x}) overlaps {} at [{:#x}, {:#x}){}",
                                     range.what, range.gpa, range.end(), other.what, other.gpa,
                                     other.end(), at.empty() ? "" : " (" + at + ")"));
          }
        }
      }
      for (const Range& range : ranges) used.push_back({range, m.where});
    }
    if (!has_ram) {
      add(vm.where, fmt::format("{} has no map of its RAM region '{}' (name another with "
                                "ram=\"...\")",
                                name, vm.ram_region));
    }
  }

  std::vector<RamRange> ram_ranges(uint64_t size) const {
    try {
      return machine_.ram_layout(size);
    } catch (const UserError&) {
      return {{machine_.ram_base(), size}};
    }
  }

  void check_irqs(const VirtualMachineSpec& vm, const std::string& name) {
    std::set<uint32_t> seen;
    for (const auto& q : vm.irqs) {
      if (q.malformed) continue;  // the parser said what is wrong with its number
      if (std::string why = machine_.irq_problem(q.irq); !why.empty()) add(q.where, why);
      if (!seen.insert(q.irq).second) {
        add(q.where, fmt::format("{}: duplicate IRQ {}", name, q.irq));
      }
      if (q.source == IrqSpec::Source::eventfd ? q.name.empty() && q.eventfd < 0 : q.path.empty()) {
        add(q.where, fmt::format("IRQ {}: empty event source", q.irq));
      }
      // One FIFO or socket per IRQ, in the whole system: a second socket bound at the path
      // orphans the first, and two readers of one FIFO take each other's writes.
      if (q.source != IrqSpec::Source::eventfd && !q.path.empty()) {
        const auto [first, fresh] =
            irq_paths_.emplace(std::filesystem::path(q.path).lexically_normal().string(), q.where);
        if (!fresh) {
          add(q.where, fmt::format("IRQ {}: '{}' is already another IRQ's source ({})", q.irq,
                                   q.path, first->second.str()));
        }
      }
    }
  }

  std::map<std::string, SourceLocation> irq_paths_;  // FIFOs and sockets of IRQs, system-wide

  const SystemDescription& d_;
  const Board& machine_;  // the board of the architecture the description is checked for
  const Architecture& arch_;
  const HostFiles& files_;
  const CheckOptions& options_;
  std::vector<std::string> problems_;
  HostFileUses file_uses_;  // every VM's and region's host files
};

}  // namespace

std::vector<std::string> SystemDescription::problems(const HostFiles& files,
                                                     const CheckOptions& options) const {
  const Board* board = arch.empty() ? &host_board() : find_board(arch);
  const Architecture* architecture = find_architecture(board ? board->name() : "");
  if (board == nullptr || architecture == nullptr) {
    std::string known;
    for (const Architecture& a : architectures()) {
      if (!known.empty()) known += ", ";
      known += a.name;
    }
    return {fmt::format("--arch {}: unknown architecture (known: {})", arch, known)};
  }
  return Validator(*this, *board, *architecture, files, options).run();
}

}  // namespace libvmm
