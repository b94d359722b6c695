// The resource planner: where each of a VM's virtIO devices goes (its MMIO window and its
// interrupt line), computed once from the machine's memory map. `vmm check` prints this plan
// and Vm builds exactly this plan, so the two cannot disagree. Internal to the library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../arch/machine.hpp"
#include "libvmm/virtio/device_kind.hpp"

namespace libvmm {

// The MMIO window and interrupt line of the `index`th virtIO device: one virtio-mmio slot each
// from the map's base, lines in the map's order skipping `taken` (lines wired to host event
// sources). irq is nullopt when no slot or line is left.
struct DeviceSlot {
  uint64_t base = 0;
  uint64_t size = 0;
  std::optional<uint32_t> irq;
  // transport=pci: the device number on PCI bus 0 (its BARs are the host bridge's to place).
  // Its interrupts are MSI-X, taking no line, unless the machine has no MSIs for PCI devices
  // (pci_intx): then irq is its INTA# line, the line of a slot after every virtio-mmio device.
  std::optional<uint8_t> pci_device;
  bool pci_intx = false;
};
DeviceSlot device_slot(const MemoryMap& map, size_t index, const std::vector<uint32_t>& taken);

struct DevicePlacement {
  OrderedSpec device;
  DeviceSlot slot;
};

// The devices in registry order: virtio-mmio ones each in the next device_slot(), PCI ones
// each at the next device number from 1. With `pci_intx` (the machine gives PCI devices no
// MSIs: a GICv2, the PLIC) the PCI ones then take the next slots' lines, in the same order,
// as Vm wires their INTx.
std::vector<DevicePlacement> plan_devices(const MemoryMap& map,
                                          const std::vector<DeviceSpec>& specs,
                                          const std::vector<uint32_t>& taken,
                                          bool pci_intx = false);

// What a plan cannot give: devices with no interrupt line left, more devices of a kind than
// it allows, PCI device numbers for the virtio-pci functions and then for the devices passed
// through (`passthrough`: their labels, e.g. "--vfio 0000:01:00.0", in the order Vm adds
// them). Each located with the device's spec or label.
std::vector<std::string> plan_problems(const MemoryMap& map,
                                       const std::vector<DevicePlacement>& plan,
                                       const std::vector<std::string>& passthrough = {});

}  // namespace libvmm
