// What every board shares (board.hpp), and the list of boards.
#include "board.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"

namespace libvmm {

// Each defined beside its machine (src/arch/<arch>/board.cpp), built for every host.
const Board& aarch64_board();
const Board& x86_64_board();
const Board& riscv64_board();

std::vector<RamRange> ram_below_pci64(uint64_t ram_base, uint64_t window, uint64_t memory_size,
                                      std::string_view guest) {
  const uint64_t most = window - ram_base;
  if (memory_size > most) {
    throw UserError(fmt::format(
        "--memory: {:#x} bytes is more than {} guest can have (at most {} GiB: RAM at {:#x} "
        "ends below the PCI 64-bit BAR window at {:#x})",
        memory_size, guest, most / GiB, ram_base, window));
  }
  return {{ram_base, memory_size}};
}

std::string Board::irq_problem(uint32_t number) const {
  if (number >= irq_count()) {
    return fmt::format("IRQ {} is outside the interrupt controller's range 0-{} on {}", number,
                       irq_count() - 1, name());
  }
  const std::vector<uint32_t> free = device_irqs();
  if (std::find(free.begin(), free.end(), number) == free.end()) {
    std::string list;
    for (uint32_t f : free) {
      if (!list.empty()) list += ' ';
      list += std::to_string(f);  // appended, not "sep" + string: GCC 12 -O3 -Wrestrict
    }
    return fmt::format("IRQ {} belongs to the machine's own devices; free lines: {}", number, list);
  }
  return "";
}

std::optional<BoardDevice> Board::device_at(uint64_t phys_addr) const {
  for (const BoardDevice& device : devices()) {
    if (device.phys_addr == phys_addr) return device;
  }
  return std::nullopt;
}

std::vector<DeviceWindow> Board::pci_windows() const {
  const std::optional<pci::HostBridgeLayout> pci = pci_layout();
  if (!pci) return {};
  std::vector<DeviceWindow> out{
      {"the PCI host bridge's ECAM", pci->ecam.base, pci->ecam.size},
      {"the PCI host bridge's 32-bit BAR window", pci->mmio32.base, pci->mmio32.size}};
  if (pci->mmio64.size != 0) {
    out.push_back({"the PCI host bridge's 64-bit BAR window", pci->mmio64.base, pci->mmio64.size});
  }
  return out;
}

MemoryMap Board::memory_map(uint64_t memory_size) const {
  MemoryMap m;
  m.ram = ram_layout(memory_size);
  m.ram_base = ram_base();
  m.device_windows = device_windows();
  m.virtio_mmio_base = virtio_mmio_base();
  m.device_irqs = device_irqs();
  m.virtio_mmio_slots = m.device_irqs.size();
  m.irq_count = irq_count();
  m.pci = pci_layout();
  m.virtio_pci_by_default = virtio_pci_by_default();
  return m;
}

const Board* find_board(std::string_view name) {
  if (name == "aarch64") return &aarch64_board();
  if (name == "x86_64") return &x86_64_board();
  if (name == "riscv64") return &riscv64_board();
  return nullptr;
}

const Board& host_board() {
#if defined(__aarch64__)
  return aarch64_board();
#elif defined(__riscv)
  return riscv64_board();
#else
  return x86_64_board();
#endif
}

}  // namespace libvmm
