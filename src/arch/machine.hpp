// What each architecture contributes to a Vm: its memory map, interrupt controller, platform
// devices, boot protocol and vCPU state. Internal to the library.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "board.hpp"
#include "libvmm/core/kvm.hpp"
#include "libvmm/core/kvm_irq.hpp"
#include "libvmm/core/vcpu_runner.hpp"

namespace libvmm {

class Bus;
class EventLoop;
class GuestMemory;
class IrqLine;
struct VmConfig;

// What a machine's steps work on: the VM's parts, handed in by Vm (which owns both them and
// the machine), so the machine needs no Vm and the two do not depend on each other.
struct MachineContext {
  const VmConfig& config;
  KvmVm& kvm;
  GuestMemory& memory;
  Bus& mmio;
  Bus& pio;
  EventLoop& loop;
  std::function<std::shared_ptr<IrqLine>(uint32_t)> irq;  // the controller's line `number`
  std::function<void(StopReason, std::string)> request_stop;
  std::function<void()> request_shutdown;  // a console's Ctrl-A s: Vm::request_shutdown()
  // Lets KVM queue the guest's writes to ports [port, port + size) instead of exiting, for
  // registers that matter only to a later access that exits anyway (an index register): the
  // vCPUs replay the queue before any port or MMIO exit. Before the first vCPU exists.
  std::function<void(uint16_t port, uint32_t size)> coalesce_writes;
};

class Machine {
 public:
  virtual ~Machine() = default;

  // The board the machine builds: its layout and numbering (board.hpp), which validation and
  // `vmm check` read without a machine.
  virtual const Board& board() const = 0;

  // Interrupt controller and other VM-wide KVM state; before any vCPU exists.
  virtual void create_interrupt_controller(MachineContext& vm) = 0;
  // UART, reset device, ...
  virtual void add_platform_devices(MachineContext& vm) = 0;
  // Loads kernel, initrd, command line and firmware tables into guest memory.
  virtual void load_guest(MachineContext& vm) = 0;
  // Registers and CPU features of vCPU `vcpu.index()` so it starts where load_guest() decided.
  virtual void setup_vcpu(MachineContext& vm, KvmVcpu& vcpu) = 0;
  virtual uint64_t instruction_pointer(KvmVcpu& vcpu) const = 0;
  // Whether KVM has already moved it past an MMIO write when it exits for one (x86's
  // emulator does; AArch64 and RISC-V move it on the next KVM_RUN).
  virtual bool instruction_pointer_past_writes() const { return false; }
  // The system calls this machine's own code makes on a thread of `role`, beyond the common
  // allow-lists of src/core/seccomp.cpp, pinned to `fds` where it can: e.g. the register read
  // of instruction_pointer() on a vCPU thread (fds.vcpu). Called as each thread loads its
  // filter: the I/O threads' before setup_vcpu(), the vCPUs' and the event loop's after.
  virtual std::vector<SeccompRule> seccomp_rules(ThreadRole role, const SeccompFds& fds) const = 0;
  // The rule every machine's seccomp_rules() starts from: on a vCPU thread, instruction_pointer()'s
  // register read (`request`: KVM_GET_REGS, KVM_GET_ONE_REG) on that vCPU's descriptor only.
  static std::vector<SeccompRule> instruction_pointer_rule(ThreadRole role, const SeccompFds& fds,
                                                           uint64_t request) {
    if (role != ThreadRole::vcpu || fds.vcpu < 0) return {};
    return {
        {"ioctl",
         {SeccompArg::equals(0, static_cast<uint64_t>(fds.vcpu)), SeccompArg::equals(1, request)},
         "the instruction pointer for fault reports"}};
  }
  // Tells the guest about a virtio-mmio device (x86: a kernel command-line parameter).
  // Before load_guest().
  virtual void describe_virtio_mmio(uint64_t base, uint64_t size, uint32_t irq) = 0;
  // Tells the guest about the PCI host bridge (once, when the first PCI device is placed;
  // before load_guest()), adding what its MSIs need to the VM (AArch64: the ITS). Only
  // machines whose board has a pci_layout() are asked.
  virtual void describe_pci(MachineContext& vm, const pci::HostBridgeLayout& layout) {
    static_cast<void>(vm);
    static_cast<void>(layout);
  }
  // Tells the guest that INTx pin `pin` (0 = INTA) of PCI device `device` drives interrupt line
  // `irq` (level-triggered). After describe_pci(), before load_guest(). False where the machine
  // cannot describe it (the device then offers no INTx).
  virtual bool describe_pci_intx(uint8_t device, uint8_t pin, uint32_t irq) {
    static_cast<void>(device);
    static_cast<void>(pin);
    static_cast<void>(irq);
    return false;
  }
  // Whether the guest can use PCI functions' MSIs (asked after describe_pci()): false where
  // the interrupt controller has no MSI frame (AArch64's GICv2, or a GICv3 host whose KVM has
  // no ITS). PCI devices then interrupt through INTx.
  virtual bool pci_msi() const { return true; }

