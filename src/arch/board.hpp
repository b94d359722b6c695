// A machine's board as a value: its guest-physical layout, interrupt numbering and the devices
// a Microkit description may map by their physical address. Pure logic, built for every
// architecture on every host, so that a description is checked (and its layout printed) for
// any architecture (`vmm check --arch aarch64` on an x86_64 laptop). The KVM machine of the
// host's architecture (machine.hpp) answers these questions through its board. Internal to the
// library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/pci/host_bridge.hpp"

namespace libvmm {

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
  std::optional<pci::HostBridgeLayout> pci;  // the PCI host bridge's windows, if it has one
  // The transport of a virtIO device that names none: PCI (true) or virtio-mmio.
  bool virtio_pci_by_default = false;
};

// A device of the real board that a Microkit description hands to its guest by mapping the
// device's physical region (libvmm's QEMU virt examples: the PL011, the GIC's virtual CPU
// interface). On KVM the machine emulates it (or KVM's vGIC provides it) at `guest_addr`.
struct BoardDevice {
  enum class Kind {
    serial,      // the machine's UART: the VM's serial port
    gic_v2_cpu,  // the GICv2 virtual CPU interface: the VM's vGIC is a v2
  };
  Kind kind;
  const char* name;             // "the PL011 UART"
  uint64_t phys_addr = 0;       // the region's phys_addr on the real board
  uint64_t guest_addr = 0;      // where the guest must see it (the map's vaddr)
  uint64_t max_size = 0;        // the largest region that is this device
  std::optional<uint32_t> irq;  // its interrupt, as a protection domain's <irq irq="..."> names it
  const char* becomes;          // what it is on KVM, for vmm check: "the emulated PL011"
};

// RAM of `memory_size` bytes in one range from `ram_base`, ending below the PCI 64-bit BAR
// window at `window` (BARs placed over RAM, and a memory node overlapping the host bridge's
// ranges, otherwise): the device-tree boards' layout. Throws UserError naming --memory.
std::vector<RamRange> ram_below_pci64(uint64_t ram_base, uint64_t window, uint64_t memory_size,
                                      std::string_view guest);

class Board {
 public:
  virtual ~Board() = default;

  virtual const char* name() const = 0;  // "aarch64"
  // The serial port the machine attaches, as users know it (x86: "COM1").
  virtual const char* serial_name() const = 0;
  // Where guest RAM of `memory_size` bytes goes (throws UserError if it cannot be laid out).
  virtual std::vector<RamRange> ram_layout(uint64_t memory_size) const = 0;
  virtual uint64_t ram_base() const = 0;
  // The windows maps must avoid.
  virtual std::vector<DeviceWindow> device_windows() const = 0;
  // Interrupt lines: numbers 0 .. irq_count()-1, and those devices may have, in order.
  virtual uint32_t irq_count() const = 0;
  virtual std::vector<uint32_t> device_irqs() const = 0;
  // Where virtio-mmio devices go (one kVirtioMmioSlot each, from this base).
  virtual uint64_t virtio_mmio_base() const = 0;
  // The most vCPUs the machine can describe to the guest.
  virtual uint32_t max_vcpus() const = 0;
  // Why a description cannot wire a host event source to interrupt `number` ("" when it can):
  // outside the controller's range, or a line the machine's own devices use. In the
  // controller's numbering, as users write it.
  virtual std::string irq_problem(uint32_t number) const;

  // Microkit descriptions: the board devices recognised by their physical address, and the
  // physical range where the real board has devices (a region there is a device's registers).
  virtual std::vector<BoardDevice> devices() const { return {}; }
  virtual DeviceWindow device_space() const = 0;
  // The PCI host bridge's ECAM and BAR windows; none: no PCI bus (transport=pci refused).
  virtual std::optional<pci::HostBridgeLayout> pci_layout() const { return std::nullopt; }
  // Whether a virtIO device without a transport= is a PCI function (else virtio-mmio): the
  // board prefers it and has a PCI bus.
  bool virtio_pci_by_default() const { return prefers_virtio_pci() && pci_layout(); }
  // Port I/O: x86_64 only.
  virtual bool has_ioports() const { return false; }
  // The PCI host bridge's memory windows (ECAM, 32-bit and 64-bit BAR windows) as windows maps
  // must avoid in a VM that has PCI devices (the bridge is only there then); none without a
  // PCI bus.
  std::vector<DeviceWindow> pci_windows() const;

  // The board device a region with phys_addr `phys_addr` is; null when none.
  std::optional<BoardDevice> device_at(uint64_t phys_addr) const;

  MemoryMap memory_map(uint64_t memory_size) const;

 protected:
  // Only where every guest kernel the board runs can be expected to have virtio_pci and the
  // machine always delivers MSIs.
  virtual bool prefers_virtio_pci() const { return false; }
};

// The board of architecture `name` ("x86_64", "aarch64", "riscv64"); null when libvmm knows none.
const Board* find_board(std::string_view name);
// The board of the machine this library runs (the host's architecture).
const Board& host_board();

}  // namespace libvmm
