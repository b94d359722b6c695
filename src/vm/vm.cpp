#include "libvmm/vm.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>

#include "../arch/machine.hpp"
#include "device_plan.hpp"
#include "host_events.hpp"
#include "libvmm/arch/machine_option.hpp"
#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/core/coalesced_writes.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/fault_report.hpp"
#include "libvmm/core/kvm_irq.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/pci/vfio.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/pci_transport.hpp"
#include "memory_slots.hpp"
#include "msi_routes.hpp"
#include "pci_notifiers.hpp"

namespace libvmm {

bool ram_must_be_shared(const VmConfig& config) {
  return config.ram_shared || devices_need_shared_ram(config.devices);
}

namespace {

void check_readable_file(const std::filesystem::path& path, const std::string& flag) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw UserError(fmt::format("{} {}: {}", flag, path.string(), std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode))
    throw UserError(fmt::format("{} {}: not a regular file", flag, path.string()));
  if (::access(path.c_str(), R_OK) != 0) {
    throw UserError(fmt::format("{} {}: {}", flag, path.string(), std::strerror(errno)));
  }
  // An empty initrd was skipped as if none was given: the guest then failed to find its root.
  if (st.st_size == 0)
    throw UserError(fmt::format("{} {}: the file is empty", flag, path.string()));
}

// Interrupt lines wired to host event sources: never handed to devices.
std::vector<uint32_t> taken_irqs(const VmConfig& c) {
  std::vector<uint32_t> taken;
  for (const IrqSource& s : c.irq_sources) taken.push_back(s.irq);
  return taken;
}

// GSIs for MSI routes: at most this many (KVM takes 4096 routes on x86, the controller's own
// included); vectors beyond them use KVM_SIGNAL_MSI.
constexpr uint32_t kMaxMsiRoutes = 2048;

}  // namespace

// Named, not anonymous: Vm::Impl holds these, and a class with external linkage may not hold
// members of internal linkage in a build that compiles several files as one (CMAKE_UNITY_BUILD).
namespace vm_parts {

// MSI-X messages of PCI functions, straight to KVM.
class KvmMsiSink final : public pci::MsiSink {
 public:
  explicit KvmMsiSink(KvmVm& vm) : vm_(&vm) {}
  void send(uint64_t address, uint32_t data) override {
    if (!vm_->signal_msi(address, data)) {
      log::debug("MSI to {:#x} (data {:#x}) not delivered", address, data);
    }
  }

 private:
  KvmVm* vm_;
};

// A passed-through device's BAR pages as KVM memory slots.
class SlotBarMapper final : public pci::BarMapper {
 public:
  explicit SlotBarMapper(MemorySlots& slots) : slots_(&slots) {}
  uint32_t map(uint64_t gpa, uint64_t size, void* host, const std::string& what) override {
    return slots_->add(gpa, size, host, false, what);
  }
  void unmap(uint32_t handle) override { slots_->remove(handle); }

 private:
  MemorySlots* slots_;
};

// Holds the devices' I/O threads back, before their seccomp filters, until the machine is whole:
// its rules pin calls to the vCPUs' descriptors (riscv64's KVM_INTERRUPT with the PLIC vmm
// emulates), which exist only once prepare() made the vCPUs. A VM torn down before that lets
// them go unfiltered, to exit.
class StartGate {
 public:
  void open(bool proceed) {
    {
      std::lock_guard lock(mutex_);
      if (state_ != State::closed) return;
      state_ = proceed ? State::open : State::abandoned;
    }
    changed_.notify_all();
  }
  // True once open(true): go on; false if the VM is going away, or `stop` is requested (the
  // waiting thread's owner is being destroyed before the VM got to open the gate).
  bool wait(std::stop_token stop) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, stop, [this] { return state_ != State::closed; });
    return state_ == State::open;
  }

 private:
  enum class State { closed, open, abandoned };
  std::mutex mutex_;
  std::condition_variable_any changed_;
  State state_ = State::closed;
};

}  // namespace vm_parts

namespace {

// A passed-through device's IOMMU group: the one found before (a jail has no sysfs), or its
// host side checked in sysfs now (pci::check_vfio_device: UserError naming the device).
unsigned vfio_group(const VfioDeviceConfig& v) {
  return v.iommu_group ? *v.iommu_group : pci::check_vfio_device({}, v.address, v.label);
}

}  // namespace

int RunResult::exit_status() const {
  switch (reason) {
    case StopReason::reset:
    case StopReason::power_off:
    case StopReason::quit:
      return 0;
    case StopReason::fault:
    case StopReason::error:
      return 1;
  }
  return 1;
}

void HostFileUses::add(const HostPath& host, const std::string& who,
                       const std::function<std::string(std::string_view)>& located) {
  using Use = HostPath::Use;
  if (host.path.empty() || host.use == Use::pty || host.use == Use::device) return;
  struct stat st {};
  const bool exists = ::stat(host.path.c_str(), &st) == 0;
  // Not files to truncate: devices (file:/dev/null) and pipes (file:/dev/stdout into `tee`).
  if (exists && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) return;
  const std::string key = exists ? fmt::format("{}:{}", st.st_dev, st.st_ino)
                                 : std::filesystem::absolute(host.path).lexically_normal().string();
  const bool writes = host.use != Use::read;
  const auto [it, fresh] = uses_.try_emplace(key, Held{who, writes});
  if (fresh) return;
  if (!writes && !it->second.writes) return;
  throw UserError(located(fmt::format("{} is already used by {}; give each its own file",
                                      host.path.string(), it->second.who)));
}

std::string host_file_clash(const VmConfig& c) {
  HostFileUses files;
  return host_file_clash(c, files);
}

