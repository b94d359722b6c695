// System: turns a validated description into host objects (memfds, files, shm objects, FIFOs,
// sockets) and Vms, and runs the Vms together.
#include "libvmm/system/system.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/pci/vfio.hpp"

namespace libvmm {
namespace {

std::string prefix(const SourceLocation& where) {
  const std::string s = where.str();
  return s.empty() ? "" : s + ": ";
}

// A host file or shm object, grown to `size` if smaller, mapped shared: other processes that
// map it see the guest's writes, and the guest sees theirs.
std::shared_ptr<MemoryRegion> open_shared_region(const MemoryRegionSpec& r) {
  const bool shm = r.backing == MemoryRegionSpec::Backing::shm;
  UniqueFd fd(shm ? ::shm_open(r.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)
                  : ::open(r.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  const std::string what = fmt::format("{}memory region '{}': {} {}", prefix(r.where), r.name,
                                       shm ? "shm" : "path", r.path);
  if (!fd) throw UserError(fmt::format("{}: {}", what, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(what);
  if (!S_ISREG(st.st_mode)) throw UserError(what + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) < r.size &&
      ::ftruncate(fd.get(), static_cast<off_t>(r.size)) != 0) {
    throw UserError(
        fmt::format("{}: cannot grow it to {:#x} bytes: {}", what, r.size, std::strerror(errno)));
  }
  return MemoryRegion::from_fd(r.name, std::move(fd), r.size);
}

// A private region (guest RAM and the like, backed on demand) must fit the host's RAM: it is
// mapped without a reservation, so a larger one would be the OOM killer's to find out. (Each on
// its own, as one VM's RAM is: several VMs may overcommit the host together, as with swap.)
void check_private_memory(const SystemDescription& description) {
  const uint64_t host = host_ram_size();
  for (const auto& r : description.regions) {
    if (r.backing != MemoryRegionSpec::Backing::memfd || r.size <= host) continue;
    throw UserError(fmt::format("{}memory region '{}': {} is more than this host's {} of RAM",
                                prefix(r.where), r.name, format_size(r.size), format_size(host)));
  }
}

// A memfd region (the format's memory private to this process) is backed per region by
// create_ram_region(): anonymous memory with transparent huge pages where the host allows them,
// unless a VM that maps it needs a shareable fd (VmConfig::ram_shared: devices in other
// processes) or asks for a backing (a VM's ram_backing, for its RAM region; page_size 2 MiB:
// hugetlb).
std::shared_ptr<MemoryRegion> create_region(const MemoryRegionSpec& r,
                                            const SystemDescription& description) {
  if (r.backing != MemoryRegionSpec::Backing::memfd) {
    auto region = open_shared_region(r);
    log::debug("{}memory region '{}': {} {}: asked for", prefix(r.where), r.name,
               r.backing == MemoryRegionSpec::Backing::shm ? "shm object" : "host file", r.path);
    return region;
  }
  RamBacking requested = r.page_size == 2 * MiB ? RamBacking::hugetlb : RamBacking::automatic;
  bool needs_fd = false;
  for (const auto& pd : description.domains) {
    for (const auto& vm : pd.vms) {
      bool maps_it = false;
      for (const auto& m : vm.maps) maps_it |= m.region == r.name;
      if (!maps_it) continue;
      needs_fd |= ram_must_be_shared(vm.config);
      if (vm.ram_region == r.name && requested == RamBacking::automatic) {
        requested = vm.config.ram_backing;
      }
    }
  }
  const std::string what = fmt::format("{}memory region '{}'", prefix(r.where), r.name);
  try {
    return create_ram_region(r.name, r.size, requested, needs_fd, what);
  } catch (const UserError& e) {
    const std::string message = e.what();
    if (message.starts_with(what)) throw;
    throw UserError(prefix(r.where) + message);
  }
}

// A named FIFO (created if missing), opened read-write so it never reports end-of-file when
// the last writer goes away.
UniqueFd open_fifo(const IrqSpec& q) {
  if (::mkfifo(q.path.c_str(), 0600) != 0 && errno != EEXIST) {
    throw UserError(
        fmt::format("{}IRQ {}: fifo {}: {}", prefix(q.where), q.irq, q.path, std::strerror(errno)));
  }
  struct stat st {};
  if (::stat(q.path.c_str(), &st) != 0 || !S_ISFIFO(st.st_mode)) {
    throw UserError(
        fmt::format("{}IRQ {}: {} exists and is not a FIFO", prefix(q.where), q.irq, q.path));
  }
  UniqueFd fd(::open(q.path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    throw UserError(
        fmt::format("{}IRQ {}: fifo {}: {}", prefix(q.where), q.irq, q.path, std::strerror(errno)));
  }
  return fd;
}

// A Unix datagram socket bound at the path; a stale socket file there is replaced.
UniqueFd open_socket(const IrqSpec& q) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (q.path.size() >= sizeof addr.sun_path) {
    throw UserError(
        fmt::format("{}IRQ {}: socket path {} is too long", prefix(q.where), q.irq, q.path));
  }
  std::memcpy(addr.sun_path, q.path.c_str(), q.path.size() + 1);
  struct stat st {};
  if (::lstat(q.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(q.path.c_str());
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw UserError(fmt::format("{}IRQ {}: socket {}: {}", prefix(q.where), q.irq, q.path,
                                std::strerror(errno)));
  }
  return fd;
}

// A protection domain's cpu="N": the threads of its VMs run on host CPU N (a vCPU with its own
// <vcpu cpu> moves there); VMs of a domain without one run on `caller`'s CPUs (nullopt:
// unknown). Per VM, in the description's order.
std::vector<std::optional<cpu_set_t>> vm_cpu_pins(const SystemDescription& description,
                                                  const std::optional<cpu_set_t>& caller) {
  std::vector<std::optional<cpu_set_t>> pins;
  for (const auto& pd : description.domains) {
    std::optional<cpu_set_t> pin;
    if (pd.cpu && *pd.cpu < CPU_SETSIZE) {
      pin.emplace();
      CPU_ZERO(&*pin);
      CPU_SET(*pd.cpu, &*pin);
    } else if (pd.cpu) {
      log::warn(
          "{}protection domain '{}': this host has no CPU {}; it runs where the scheduler "
          "puts it",
          prefix(pd.where), pd.name, *pd.cpu);
    }
    if (!pin) pin = caller;
    pins.insert(pins.end(), pd.vms.size(), pin);
  }
  return pins;
}

// Pins the calling thread to `pin` (if any); false, with errno, if the host refused.
bool pin_thread(const std::optional<cpu_set_t>& pin) {
  return !pin || ::sched_setaffinity(0, sizeof *pin, &*pin) == 0;
}

}  // namespace

struct System::Impl {
  SystemDescription description;
  // The host files and shm objects among the regions (before them: their guards write to it).
  std::unique_ptr<RegionShrinkWatch> shrink_watch;
  std::map<std::string, std::shared_ptr<MemoryRegion>, std::less<>> regions;
  struct VmmMap {
    std::shared_ptr<MemoryRegion> region;
    uint64_t size;  // the map's size= (its first bytes), else the whole region
  };
  std::map<std::string, VmmMap, std::less<>> vmm_maps;  // by setvar_vaddr
  std::vector<UniqueFd> event_fds;
  std::vector<std::string> socket_paths;
  std::vector<std::unique_ptr<Vm>> vms;  // after the fds and regions they use: destroyed first
  std::mutex stop_mutex;
  std::optional<RunResult> first_result;
  std::exception_ptr failure;  // the first exception out of a VM's run (under stop_mutex)
  void note_failure(std::exception_ptr e) {
    std::lock_guard lock(stop_mutex);
    if (!failure) failure = std::move(e);
  }
  // With several VMs: signals, timers and requests that concern them all, served on the
  // calling thread while each VM runs on its own (control_loop()).
  EventLoop control;
  std::function<void()> loop_end_handler;  // several VMs: after control.run()
  std::atomic<size_t> running{0};
  std::vector<std::optional<cpu_set_t>> pins;  // per VM (vm_cpu_pins)

  ~Impl() {
    vms.clear();
    for (const auto& path : socket_paths) ::unlink(path.c_str());
  }

  VmConfig vm_config(const VirtualMachineSpec& spec) {
    VmConfig c = spec.config;
    // A file's VM: what stops it on a guest fault, for its fault reports (which name the VM
    // too). A VM from flags keeps --strict and no name.
    if (!description.file.empty()) {
      c.labels.emplace("strict", "strict_faults=\"true\" on its <virtual_machine>");
    }
    for (const char* item : {"kernel", "initrd", "serial", "vcpus"}) {
      const SourceLocation where = spec.location_of(item);
      if (!where.file.empty() && where.line != 0) {
        c.labels.emplace(item, fmt::format("{}: <{}>", where.str(), item));
      }
    }
    bool ram_done = false;
    for (const MapSpec& m : spec.maps) {
      const std::shared_ptr<MemoryRegion>& region = regions.at(m.region);
      const MemoryRegionSpec& r = *description.find_region(m.region);
      const uint64_t size = m.size.value_or(r.size);
      if (m.region == spec.ram_region && !ram_done) {
        ram_done = true;
        c.ram = region;
        c.memory_size = size;
        // Refusals of the guest's memory size name this map.
        if (m.where.line != 0) {
          c.labels.emplace("memory", fmt::format("{}: <map mr=\"{}\">", m.where.str(), m.region));
        }
        continue;
      }
      c.maps.push_back({region, m.vaddr.value_or(r.phys_addr.value_or(0)), size, m.readonly()});
    }
    for (const IrqSpec& q : spec.irqs) {
      switch (q.source) {
        case IrqSpec::Source::eventfd:
          if (q.eventfd < 0) {
            throw UserError(
                fmt::format("{}IRQ {}: no eventfd was handed in as '{}' (a program "
                            "using the library binds one with "
                            "SystemDescription::bind_eventfd)",
                            prefix(q.where), q.irq, q.name));
          }
          c.irq_sources.push_back({q.irq, q.eventfd, true});
          break;
        case IrqSpec::Source::fifo:
          event_fds.push_back(open_fifo(q));
          c.irq_sources.push_back({q.irq, event_fds.back().get(), false});
          break;
        case IrqSpec::Source::socket:
          event_fds.push_back(open_socket(q));
          socket_paths.push_back(q.path);
          c.irq_sources.push_back({q.irq, event_fds.back().get(), false});
          break;
      }
    }
    return c;
  }
};

void resolve_vfio_devices(SystemDescription& description, bool check_host) {
  for (auto* vm : description.vms()) {
    for (const VfioSpec& v : vm->vfio) {
      const std::string label = v.label();
      const std::optional<std::string> address = pci::parse_pci_address(v.device);
      if (!address) {
        throw UserError(label +
                        ": not a PCI address; write it as lspci -D shows it, e.g. "
                        "0000:01:00.0");
      }
      vm->config.vfio.push_back({*address, label, std::nullopt});
    }
    vm->vfio.clear();  // moved: a second call adds nothing
    if (!check_host) continue;
    for (VfioDeviceConfig& v : vm->config.vfio) {
      if (!v.iommu_group) v.iommu_group = pci::check_vfio_device({}, v.address, v.label);
    }
  }
}

uint64_t vfio_pinned_bytes(const SystemDescription& description) {
  uint64_t bytes = 0;
  for (const auto* vm : description.vms()) {
    if (vm->config.vfio.empty() && vm->vfio.empty()) continue;
    for (const MapSpec& m : vm->maps) {
      const MemoryRegionSpec* r = description.find_region(m.region);
      bytes += m.size.value_or(r != nullptr ? r->size : 0);
    }
  }
  return bytes;
}

System::System(SystemDescription description) : impl_(std::make_unique<Impl>()) {
  auto& d = *impl_;
  d.description = std::move(description);
  // Descriptions from flags report bad input in terms of the flags, as before.
  if (d.description.file.empty()) {
    for (const auto* vm : d.description.vms()) validate(vm->config);
  }
  d.description.validate();
  // Passed-through devices: the address checked here, the host's side when the VM is made.
  resolve_vfio_devices(d.description, false);
  check_private_memory(d.description);
  for (const auto& r : d.description.regions) {
    auto region = create_region(r, d.description);
    // Another process may make a host file or shm object smaller: without a guard, a device
    // then touching a lost page in a guest's buffer would end vmm with SIGBUS.
    if (r.backing != MemoryRegionSpec::Backing::memfd) {
      if (!d.shrink_watch) d.shrink_watch = std::make_unique<RegionShrinkWatch>();
      if (!d.shrink_watch->add(region)) {
        log::warn(
            "{}memory region '{}': not guarded against being made smaller (too many "
            "guarded regions): should another process shrink {}, vmm would end",
            prefix(r.where), r.name, r.path);
      }
    }
    d.regions.emplace(r.name, std::move(region));
  }
  for (const auto& pd : d.description.domains) {
    for (const auto& m : pd.maps) {
      if (m.setvar_vaddr.empty()) continue;
      const std::shared_ptr<MemoryRegion>& region = d.regions.at(m.region);
      d.vmm_maps.emplace(
          m.setvar_vaddr,
          Impl::VmmMap{region, std::min(m.size.value_or(region->size()), region->size())});
    }
  }
  // Each VM is built on its CPUs: the threads its devices start now (a disk's I/O thread, a
  // network's transmit thread) inherit them, as those its run() starts will. The caller's CPUs
  // come back afterwards, and for a VM whose pin the host refuses (said again at run()), also
  // when building a VM throws.
  struct CallerCpus {
    CallerCpus() {
      cpu_set_t mask{};
      if (::sched_getaffinity(0, sizeof mask, &mask) == 0) cpus = mask;
    }
    ~CallerCpus() { restore(); }
    void restore() const { pin_thread(cpus); }
    std::optional<cpu_set_t> cpus;
  } caller;
  d.pins = vm_cpu_pins(d.description, caller.cpus);
  size_t index = 0;
  for (const auto* spec : d.description.vms()) {
    if (index < d.pins.size() && !pin_thread(d.pins[index])) caller.restore();
    d.vms.push_back(std::make_unique<Vm>(d.vm_config(*spec)));
    ++index;
  }
  if (d.shrink_watch && !d.vms.empty()) {
    control_loop().add(d.shrink_watch->fd(), EPOLLIN, [this](uint32_t) {
      for (const std::string& name : impl_->shrink_watch->take_shrunk()) {
        const std::string why = fmt::format(
            "memory region '{}': another process made its file smaller; what it held is lost "
            "to the guests, whose view of it is no longer shared",
            name);
        log::error("{}", why);
        request_stop(StopReason::error, why);
      }
    });
  }
}

System::~System() = default;

RunResult System::run() {
  auto& d = *impl_;
  if (d.vms.empty()) return RunResult{StopReason::error, "the description has no virtual machine"};
  // Every VM built before any runs: what only building finds (an image the loader refuses) is
  // one line before a guest has started, not an exception on a VM's thread.
  for (auto& vm : d.vms) vm->prepare();
  // A guest that resets or powers off ends only itself; a quit, a fault or an error ends the
  // whole system.
  // Each VM's thread (the caller's for a lone VM) pins itself before the VM's seccomp filter
  // (installed by run() on that thread) would refuse it; that thread stays so pinned.
  const auto& pins = d.pins;
  auto run_one = [this, &pins](size_t index) {
    Vm& vm = *impl_->vms[index];
    if (index < pins.size() && !pin_thread(pins[index])) {
      log::warn(
          "virtual machine '{}': cannot run on the host CPU its protection domain names "
          "({}); it runs where the scheduler puts it",
          vm.config().name, std::strerror(errno));
    }
    RunResult result;
    try {
      result = vm.run();
    } catch (const std::exception& e) {
      impl_->note_failure(std::current_exception());
      result = RunResult{StopReason::error, e.what()};
    }
    {
      std::lock_guard lock(impl_->stop_mutex);
      if (!impl_->first_result ||
          (impl_->first_result->exit_status() == 0 && result.exit_status() != 0)) {
        impl_->first_result = result;
      }
    }
    if (result.reason != StopReason::reset && result.reason != StopReason::power_off) {
      request_stop(StopReason::quit, fmt::format("virtual machine '{}' stopped", vm.config().name));
    }
    if (impl_->running.fetch_sub(1) == 1) impl_->control.stop();
  };
  d.running = d.vms.size();
  if (d.vms.size() == 1) {
    run_one(0);
  } else {
    // Each VM on a thread of its own, so that a VM's seccomp filter never meets another VM's
    // descriptors (a power button pressed, an irqfd released) and the control loop outlives a
    // VM that ends first (a second SIGTERM, the shutdown timeout).
    std::vector<std::thread> threads;
    try {
      for (size_t i = 0; i < d.vms.size(); ++i) threads.emplace_back(run_one, i);
      d.control.run();
    } catch (const std::exception& e) {
      // No thread for every VM, or a control callback threw: stop them all, then join.
      d.note_failure(std::current_exception());
      request_stop(StopReason::error, e.what());
    }
    if (d.loop_end_handler) d.loop_end_handler();
    for (auto& t : threads) t.join();
  }
  std::lock_guard lock(d.stop_mutex);
  if (d.failure) std::rethrow_exception(d.failure);
  return *d.first_result;
}

void System::set_loop_end_handler(std::function<void()> handler) {
  if (impl_->vms.size() == 1) {
    impl_->vms.front()->set_loop_end_handler(std::move(handler));
  } else {
    impl_->loop_end_handler = std::move(handler);
  }
}

EventLoop& System::control_loop() {
  return impl_->vms.size() == 1 ? impl_->vms.front()->event_loop() : impl_->control;
}

void System::request_stop(StopReason reason, const std::string& detail) {
  for (auto& vm : impl_->vms) vm->request_stop(reason, detail);
}

const SystemDescription& System::description() const {
  return impl_->description;
}

std::vector<Vm*> System::vms() {
  std::vector<Vm*> out;
  for (auto& vm : impl_->vms) out.push_back(vm.get());
  return out;
}

Vm& System::vm(std::string_view name) {
  for (auto& vm : impl_->vms) {
    if (vm->config().name == name) return *vm;
  }
  throw std::out_of_range(fmt::format("no virtual machine named '{}'", name));
}

std::shared_ptr<MemoryRegion> System::region(std::string_view name) const {
  auto it = impl_->regions.find(name);
  return it == impl_->regions.end() ? nullptr : it->second;
}

std::span<uint8_t> System::vmm_mapping(std::string_view setvar_vaddr) const {
  auto it = impl_->vmm_maps.find(setvar_vaddr);
  if (it == impl_->vmm_maps.end()) return {};
  return {it->second.region->host(), it->second.size};
}

}  // namespace libvmm
