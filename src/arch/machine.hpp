// What each architecture contributes to a Vm: its memory map, interrupt controller, platform
// devices, boot protocol and vCPU state. Internal to the library.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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
};

constexpr uint64_t kVirtioMmioSlot = 0x1000;

struct RamRange {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

// A guest-physical range the machine itself uses (devices, firmware): no map may overlap it.
struct DeviceWindow {
  const char* name;
  uint64_t gpa = 0;
  uint64_t size = 0;
};

// The machine's guest-physical layout as a value: what placement, validation and `vmm check`
// need to know, without a machine object.
struct MemoryMap {
  std::vector<RamRange> ram;  // for the VM's memory size
  uint64_t ram_base = 0;
  std::vector<DeviceWindow> device_windows;
  uint64_t virtio_mmio_base = 0;
  size_t virtio_mmio_slots = 0;       // kVirtioMmioSlot bytes each
  std::vector<uint32_t> device_irqs;  // lines devices may have, in the order handed out
  uint32_t irq_count = 0;
};

class Machine {
 public:
  // The layout for `memory_size` bytes of RAM (throws UserError if RAM cannot be laid out).
  MemoryMap memory_map(uint64_t memory_size) const {
    MemoryMap m;
    m.ram = ram_layout(memory_size);
    m.ram_base = ram_base();
    m.device_windows = device_windows();
    m.virtio_mmio_base = virtio_mmio_base();
    m.device_irqs = device_irqs();
    m.virtio_mmio_slots = m.device_irqs.size();
    m.irq_count = irq_count();
    return m;
  }

  virtual ~Machine() = default;

  // Where guest RAM of `memory_size` bytes goes in guest-physical space.
  virtual std::vector<RamRange> ram_layout(uint64_t memory_size) const = 0;
  // Interrupt controller and other VM-wide KVM state; before any vCPU exists.
  virtual void create_interrupt_controller(MachineContext& vm) = 0;
  // UART, reset device, ...
  virtual void add_platform_devices(MachineContext& vm) = 0;
  // Loads kernel, initrd, command line and firmware tables into guest memory.
  virtual void load_guest(MachineContext& vm) = 0;
  // Registers and CPU features of vCPU `vcpu.index()` so it starts where load_guest() decided.
  virtual void setup_vcpu(MachineContext& vm, KvmVcpu& vcpu) = 0;
  virtual uint64_t instruction_pointer(KvmVcpu& vcpu) const = 0;
  // Where virtio-mmio devices go (one kVirtioMmioSlot each, from this base), and the interrupt
  // lines devices may have, in the order they are handed out.
  virtual uint64_t virtio_mmio_base() const = 0;
  virtual std::vector<uint32_t> device_irqs() const = 0;
  // Tells the guest about a virtio-mmio device (x86: a kernel command-line parameter).
  // Before load_guest().
  virtual void describe_virtio_mmio(uint64_t base, uint64_t size, uint32_t irq) = 0;
  // The most vCPUs this machine can describe to the guest.
  virtual uint32_t max_vcpus() const = 0;

  // For system descriptions (src/system/): where RAM must be mapped, the windows maps must
  // avoid, and how many interrupt lines the controller has (numbers 0 .. irq_count()-1).
  virtual uint64_t ram_base() const { return 0; }
  virtual std::vector<DeviceWindow> device_windows() const { return {}; }
  virtual uint32_t irq_count() const { return 0; }
  virtual const char* name() const { return "unknown"; }
  // The serial port add_platform_devices() attaches, as users know it (x86: "COM1 (ttyS0)").
  virtual const char* serial_name() const { return "serial"; }
  // Why a description cannot wire a host event source to interrupt `number` ("" when it can):
  // outside the controller's range, or a line the machine's own devices use (AArch64 adds: a
  // per-CPU interrupt). In the controller's numbering, as users write it.
  virtual std::string irq_problem(uint32_t number) const;
  // What irqfds and KVM_IRQ_LINE take for the controller's interrupt `number` (x86: the GSI
  // itself for both; AArch64: GSI = SPI INTID - 32, and KVM_IRQ_LINE's type/INTID encoding).
  virtual KvmIrqRoute kvm_irq(uint32_t number) const { return number; }
  // KVM exits only this architecture has (e.g. AArch64 KVM_EXIT_ARM_NISV); false: not handled.
  virtual bool handle_exit(MachineContext& /*vm*/, KvmVcpu& /*vcpu*/) { return false; }
};

std::unique_ptr<Machine> make_host_machine();

}  // namespace libvmm