  // Asks the guest to power off, as a machine's power button does (x86_64: the ACPI fixed
  // power button). Thread-safe; after add_platform_devices(). False if the machine has none,
  // or the guest does not listen to it (then pressing it would do nothing).
  virtual bool press_power_button() { return false; }

  // The board's layout and numbering (board.hpp), for the steps and for Vm.
  std::vector<RamRange> ram_layout(uint64_t memory_size) const {
    return board().ram_layout(memory_size);
  }
  MemoryMap memory_map(uint64_t memory_size) const { return board().memory_map(memory_size); }
  uint64_t ram_base() const { return board().ram_base(); }
  uint32_t max_vcpus() const { return board().max_vcpus(); }
  const char* name() const { return board().name(); }
  const char* serial_name() const { return board().serial_name(); }

  // A controller vmm emulates itself (RISC-V's PLIC on hosts without KVM's AIA), or one whose
  // lines irqfds cannot pulse (RISC-V's AIA: KVM's irqfd raises a line and never lowers it):
  // its line `number`, which devices drive directly, and eventfds meant for KVM_IRQFD are read
  // by the event loop instead. nullptr (the default): KVM's in-kernel controller has the lines.
  virtual std::shared_ptr<IrqLine> emulated_irq(uint32_t /*number*/) { return nullptr; }

  // What irqfds and KVM_IRQ_LINE take for the controller's interrupt `number` (x86: the GSI
  // itself for both; AArch64: GSI = SPI INTID - 32, and KVM_IRQ_LINE's type/INTID encoding).
  virtual KvmIrqRoute kvm_irq(uint32_t number) const { return number; }
  // MSI-X through GSI routes: the interrupt controller's own routes, which every
  // KVM_SET_GSI_ROUTING table must repeat, and the first GSI free for MSI routes. nullopt: the
  // machine delivers MSIs with KVM_SIGNAL_MSI only.
  struct GsiRouting {
    std::vector<kvm_irq_routing_entry> irqchip_routes;
    uint32_t first_msi_gsi = 0;
    // MSI routes and KVM_SIGNAL_MSI carry the function's requester ID (KVM_MSI_VALID_DEVID):
    // the controller translates per device (the GICv3 ITS).
    bool msi_devid = false;
  };
  virtual std::optional<GsiRouting> gsi_routing() const { return std::nullopt; }
  // GSI n -> the in-kernel controller's pin n for n < count: the routes KVM sets by default on
  // AArch64 (the vGIC's SPIs) and RISC-V (the AIA's APLIC sources).
  static std::vector<kvm_irq_routing_entry> identity_irqchip_routes(uint32_t count) {
    std::vector<kvm_irq_routing_entry> routes;
    for (uint32_t gsi = 0; gsi < count; ++gsi) {
      kvm_irq_routing_entry e{};
      e.gsi = gsi;
      e.type = KVM_IRQ_ROUTING_IRQCHIP;
      e.u.irqchip.irqchip = 0;
      e.u.irqchip.pin = gsi;
      routes.push_back(e);
    }
    return routes;
  }
  // KVM exits only this architecture has (e.g. AArch64 KVM_EXIT_ARM_NISV); false: not handled.
  virtual bool handle_exit(MachineContext& /*vm*/, KvmVcpu& /*vcpu*/) { return false; }
};

std::unique_ptr<Machine> make_host_machine();

}  // namespace libvmm