std::string host_file_clash(const VmConfig& c, HostFileUses& files) {
  try {
    if (auto serial = char_backend_host_path(c.serial)) {
      const std::string who = fmt::format("{} {}", c.label("serial"), c.serial);
      files.add(*serial, who, [&](std::string_view m) { return fmt::format("{}: {}", who, m); });
    }
    for (const DeviceSpec& spec : c.devices) {
      const VirtioDeviceKind* kind = find_virtio_device_kind(spec.kind);
      if (kind == nullptr) continue;
      for (const HostPath& host : kind->host_paths(spec)) {
        files.add(host, spec.where.empty() ? std::string(kind->flag()) : spec.where,
                  [&](std::string_view m) { return spec.located(m); });
      }
    }
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

void validate(const VmConfig& c) {
  if (c.memory_size == 0) throw UserError(c.label("memory") + ": must be greater than zero");
  if (c.memory_size % MiB != 0) {
    throw UserError(
        fmt::format("{}: {} bytes is not a multiple of 1 MiB", c.label("memory"), c.memory_size));
  }
  if (c.ram_backing == RamBacking::hugetlb && !c.ram && c.memory_size % (2 * MiB) != 0) {
    throw UserError(
        fmt::format("{}: {} is not a multiple of the 2 MiB huge pages "
                    "--memory-backing hugetlb asks for",
                    c.label("memory"), format_size(c.memory_size)));
  }
  if (const uint64_t host = host_ram_size(); c.memory_size > host) {
    throw UserError(fmt::format("{}: {} is more than this host's {} of RAM", c.label("memory"),
                                format_size(c.memory_size), format_size(host)));
  }
  if (c.vcpus == 0) throw UserError(c.label("vcpus") + ": must be at least 1");
  if (c.kernel.empty()) throw UserError("--kernel: no guest kernel given");
  check_readable_file(c.kernel, c.label("kernel"));
  if (!c.initrd.empty()) check_readable_file(c.initrd, c.label("initrd"));
  // Each device's own checks, then host resources two devices would fight over (one image
  // given twice would be corrupted; one terminal serves one console).
  std::map<std::string, std::string> claimed;  // resource -> who has it
  if (c.serial == "stdio") claimed.emplace("stdio", "--serial stdio");
  for (const DeviceSpec& spec : c.devices) {
    if (auto problems = check_spec(spec, HostFiles::real()); !problems.empty()) {
      throw UserError(problems.front());
    }
    const VirtioDeviceKind& kind = *find_virtio_device_kind(spec.kind);
    for (const auto& claim : kind.claims(spec, HostFiles::real())) {
      const auto [it, fresh] = claimed.emplace(claim.resource, spec.where);
      if (!fresh) {
        throw UserError(spec.located(fmt::format(
            "{} is already used by {}; give it to one device only", claim.what, it->second)));
      }
    }
  }
  // The serial port's backend, before any of it is opened; then the host files of it and of
  // every device, together.
  if (const std::string why = check_char_backend_spec(c.serial); !why.empty()) {
    throw UserError(fmt::format("{}: {}", c.label("serial"), why));
  }
  if (std::string clash = host_file_clash(c); !clash.empty()) throw UserError(std::move(clash));
  // A passed-through device's host side (it exists, vfio-pci has it, it has an IOMMU group):
  // said before KVM is opened, as for any other host file a flag names.
  for (const VfioDeviceConfig& v : c.vfio) static_cast<void>(vfio_group(v));
  // The machine's own options (AArch64: --gic, --dtb), by its architecture's rules; another
  // architecture's are refused by name.
  if (auto problems = check_machine_options(c.machine_options, HostFiles::real());
      !problems.empty()) {
    throw UserError(problems.front());
  }
}

struct Vm::Impl {
  explicit Impl(const VmConfig& c) : config(c), kvm(c.kvm_device), vm(kvm.create_vm()) {}
  // Before any member goes: a device's I/O thread still at the gate must not hold up its join.
  ~Impl() { io_threads_gate->open(false); }

  // Declaration order is teardown order reversed: vCPUs stop first, then devices, then the
  // machine (which owns the backends devices write to), the loop and memory last.
  VmConfig config;
  Kvm kvm;
  KvmVm vm;
  std::unique_ptr<MemorySlots> slots;  // RAM, <map> regions, BAR pages of VFIO devices
  GuestMemory memory;
  EventLoop loop;
  std::unique_ptr<Machine> machine;
  // The machine's own system calls, for each thread's seccomp filter.
  std::function<std::vector<SeccompRule>(ThreadRole, const SeccompFds&)> machine_seccomp() const {
    return [m = machine.get()](ThreadRole role, const SeccompFds& fds) {
      return m->seccomp_rules(role, fds);
    };
  }
  std::unique_ptr<MachineContext> machine_context;
  std::function<void()>
      shutdown_handler;  // set_shutdown_handler()  // what the machine's steps work on
  std::function<void()> loop_end_handler;  // set_loop_end_handler()
  Bus mmio{"MMIO"};
  Bus pio{"port I/O"};
  std::unique_ptr<FaultReporter> faults;
  // Ports whose writes KVM queues instead of exiting (PCI's CONFIG_ADDRESS), and the ring the
  // vCPUs replay them from (mapped with the first vCPU).
  std::vector<std::pair<uint16_t, uint32_t>> coalesced_ports;
  std::unique_ptr<CoalescedWrites> coalesced;
  std::vector<std::unique_ptr<VcpuRunner>> vcpus;
  std::mutex irq_mutex;
  std::map<uint32_t, std::shared_ptr<IrqLine>> irqs;  // KvmIrqLines, or the machine's own
  std::vector<std::shared_ptr<VirtioMmioTransport>> transports;
  size_t mmio_devices = 0;  // placed virtio-mmio devices: the next one takes the next slot
  std::shared_ptr<pci::HostBridge> pci_bridge;  // made with the first PCI device
  std::shared_ptr<vm_parts::KvmMsiSink> msi;    // where the machine has no GSI routing for MSIs
  std::shared_ptr<GsiRoutes> gsi_routes;        // else: each function's vectors routed, with irqfds
  bool msi_devid = false;                       // MSIs carry the requester ID (GICv3 ITS)
  // Irqfds of PCI functions (virtio-pci vectors, passed-through INTx) made before prepare()
  // has initialised the interrupt controller: AArch64's vGIC takes none before (KVM_IRQFD
  // blocks there with an ITS, and a resampling one fails with EAGAIN).
  struct EarlyIrqfd {
    int fd = -1;
    uint32_t gsi = 0;
    int resample = -1;  // a level-triggered line's resample eventfd, or -1
  };
  std::vector<EarlyIrqfd> early_irqfds;
  // virtio-pci devices to wire to INTx lines (no MSIs), by number: the planned ones once every
  // planned device is placed, those the program adds at prepare().
  std::vector<std::pair<std::shared_ptr<VirtioPciTransport>, uint8_t>> intx_pending;
  std::vector<std::shared_ptr<VirtioPciTransport>> pci_transports;
  std::unique_ptr<pci::VfioContainer> vfio;  // with the first passed-through device
  std::vector<std::shared_ptr<pci::VfioPciDevice>> vfio_devices;
  std::vector<UniqueFd> notify_fds;
  std::vector<std::pair<int, uint32_t>> external_irqfds;  // eventfds handed in, and their GSI
  std::vector<std::pair<int, uint32_t>> call_irqfds;      // queues served elsewhere: call fd, IRQ
  std::vector<PlacedDevice> placed;
  // Every virtIO device with its transport, for rescan_devices().
  std::vector<std::pair<std::shared_ptr<VirtioDevice>, VirtioTransport*>> virtio_devices;
  std::vector<uint32_t> pulsed_irqs;  // lines devices and event sources pulse (irqfds)
  bool prepared = false;
  std::shared_ptr<vm_parts::StartGate> io_threads_gate =
      std::make_shared<vm_parts::StartGate>();  // opened by prepare()
  std::mutex stop_mutex;
  std::optional<RunResult> result;
};

Vm::Vm(const VmConfig& config) {
  validate(config);
  impl_ = std::make_unique<Impl>(config);
  auto& d = *impl_;
  d.machine = make_host_machine();
  if (config.vcpus > d.machine->max_vcpus()) {
    throw UserError(fmt::format("{}: {} is more than the {} this machine supports",
                                config.label("vcpus"), config.vcpus, d.machine->max_vcpus()));
  }
  if (const int kvm_max = d.kvm.check_extension(KVM_CAP_MAX_VCPUS);
      kvm_max > 0 && config.vcpus > static_cast<uint32_t>(kvm_max)) {
    throw UserError(fmt::format("{}: {} is more than this host's KVM allows ({})",
                                config.label("vcpus"), config.vcpus, kvm_max));
  }
  d.kvm.require_extension(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY");
  d.kvm.require_extension(KVM_CAP_IRQFD, "KVM_CAP_IRQFD");
  d.kvm.require_extension(KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD");

  // Guest RAM: one region, mapped in as many pieces as the memory map has RAM ranges.
  auto ram = config.ram ? config.ram
                        : create_ram_region("guest_ram", config.memory_size, config.ram_backing,
                                            ram_must_be_shared(config), "guest RAM");
  if (ram->size() < config.memory_size) {
    throw UserError(fmt::format("guest RAM: region '{}' is smaller than {:#x} bytes", ram->name(),
                                config.memory_size));
  }
  const int nr_slots = d.vm.check_extension(KVM_CAP_NR_MEMSLOTS);
  KvmVm* kvm_vm = &d.vm;
  d.slots = std::make_unique<MemorySlots>(
      nr_slots > 0 ? static_cast<uint32_t>(nr_slots) : 32,
      [kvm_vm](uint32_t slot, uint64_t gpa, uint64_t size, void* host, bool readonly) {
        kvm_vm->set_user_memory_region(slot, gpa, size, host, readonly);
      });
  uint64_t offset = 0;
  for (const RamRange& range : d.machine->ram_layout(config.memory_size)) {
    const GuestMapping& m = d.memory.map(range.gpa, ram, offset, range.size);
    d.slots->add(m.gpa, m.size, m.host(), m.readonly, "guest RAM");
    log::debug("RAM [{:#x}, {:#x}) ({})", m.gpa, m.end(), format_size(m.size));
    offset += range.size;
  }

  if (!config.maps.empty()) map_regions();

  // A VM of a description is named in its reports (several may fault); its strict setting is
  // the description's attribute (`vmm run` refuses --strict with a description).
  FaultReporter::Options fault_options;
  fault_options.strict = config.strict_faults;
  if (config.labels.contains("strict")) {
    fault_options.vm_name = config.name;
    fault_options.strict_setting = config.label("strict");
  }
  d.faults = std::make_unique<FaultReporter>(d.memory, d.mmio, std::move(fault_options));
  d.machine_context.reset(new MachineContext{
      d.config, d.vm, d.memory, d.mmio, d.pio, d.loop,
      [this](uint32_t number) { return irq(number); },
      [this](StopReason reason, std::string detail) { request_stop(reason, std::move(detail)); },
      [this] { request_shutdown(); },
      [this](uint16_t port, uint32_t size) { impl_->coalesced_ports.emplace_back(port, size); }});
  d.machine->create_interrupt_controller(*d.machine_context);
  d.machine->add_platform_devices(*d.machine_context);
  wire_irq_sources();

  add_config_devices();
  add_vfio_devices();
}

void Vm::add_vfio_devices() {
  auto& d = *impl_;
  if (d.config.vfio.empty()) return;
  // Every refusal before anything is opened: the host's side first, then the memory to pin.
  std::vector<unsigned> groups;
  for (const VfioDeviceConfig& v : d.config.vfio) {
    groups.push_back(vfio_group(v));
  }
  uint64_t ram = 0;
  for (const GuestMapping& m : d.memory.mappings()) ram += m.size;
  if (uint64_t limit = 0; !pci::can_pin(ram, limit)) {
    throw UserError(pci::vfio_memlock_error(d.config.vfio.front().label, ram, limit));
  }
  d.vfio = std::make_unique<pci::VfioContainer>();
  for (size_t i = 0; i < d.config.vfio.size(); ++i) {
    const VfioDeviceConfig& v = d.config.vfio[i];
    ensure_pci_bridge(v.label);
    // MSI-X vectors as irqfds the device signals itself, on GSI routes that follow the guest's
    // table, where the machine routes GSIs; else through the loop and KVM_SIGNAL_MSI.
    auto sink = [this, &d](uint16_t vectors) -> std::shared_ptr<pci::MsiSink> {
      if (!d.gsi_routes) return d.msi;
      return RoutedMsiSink::for_vm(d.vm, d.gsi_routes, vectors, true, pci_requester_id());
    };
    auto device = pci::VfioPciDevice::open(*d.vfio, groups[i], v.address, v.label, sink,
                                           std::make_shared<vm_parts::SlotBarMapper>(*d.slots));
    if (i == 0) {
      for (const GuestMapping& m : d.memory.mappings()) {
        d.vfio->map_dma(m.gpa, m.host(), m.size, m.readonly, v.label);
      }
    }
    const uint8_t number = d.pci_bridge->add(device);
    if (device->has_intx()) wire_vfio_intx(*device, number);
    device->start(d.loop);
    log::debug("{} at PCI 00:{:02x}.0", device->name(), number);
    d.placed.push_back({"vfio", device->name(), 0, 0, 0, number});
    d.vfio_devices.push_back(std::move(device));
  }
}

std::optional<uint32_t> Vm::pci_requester_id() const {
  const auto& d = *impl_;
  if (!d.msi_devid) return std::nullopt;
  return pci::HostBridge::requester_id(d.pci_bridge->next_device());
}

std::vector<uint32_t> Vm::wire_virtio_pci_intx() {
  auto& d = *impl_;
  std::vector<uint32_t> lines;
  for (auto& [transport, number] : d.intx_pending) {
    // The next device slot's line, level-triggered (the transport raises it while its ISR is
    // set); taken now that every planned device has its slot.
    const DeviceSlot slot = device_slot(d.machine->memory_map(d.config.memory_size), d.mmio_devices,
                                        taken_irqs(d.config));
    if (!slot.irq) {
      throw UserError(fmt::format(
          "{}: no interrupt line left for its INTx (this machine has no MSIs for PCI devices)",
          transport->name()));
    }
    if (!d.machine->describe_pci_intx(number, 0, *slot.irq)) {
      throw UserError(fmt::format("{}: this machine can give PCI devices neither MSIs nor INTx",
                                  transport->name()));
    }
    ++d.mmio_devices;  // the slot's line is the device's now
    transport->set_intx(irq(*slot.irq));
    log::debug("{}: INTA# on interrupt line {} (no MSIs)", transport->name(), *slot.irq);
    lines.push_back(*slot.irq);
  }
  d.intx_pending.clear();
  return lines;
}

void Vm::wire_vfio_intx(pci::VfioPciDevice& device, uint8_t number) {
  auto& d = *impl_;
  // A line of its own (the next device slot's), level-triggered: a KVM irqfd with a resample
  // eventfd, both handed to VFIO; the machine describes the route (x86_64: the _PRT).
  const DeviceSlot slot = device_slot(d.machine->memory_map(d.config.memory_size), d.mmio_devices,
                                      taken_irqs(d.config));
  if (!slot.irq || d.machine->emulated_irq(*slot.irq)) {
    log::warn("{}: no interrupt line left for its INTx; the guest sees no INTx pin", device.name());
    return;
  }
  if (!d.machine->describe_pci_intx(number, 0, *slot.irq)) {
    log::debug("{}: this machine describes no PCI INTx routes; no INTx pin", device.name());
    return;
  }
  ++d.mmio_devices;  // the slot's line is the device's now
  UniqueFd trigger(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  UniqueFd resample(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!trigger || !resample) throw_errno("eventfd for a passed-through INTx");
  d.early_irqfds.push_back({trigger.get(), d.machine->kvm_irq(*slot.irq).gsi, resample.get()});
  device.set_intx(trigger.get(), resample.get());
  log::debug("{}: INTA# on interrupt line {}", device.name(), *slot.irq);
  d.notify_fds.push_back(std::move(trigger));
  d.notify_fds.push_back(std::move(resample));
}

void Vm::add_config_devices() {
  auto& d = *impl_;
  const MemoryMap map = d.machine->memory_map(d.config.memory_size);
  // Whether PCI functions get MSIs is known once the host bridge exists (AArch64 adds its ITS
  // with it): made first where the VM has any.
  const auto first_pci = std::find_if(
      d.config.devices.begin(), d.config.devices.end(),
      [&](const DeviceSpec& s) { return uses_pci_transport(s, map.virtio_pci_by_default); });
  if (first_pci != d.config.devices.end() && map.pci) {
    ensure_pci_bridge(first_pci->located(first_pci->kind));
  }
  const bool pci_intx = !d.machine->pci_msi();
  const std::vector<DevicePlacement> plan =
      plan_devices(map, d.config.devices, taken_irqs(d.config), pci_intx);
  std::vector<std::string> passthrough;
  for (const VfioDeviceConfig& v : d.config.vfio) passthrough.push_back(v.label);
  if (auto problems = plan_problems(map, plan, passthrough); !problems.empty()) {
    throw UserError(problems.front());
  }
  for (const DevicePlacement& p : plan) {
    const VirtioDeviceKind& kind = *p.device.kind;
    const DeviceContext context{d.memory,
                                d.loop,
                                d.config.name,
                                p.device.index,
                                [this] { request_stop(StopReason::quit, "quit from the console"); },
                                io_thread_start_hook(),
                                [this] { request_shutdown(); },
                                d.config.vcpus};
    std::shared_ptr<VirtioDevice> device = kind.create(*p.device.spec, context);
    attach_virtio_device(device, p.slot, std::string(kind.element()));
    kind.start(*device, d.loop);
  }
  // Their INTx lines now, where the plan put them: after every planned virtio-mmio device's,
  // before any a device passed through or added by the program takes.
  const std::vector<uint32_t> wired = wire_virtio_pci_intx();
  std::vector<uint32_t> planned;
  for (const DevicePlacement& p : plan) {
    if (p.slot.pci_intx && p.slot.irq) planned.push_back(*p.slot.irq);
  }
  if (wired != planned) throw std::logic_error("virtio-pci INTx lines not where the plan has them");
}

void Vm::map_regions() {
  auto& d = *impl_;
  for (const RegionMap& r : d.config.maps) {
    if (r.readonly && d.vm.check_extension(KVM_CAP_READONLY_MEM) <= 0) {
      throw UserError(
          fmt::format("memory region '{}': this host's KVM cannot map memory read-only "
                      "(no KVM_CAP_READONLY_MEM)",
                      r.region->name()));
    }
    const GuestMapping& m = d.memory.map(r.gpa, r.region, 0, r.size, r.readonly);
    try {
      d.slots->add(m.gpa, m.size, m.host(), m.readonly,
                   fmt::format("memory region '{}'", r.region->name()));
    } catch (const MemorySlotError& e) {
      throw UserError(e.what());
    } catch (const SystemError& e) {
      // KVM's own limits (an address past what this host's guests can address: x86's
      // physical address width, AArch64's IPA size) show only as EINVAL here.
      throw UserError(fmt::format(
          "memory region '{}' at [{:#x}, {:#x}): KVM refused to map it ({}); is it beyond the "
          "guest-physical addresses this host supports?",
          r.region->name(), m.gpa, m.end(), std::strerror(e.code())));
    }
    log::debug("region '{}' at [{:#x}, {:#x}){}", r.region->name(), m.gpa, m.end(),
               r.readonly ? " read-only" : "");
  }
}

void Vm::wire_irq_sources() {
  auto& d = *impl_;
  for (const IrqSource& source : d.config.irq_sources) {
    if (source.is_eventfd && d.machine->emulated_irq(source.irq)) {
      connect_eventfd(source.fd, source.irq);  // no KVM controller: through the event loop
      continue;
    }
    if (source.is_eventfd) {
      // Straight to KVM: the host signals the guest without a trip through this process.
      const uint32_t gsi = d.machine->kvm_irq(source.irq).gsi;  // AArch64: INTID - 32
      d.vm.register_irqfd(source.fd, gsi);
      d.external_irqfds.emplace_back(source.fd, gsi);
      continue;
    }
    const int fd = source.fd;
    std::shared_ptr<IrqLine> line = irq(source.irq);
    d.pulsed_irqs.push_back(source.irq);
    d.loop.add(fd, EPOLLIN, [fd, line](uint32_t) {
      if (take_host_events(fd)) line->pulse();  // one pulse per wake-up
    });
  }
}

IoThread::StartHook Vm::io_thread_start_hook() {
  auto& d = *impl_;
  // A device's I/O thread loads its filter first thing (it starts before the event loop loads
  // its own, so it inherits none), once the vCPUs exist (StartGate).
  return [this, mode = d.config.seccomp, vm_fd = d.vm.fd(), machine = d.machine_seccomp(),
          gate = d.io_threads_gate](std::stop_token stop) {
    if (!gate->wait(stop)) return false;  // the VM or the device went away: it only exits
    char name[16] = "I/O thread";         // IoThread named it (blk-io<N>) before this hook
    pthread_getname_np(pthread_self(), name, sizeof name);
    try {
      install_seccomp(ThreadRole::io, mode, {-1, vm_fd, {}, machine}, name);
    } catch (const std::exception& e) {
      request_stop(StopReason::error, e.what());
      return false;  // never serves the guest unfiltered
    }
    seccomp_self_test(name);
    return true;
  };
}

void Vm::add_virtio_device(std::shared_ptr<VirtioDevice> device, Transport transport) {
  auto& d = *impl_;
  if (d.prepared) throw std::logic_error("Vm::add_virtio_device after prepare()");
  const MemoryMap map = d.machine->memory_map(d.config.memory_size);
  if (transport == Transport::board_default) {
    transport = map.virtio_pci_by_default ? Transport::pci : Transport::mmio;
  }
  if (transport == Transport::pci) return attach_virtio_pci_device(std::move(device), "");
  // The next slot and line after the planned devices, by the planner's own rule.
  const DeviceSlot slot = device_slot(map, d.mmio_devices, taken_irqs(d.config));
  if (!slot.irq) {
    throw UserError(
        fmt::format("{}: no free interrupt line left for it ({} virtio-mmio devices "
                    "at most)",
                    device->name(), map.virtio_mmio_slots));
  }
  attach_virtio_device(std::move(device), slot, "");
}

void Vm::ensure_pci_bridge(const std::string& who) {
  auto& d = *impl_;
  if (!d.pci_bridge) {
    const std::optional<pci::HostBridgeLayout> layout =
        d.machine->memory_map(d.config.memory_size).pci;
    if (!layout) throw UserError(who + ": this machine has no PCI bus");
    d.pci_bridge = pci::HostBridge::create(*layout);
    d.msi = std::make_shared<vm_parts::KvmMsiSink>(d.vm);
    // First: it may add the MSI controller the routes use.
    d.machine->describe_pci(*d.machine_context, *layout);
    if (auto routing = d.machine->gsi_routing()) {
      d.msi_devid = routing->msi_devid;
      KvmVm* vm = &d.vm;
      d.gsi_routes = std::make_shared<GsiRoutes>(
          std::move(routing->irqchip_routes), routing->first_msi_gsi, kMaxMsiRoutes,
          [vm](const std::vector<kvm_irq_routing_entry>& table) { set_gsi_routing(*vm, table); });
    }
    d.mmio.attach(layout->ecam.base, layout->ecam.size, d.pci_bridge->ecam());
    d.mmio.attach(layout->mmio32.base, layout->mmio32.size,
                  d.pci_bridge->window(pci::BarKind::mem32));
    if (layout->mmio64.size != 0) {
      d.mmio.attach(layout->mmio64.base, layout->mmio64.size,
                    d.pci_bridge->window(pci::BarKind::mem64));
    }
    if (layout->io.size != 0) {
      d.pio.attach(pci::HostBridge::kLegacyConfigPort, pci::HostBridge::kLegacyConfigPorts,
                   d.pci_bridge->legacy_config());
      // Its CONFIG_ADDRESS writes wait in KVM's queue where the machine asked (x86_64's do).
      d.pio.attach(layout->io.base, layout->io.size, d.pci_bridge->window(pci::BarKind::io));
    }
  }
}

void Vm::attach_virtio_pci_device(std::shared_ptr<VirtioDevice> device, std::string kind) {
  auto& d = *impl_;
  ensure_pci_bridge(device->name());
  // MSI-X vectors as GSI routes + irqfds (the route follows what the guest programs), where
  // the machine routes GSIs; else KVM_SIGNAL_MSI per message.
  ExternalQueues* const external = device->external_queues();
  std::shared_ptr<pci::MsiSink> msi = d.msi;
  // Recorded only once the function is on the bus: a program may catch a full bus's UserError
  // and place the device elsewhere, and the sink's eventfds close with it.
  auto early = std::make_shared<std::vector<Impl::EarlyIrqfd>>();
  if (d.gsi_routes) {
    // Direct (irqfds that follow the guest's masks) where a server signals the vectors itself.
    msi = RoutedMsiSink::for_vm(d.vm, d.gsi_routes, VirtioPciTransport::msix_vectors(*device),
                                external != nullptr, pci_requester_id(),
                                [early](int fd, uint32_t gsi) {
                                  early->push_back({fd, gsi, -1});
                                });
  }
  auto transport = std::make_shared<VirtioPciTransport>(device, d.memory, msi, nullptr);
  uint8_t number = 0;
  try {
    number = d.pci_bridge->add(transport);
  } catch (...) {
    transport.reset();    // its end pauses the device's I/O for good...
    device->resume_io();  // ...and the device is the caller's again, as it came
    throw;
  }
  d.early_irqfds.insert(d.early_irqfds.end(), early->begin(), early->end());
  d.virtio_devices.emplace_back(device, transport.get());
  if (!d.machine->pci_msi()) d.intx_pending.emplace_back(transport, number);

  // Queue notifications through an ioeventfd per queue at its notify address in BAR 0 (Linux
  // writes the queue index as 16 bits), registered while BAR 0 decodes and following it.
  KvmVm* vm = &d.vm;
  auto notifiers = PciNotifyEventfds::follow(
      *transport,
      [vm](int fd, uint64_t addr) { vm->register_ioeventfd(fd, addr, 2, true, std::nullopt); },
      [vm](int fd, uint64_t addr) { vm->unregister_ioeventfd(fd, addr, 2, true, std::nullopt); });
  for (uint16_t q = 0; q < transport->queue_count(); ++q) {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw_errno("eventfd for a virtIO queue");
    notifiers->add_queue(fd.get());
    const int raw = fd.get();
    // Queues served elsewhere: the server waits on the eventfd itself. Else the device's I/O
    // thread does, or the event loop.
    if (external == nullptr && !device->watch_queue_notify(q, raw)) {
      d.loop.add(raw, EPOLLIN, [raw, transport, q](uint32_t) {
        uint64_t count;
        if (::read(raw, &count, sizeof count) == sizeof count) transport->notify(q);
      });
    }
    d.notify_fds.push_back(std::move(fd));
  }
  if (external != nullptr) {
    // The server's interrupts: a call eventfd per queue, relayed by the event loop to the
    // queue's MSI-X vector (or INTx); the transport hands over the vector's own irqfd instead
    // where the sink has one (direct above).
    std::vector<QueueEventfds> fds;
    for (uint16_t q = 0; q < transport->queue_count(); ++q) {
      UniqueFd call(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!call) throw_errno("eventfd for a virtIO queue");
      const int raw = call.get();
      d.loop.add(raw, EPOLLIN, [raw, transport, q](uint32_t) {
        uint64_t count;
        if (::read(raw, &count, sizeof count) == sizeof count) transport->external_used(q);
      });
      fds.push_back({notifiers->fds()[q], raw});
      d.notify_fds.push_back(std::move(call));
    }
    transport->set_external_eventfds(std::move(fds));
  }
  transport->set_renotify([notifiers](uint16_t q) {
    const uint64_t one = 1;
    const std::vector<int>& fds = notifiers->fds();
    return q < fds.size() && ::write(fds[q], &one, sizeof one) == sizeof one;
  });
  // Where the bridge placed BAR 0 (it decodes there once the guest turns Memory Space on).
  std::array<uint8_t, 4> b{};
  transport->config_read(pci::kBar0, b);
  const uint64_t bar0 =
      (uint64_t{b[0]} | uint64_t{b[1]} << 8 | uint64_t{b[2]} << 16 | uint64_t{b[3]} << 24) &
      ~0xfull;
  d.placed.push_back(
      {std::move(kind), device->name(), bar0, VirtioPciTransport::kRegisterBarSize, 0, number});
  d.pci_transports.push_back(std::move(transport));
  log::debug("{} at PCI 00:{:02x}.0, BAR 0 at {:#x}", device->name(), number, bar0);
}

void Vm::attach_virtio_device(std::shared_ptr<VirtioDevice> device, const DeviceSlot& slot,
                              std::string kind) {
  auto& d = *impl_;
  if (slot.pci_device) return attach_virtio_pci_device(std::move(device), std::move(kind));
  ++d.mmio_devices;
  const uint64_t base = slot.base;
  const uint32_t irq_number = *slot.irq;
  auto transport = std::make_shared<VirtioMmioTransport>(device, d.memory, irq(irq_number));
  d.virtio_devices.emplace_back(device, transport.get());
  d.pulsed_irqs.push_back(irq_number);
  d.mmio.attach(base, slot.size, transport);

  if (ExternalQueues* external = device->external_queues()) {
    // Queues served by another process: KVM signals the server's kick eventfd itself, and the
    // server's call eventfd is an irqfd on the device's line (registered in prepare()).
    std::vector<QueueEventfds> fds;
    for (uint16_t q = 0; q < transport->queue_count(); ++q) {
      UniqueFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      UniqueFd call(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!kick || !call) throw_errno("eventfd for a virtIO queue");
      d.vm.register_ioeventfd(kick.get(), base + VirtioMmioTransport::notify_offset(), 4, true, q);
      fds.push_back({kick.get(), call.get()});
      d.call_irqfds.emplace_back(call.get(), irq_number);
      d.notify_fds.push_back(std::move(kick));
      d.notify_fds.push_back(std::move(call));
    }
    external->set_queue_eventfds(std::move(fds));
    d.machine->describe_virtio_mmio(base, slot.size, irq_number);
    d.transports.push_back(std::move(transport));
    d.placed.push_back(
        {std::move(kind), device->name(), base, slot.size, irq_number, std::nullopt});
    log::debug("{} at [{:#x}, {:#x}), IRQ {}, queues served elsewhere", device->name(), base,
               base + slot.size, irq_number);
    return;
  }

  // Queue notifications skip the vCPU thread: KVM signals an eventfd per queue (matched on the
  // queue index written) and the event loop runs the device, or the device's own I/O thread
  // waits on it (watch_queue_notify()). A device that yields a busy
  // queue signals the same eventfd, so the loop serves other sources before it comes back.
  std::vector<int> queue_fds;  // this device's, by queue index
  for (uint16_t q = 0; q < transport->queue_count(); ++q) {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw_errno("eventfd for a virtIO queue");
    d.vm.register_ioeventfd(fd.get(), base + VirtioMmioTransport::notify_offset(), 4, true, q);
    const int raw = fd.get();
    if (!device->watch_queue_notify(q, raw)) {  // else the device's I/O thread waits on it
      d.loop.add(raw, EPOLLIN, [raw, transport, q](uint32_t) {
        uint64_t count;
        if (::read(raw, &count, sizeof count) == sizeof count) transport->notify(q);
      });
    }
    queue_fds.push_back(raw);
    d.notify_fds.push_back(std::move(fd));
  }
  transport->set_renotify([queue_fds](uint16_t q) {
    const uint64_t one = 1;
    return q < queue_fds.size() && ::write(queue_fds[q], &one, sizeof one) == sizeof one;
  });
  d.machine->describe_virtio_mmio(base, slot.size, irq_number);
  d.transports.push_back(std::move(transport));
  d.placed.push_back({std::move(kind), device->name(), base, slot.size, irq_number, std::nullopt});
  log::debug("{} at [{:#x}, {:#x}), IRQ {}", device->name(), base, base + slot.size, irq_number);
}

void Vm::coalesce_port_writes(KvmVcpu& vcpu) {
  auto& d = *impl_;
  if (d.coalesced_ports.empty()) return;
  // The ring first: a port registered without it would have its writes queued for nobody.
  d.coalesced = CoalescedWrites::map(d.vm, vcpu.fd());
  if (!d.coalesced) return;
  for (const auto& [port, size] : d.coalesced_ports) {
    if (d.vm.register_coalesced_pio(port, size)) {
      log::debug("port {:#x}: KVM queues its writes for the vCPUs (coalesced)", port);
    }
  }
}

void Vm::prepare() {
  auto& d = *impl_;
  if (d.prepared) return;
  static_cast<void>(wire_virtio_pci_intx());
  d.machine->load_guest(*d.machine_context);
  for (uint32_t i = 0; i < d.config.vcpus; ++i) {
    auto vcpu = d.vm.create_vcpu(i);
    d.machine->setup_vcpu(*d.machine_context, *vcpu);
    if (i == 0) coalesce_port_writes(*vcpu);
    VcpuRunner::Context ctx;
    ctx.mmio = &d.mmio;
    ctx.pio = &d.pio;
    ctx.coalesced = d.coalesced.get();
    ctx.faults = d.faults.get();
    ctx.request_stop = [this](StopReason r, std::string detail) {
      request_stop(r, std::move(detail));
    };
    Machine* machine = d.machine.get();
    ctx.instruction_pointer = [machine](KvmVcpu& v) { return machine->instruction_pointer(v); };
    ctx.instruction_pointer_past_writes = machine->instruction_pointer_past_writes();
    MachineContext* machine_context = d.machine_context.get();
    ctx.arch_exit = [machine, machine_context](KvmVcpu& v) {
      return machine->handle_exit(*machine_context, v);
    };
    ctx.seccomp = d.config.seccomp;
    ctx.vm_fd = d.vm.fd();
    ctx.machine_seccomp = d.machine_seccomp();
    auto runner = std::make_unique<VcpuRunner>(std::move(vcpu), std::move(ctx));
    if (auto cpu = d.config.vcpu_host_cpus.find(i); cpu != d.config.vcpu_host_cpus.end()) {
      runner->set_host_cpu(cpu->second);
    }
    const std::lock_guard lock(d.stop_mutex);  // request_stop() walks the list from any thread
    d.vcpus.push_back(std::move(runner));
  }
  // A line's irqfd is made on its first pulse; made now, the threads' seccomp filters need not
  // allow eventfd2 and KVM_IRQFD while the guest runs. Not earlier: AArch64 takes irqfds only
  // once its vGIC is initialised, after the last vCPU's setup.
  for (uint32_t number : d.pulsed_irqs) {
    irq(number);
    std::lock_guard lock(d.irq_mutex);
    if (auto* line = dynamic_cast<KvmIrqLine*>(d.irqs.at(number).get())) line->irqfd();
  }
  for (const Impl::EarlyIrqfd& e : d.early_irqfds) {
    if (e.resample >= 0) {
      d.vm.register_irqfd(e.fd, e.gsi, e.resample);
    } else {
      d.vm.register_irqfd(e.fd, e.gsi);
    }
  }
  for (const auto& [fd, number] : d.call_irqfds) {
    if (d.machine->emulated_irq(number)) {
      connect_eventfd(fd, number);
    } else {
      d.vm.register_irqfd(fd, d.machine->kvm_irq(number).gsi);
    }
  }
  d.io_threads_gate->open(true);
  d.prepared = true;
}

Vm::~Vm() {
  if (!impl_) return;
  for (auto& v : impl_->vcpus) v->stop();
  for (auto& v : impl_->vcpus) v->join();
  // Device I/O threads end their rounds now, while the vCPUs' fds are open: an interrupt
  // controller emulated here (riscv64's PLIC) injects through them, and they close before the
  // transports go (whose own pause then finds nothing left). A thread still at the start gate
  // (the VM never ran) has nothing in flight and is not waited for (IoThread::pause).
  for (auto& [device, transport] : impl_->virtio_devices) device->pause_io();
  for (const auto& [fd, gsi] : impl_->external_irqfds) {
    try {
      impl_->vm.unregister_irqfd(fd, gsi);
    } catch (const std::exception&) {
      // The VM is going away; KVM drops the irqfd with it.
    }
  }
}

RunResult Vm::run() {
  prepare();
  auto& d = *impl_;
  // vCPU threads first: a thread started after the loop's filter would inherit it on top of
  // its own (and the loop would need clone). Each vCPU loads its filter before its first
  // KVM_RUN; the loop loads its own before serving the first event.
  for (auto& v : d.vcpus) v->start();
  bool filtered = true;
  try {
    install_seccomp(ThreadRole::event_loop, d.config.seccomp,
                    {-1, d.vm.fd(), {}, d.machine_seccomp()}, "event loop");
  } catch (const std::exception& e) {
    request_stop(StopReason::error, e.what());
    filtered = false;  // the loop never serves the guest unfiltered
  }
  // A loop that fails (a callback's exception, epoll itself) still stops and joins the vCPUs
  // before the exception goes on: the guest must not run on unserved, nor a second run() find
  // their threads joinable.
  std::exception_ptr failure;
  if (filtered) {
    try {
      seccomp_self_test("event loop");
      d.loop.run();
    } catch (const std::exception& e) {
      request_stop(StopReason::error, fmt::format("the event loop failed: {}", e.what()));
      failure = std::current_exception();
    }
  }
  if (d.loop_end_handler) d.loop_end_handler();
  for (auto& v : d.vcpus) v->stop();
  for (auto& v : d.vcpus) v->join();
  if (failure) std::rethrow_exception(failure);
  for (const auto& device : d.vfio_devices) device->log_slow_paths();
  std::lock_guard lock(d.stop_mutex);
  return d.result.value_or(RunResult{StopReason::error, "the event loop stopped unexpectedly"});
}

bool Vm::press_power_button() {
  return impl_->machine->press_power_button();
}

void Vm::set_shutdown_handler(std::function<void()> handler) {
  impl_->shutdown_handler = std::move(handler);
}

void Vm::set_loop_end_handler(std::function<void()> handler) {
  impl_->loop_end_handler = std::move(handler);
}

void Vm::request_shutdown() {
  auto& d = *impl_;
  if (d.shutdown_handler) {
    d.shutdown_handler();
    return;
  }
  if (press_power_button()) {
    log::info("console: pressed the guest's power button");
  } else {
    request_stop(StopReason::quit,
                 "quit from the console (the guest does not listen to a power button)");
  }
}

bool Vm::stopping() const {
  std::lock_guard lock(impl_->stop_mutex);
  return impl_->result.has_value();
}

void Vm::request_stop(StopReason reason, std::string detail) {
  auto& d = *impl_;
  {
    std::lock_guard lock(d.stop_mutex);
    if (d.result) {
      log::debug("ignoring stop request ({}: {}): already stopping", to_string(reason), detail);
      return;
    }
    d.result = RunResult{reason, std::move(detail)};
    for (auto& v : d.vcpus) v->stop();  // under the lock: prepare() may be adding them
  }
  d.loop.stop();
}

const VmConfig& Vm::config() const {
  return impl_->config;
}
GuestMemory& Vm::memory() {
  return impl_->memory;
}
Bus& Vm::mmio_bus() {
  return impl_->mmio;
}
Bus& Vm::pio_bus() {
  return impl_->pio;
}
EventLoop& Vm::event_loop() {
  return impl_->loop;
}
KvmVm& Vm::kvm_vm() {
  return impl_->vm;
}

const std::vector<PlacedDevice>& Vm::devices() const {
  return impl_->placed;
}

size_t Vm::rescan_devices() {
  size_t changed = 0;
  for (auto& [device, transport] : impl_->virtio_devices) {
    if (!device->rescan()) continue;
    transport->signal_config_change();  // before DRIVER_OK: the driver reads it when it starts
    ++changed;
  }
  return changed;
}

std::shared_ptr<IrqLine> Vm::irq(uint32_t number) {
  std::lock_guard lock(impl_->irq_mutex);
  auto& line = impl_->irqs[number];
  if (!line) line = impl_->machine->emulated_irq(number);
  if (!line) {
    line = std::make_shared<KvmIrqLine>(impl_->vm, impl_->machine->kvm_irq(number), number);
  }
  return line;
}

void Vm::connect_eventfd(int fd, uint32_t number) {
  std::shared_ptr<IrqLine> line = irq(number);
  impl_->loop.add(fd, EPOLLIN, [fd, line](uint32_t) {
    uint64_t count;
    if (::read(fd, &count, sizeof count) == sizeof count) line->pulse();
  });
}

}  // namespace libvmm
