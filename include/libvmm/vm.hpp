// A whole virtual machine: guest RAM, vCPUs, the interrupt controller, platform devices and a
// booted guest, assembled from a VmConfig. This is what the `vmm` program runs; programs that
// embed libvmm can use it as is, extend it (attach devices before run()), or build their own
// from the core building blocks (see examples/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/device_spec.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/io_thread.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/core/kvm.hpp"
#include "libvmm/core/vcpu_runner.hpp"
#include "libvmm/core/vm_config.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {
namespace pci {
class VfioPciDevice;
}

// How a run ended.
struct RunResult {
  StopReason reason = StopReason::error;
  std::string detail;
  // 0 when the guest reset or powered off or the user quit; 1 for faults and errors.
  int exit_status() const;
};

// Validates a config before anything is created: UserError naming the flag on the first problem.
void validate(const VmConfig& config);
// Host files two uses would fight over, where at least one writes: an output file (file:,
// wav:) truncating a disk image or a WAV given as input, two consoles' output interleaved in
// one file, two sockets bound at one path, a region file over an image. Several readers of one
// file are fine; character devices (file:/dev/null) and pipes are not files to fight over. One
// VM's uses, or a whole description's (its VMs' and its region files).
class HostFileUses {
 public:
  // Throws UserError (said by `located`, naming who has the file) on a clash.
  void add(const HostPath& host, const std::string& who,
           const std::function<std::string(std::string_view)>& located);

 private:
  struct Held {
    std::string who;
    bool writes;
  };
  std::map<std::string, Held> uses_;  // by the file's identity (device:inode), or its path
};

// Of validate()'s checks, the host files: the serial port's and the devices', where one use
// writes a file another uses (an output file over a disk image), within `config` or against
// what `uses` holds already (another VM's). "" when there is no clash, else the message,
// located as validate() throws it (`vmm check` reports it too).
std::string host_file_clash(const VmConfig& config, HostFileUses& uses);
std::string host_file_clash(const VmConfig& config);  // the VM on its own

// Where a VM placed one of its virtIO devices (the resource planner's decision).
struct PlacedDevice {
  std::string kind;   // "virtio_block"; "vfio" passed through; "" added in code
  std::string name;   // the device's own name: "virtio-blk"
  uint64_t base = 0;  // a PCI function's: where its BAR 0 starts (the guest may move it)
  uint64_t size = 0;
  uint32_t irq = 0;                   // 0: none (a PCI function's are MSI-X or INTx)
  std::optional<uint8_t> pci_device;  // a PCI function: 00:NN.0 on the host bridge's bus
};

// Whether the VM's RAM must be memory another process can map: asked for (ram_shared), or a
// device whose queues another process serves (vhost-user) is among its devices.
bool ram_must_be_shared(const VmConfig& config);

class Vm {
 public:
  // Creates the VM, its platform devices and the config's virtIO devices. Throws UserError for
  // bad configuration.
  explicit Vm(const VmConfig& config);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Which transport add_virtio_device() gives a device: the one the board's devices get without
  // transport= (virtio-pci on x86_64, virtio-mmio on AArch64 and RISC-V), or the one named.
  enum class Transport { board_default, mmio, pci };

  // Places a virtIO device and tells the guest where it is: on virtio-mmio, a window on the
  // MMIO bus with its own interrupt line (irqfd); on virtio-pci, a function on PCI bus 0 with
  // MSI-X vectors (INTx where the machine has no MSIs). Its queue notifications are ioeventfds
  // either way. The next slot by the planner's rule, after the configuration's devices. Before
  // prepare(). Throws UserError when no interrupt line or PCI device number is left, or for
  // Transport::pci on a machine without a PCI bus.
  // A device serving host input on an event loop (VirtioConsole, VirtioNet, VirtioSound) is
  // started by its maker: device->start(vm.event_loop()), before run(). A device with an I/O
  // thread of its own gets io_thread_start_hook() as its thread's first step.
  void add_virtio_device(std::shared_ptr<VirtioDevice> device,
                         Transport transport = Transport::mmio);
  // What a device's I/O thread runs first (BlockThreading/NetThreading::on_thread_start), as
  // the configuration's devices get it: it waits until the VM's vCPUs exist (prepare()) and,
  // with config().seccomp on, loads the I/O threads' allow-list (a thread made before run()
  // inherits no filter).
  IoThread::StartHook io_thread_start_hook();

