#include "device_plan.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "libvmm/virtio/mmio_transport.hpp"

namespace libvmm {

DeviceSlot device_slot(const MemoryMap& map, size_t index, const std::vector<uint32_t>& taken) {
  // Slots are kVirtioMmioSlot apart (a page each); the device answers in its transport's window.
  DeviceSlot slot{map.virtio_mmio_base + index * kVirtioMmioSlot, VirtioMmioTransport::kWindowSize,
                  std::nullopt, std::nullopt, false};
  if (index >= map.virtio_mmio_slots) return slot;
  size_t free = 0;
  for (uint32_t line : map.device_irqs) {
    if (std::find(taken.begin(), taken.end(), line) != taken.end()) continue;
    if (free++ == index) {
      slot.irq = line;
      break;
    }
  }
  return slot;
}

std::vector<DevicePlacement> plan_devices(const MemoryMap& map,
                                          const std::vector<DeviceSpec>& specs,
                                          const std::vector<uint32_t>& taken, bool pci_intx) {
  std::vector<DevicePlacement> plan;
  size_t mmio = 0;
  size_t pci = 0;
  for (const OrderedSpec& device : in_device_order(specs)) {
    if (uses_pci_transport(*device.spec, map.virtio_pci_by_default)) {
      DeviceSlot slot;
      slot.pci_device = static_cast<uint8_t>(std::min<size_t>(++pci, 255));
      slot.pci_intx = pci_intx;
      plan.push_back({device, slot});
    } else {
      plan.push_back({device, device_slot(map, mmio++, taken)});
    }
  }
  // INTx lines after every virtio-mmio device's: a PCI device then moves no virtio-mmio one.
  for (DevicePlacement& p : plan) {
    if (p.slot.pci_intx) p.slot.irq = device_slot(map, mmio++, taken).irq;
  }
  return plan;
}

std::vector<std::string> plan_problems(const MemoryMap& map,
                                       const std::vector<DevicePlacement>& plan,
                                       const std::vector<std::string>& passthrough) {
  std::vector<std::string> problems;
  size_t pci_devices = 0;
  for (const DevicePlacement& p : plan) {
    if (p.slot.pci_device) {
      ++pci_devices;
      if (!map.pci) {
        problems.push_back(p.device.spec->located(
            "transport=pci: this machine has no PCI bus; use transport=mmio"));
      } else if (*p.slot.pci_device >= pci::HostBridge::kMaxDevices) {
        problems.push_back(p.device.spec->located(
            fmt::format("no PCI device number left for it ({} PCI devices at most); use "
                        "transport=mmio for some",
                        pci::HostBridge::kMaxDevices - 1)));
      } else if (p.slot.pci_intx && !p.slot.irq) {
        problems.push_back(p.device.spec->located(fmt::format(
            "no interrupt line left for its INTx (this machine has no MSIs for PCI devices; "
            "{} virtIO devices at most): use fewer devices",
            std::min<size_t>(map.device_irqs.size(), map.virtio_mmio_slots))));
      }
    } else if (!p.slot.irq) {
      problems.push_back(p.device.spec->located(fmt::format(
          "no free interrupt line or device slot left for it ({} virtIO devices at most)",
          std::min<size_t>(map.device_irqs.size(), map.virtio_mmio_slots))));
    }
    if (p.device.index == p.device.kind->max_per_vm()) {
      const size_t most = p.device.kind->max_per_vm();
      problems.push_back(
          p.device.spec->located(fmt::format("a virtual machine has at most {} {} device{}", most,
                                             p.device.kind->element(), most == 1 ? "" : "s")));
    }
  }
  // Devices passed through are PCI functions too, numbered after the virtio-pci ones.
  for (const std::string& label : passthrough) {
    if (!map.pci) {
      problems.push_back(label + ": this machine has no PCI bus to pass a PCI device through to");
    } else if (++pci_devices >= pci::HostBridge::kMaxDevices) {
      problems.push_back(fmt::format(
          "{}: no PCI device number left for it ({} PCI devices at most, virtio-pci ones "
          "included); use transport=mmio for some virtIO devices",
          label, pci::HostBridge::kMaxDevices - 1));
    }
  }
  return problems;
}

}  // namespace libvmm