  // Loads the guest (kernel, initrd, firmware tables) and creates the vCPUs. Throws UserError
  // for bad images. run() calls it if needed; call it earlier to check the images first.
  void prepare();

  // Runs the guest on one thread per vCPU, and host I/O on the calling thread, until the guest
  // resets or powers off, the user quits, or an error stops it. With config().seccomp on, each
  // of these threads loads its seccomp allow-list first; the calling thread keeps its filter
  // after run() returns (run the VM on a thread of its own to do more afterward).
  RunResult run();

  // Thread-safe. The first request wins; later ones are logged and ignored.
  void request_stop(StopReason reason, std::string detail);
  // Thread-safe: whether the VM has been asked to stop, or has stopped (its guest reset or
  // powered off, a quit, an error).
  bool stopping() const;
  // Asks the guest to power off through the machine's power button (x86_64: the ACPI power
  // button); the guest decides. Thread-safe. False if the machine has no power button or the
  // guest does not listen to it (x86_64: has not enabled the ACPI power button event).
  bool press_power_button();
  // What a console's Ctrl-A s asks for: by default press_power_button(), stopping the VM at
  // once if the guest would not hear it; `handler` replaces that (vmm: the same as its first
  // SIGTERM). Called on the event loop's thread; set it before run().
  void request_shutdown();
  void set_shutdown_handler(std::function<void()> handler);
  // Called on run()'s thread once its event loop has stopped, before the vCPUs are joined and
  // the devices torn down (where a host I/O that hangs could hold the end): e.g. for a program
  // to take its stop signals itself from then on. Set it before run().
  void set_loop_end_handler(std::function<void()> handler);

  const VmConfig& config() const;
  GuestMemory& memory();
  Bus& mmio_bus();
  Bus& pio_bus();
  EventLoop& event_loop();
  KvmVm& kvm_vm();
  // The line into the interrupt controller for `number` (x86: GSI), created on first use.
  std::shared_ptr<IrqLine> irq(uint32_t number);
  // The devices the config asked for (virtIO and passed through) and those added in code,
  // where they were placed.
  const std::vector<PlacedDevice>& devices() const;
  // Looks again at what backs each virtIO device (a disk image the host grew or shrank: vmm
  // does it on SIGUSR1) and tells the drivers of those that changed, with a config change
  // interrupt. Any thread but a vCPU's; returns how many changed.
  size_t rescan_devices();

 private:
  void map_regions();
  void add_config_devices();
  void attach_virtio_pci_device(std::shared_ptr<VirtioDevice> device, std::string kind);
  void ensure_pci_bridge(const std::string& who);
  // The ports whose writes KVM may queue (Impl::coalesced_ports), with the ring mapped through
  // `vcpu`, where KVM can.
  void coalesce_port_writes(KvmVcpu& vcpu);
  void add_vfio_devices();
  void wire_vfio_intx(pci::VfioPciDevice& device, uint8_t number);
  // The lines given, in order.
  std::vector<uint32_t> wire_virtio_pci_intx();
  // The requester ID the next PCI function's MSIs carry, where the machine's routes need one.
  std::optional<uint32_t> pci_requester_id() const;
  void attach_virtio_device(std::shared_ptr<VirtioDevice> device, const struct DeviceSlot& slot,
                            std::string kind);
  void wire_irq_sources();
  // An eventfd that pulses line `number`: read by the event loop (a controller vmm emulates).
  void connect_eventfd(int fd, uint32_t number);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace libvmm
