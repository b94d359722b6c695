// A PCI host bridge with one bus (bus 0): configuration space through ECAM (PCIe's enhanced
// configuration access mechanism, 4 KiB per function) and, on x86, the legacy 0xCF8/0xCFC
// mechanism; and the windows where the functions' BARs decode. The bridge places every BAR in
// its window before the guest runs (the firmware's job) and follows the guest when it moves
// one: accesses in a window go to the function whose enabled BAR covers them, and the
// function hears of each move (bar_moved) to move what it registered with KVM.
//
// Function 00.0 is the bridge itself (class "host bridge": Linux's type-1 probe wants one);
// devices take device numbers 1..31, function 0.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "libvmm/core/bus.hpp"
#include "libvmm/pci/pci_function.hpp"

namespace libvmm::pci {

struct Window {
  uint64_t base = 0;
  uint64_t size = 0;
  bool contains(uint64_t address, uint64_t length) const {
    return length <= size && address >= base && address - base <= size - length;
  }
};

struct HostBridgeLayout {
  Window ecam;    // at least 1 MiB: bus 0 (32 devices x 8 functions x 4 KiB)
  Window mmio32;  // below 4 GiB
  Window mmio64;  // optional (size 0): 64-bit BARs then go in mmio32
  Window io;      // port I/O, x86 only (size 0 elsewhere)
};

class HostBridge : public std::enable_shared_from_this<HostBridge> {
 public:
  static constexpr uint32_t kLegacyConfigPort = 0xcf8;
  static constexpr uint32_t kLegacyConfigPorts = 8;
  static constexpr uint8_t kMaxDevices = 32;
  static constexpr uint64_t kEcamBusSize = 1ull << 20;

  static std::shared_ptr<HostBridge> create(const HostBridgeLayout& layout);

  const HostBridgeLayout& layout() const { return layout_; }
  // Plugs `function` in as the next device (1..31) and places its BARs; returns the device
  // number. Throws UserError when the bus or a window is full.
  uint8_t add(std::shared_ptr<PciFunction> function);
  // The device number the next add() gives, and that function's requester ID (bus 0, function
  // 0): what an MSI controller that translates per device knows it by, before it is added.
  uint8_t next_device() const;
  static uint32_t requester_id(uint8_t device) { return uint32_t{device} << 3; }
  std::shared_ptr<PciFunction> function(uint8_t device) const;

  // Bus devices to attach: ECAM at layout().ecam.base (size ecam.size), the BAR windows at their
  // bases (mmio ones on the MMIO bus, io on the port bus), the legacy mechanism at 0xcf8.
  std::shared_ptr<BusDevice> ecam();
  std::shared_ptr<BusDevice> window(BarKind kind);
  std::shared_ptr<BusDevice> legacy_config();

  // Guest accesses, by bus/device/function/register. Absent functions read all-ones.
  void config_read(uint32_t bdf, uint32_t offset, std::span<uint8_t> data);
  void config_write(uint32_t bdf, uint32_t offset, std::span<const uint8_t> data);
  // A guest access at `address` in the memory (mmio = true) or I/O space: false when no BAR
  // decodes there (reads then fill all-ones).
  bool bar_access(bool mmio, uint64_t address, std::span<uint8_t> read_data,
                  std::span<const uint8_t> write_data);

 private:
  explicit HostBridge(const HostBridgeLayout& layout);
  struct Route {
    bool mmio = true;
    uint64_t base = 0;
    uint64_t size = 0;
    std::shared_ptr<PciFunction> function;
    unsigned bar = 0;
  };
  bool decodable(const BarMapping& m) const;
  void rebuild_routes_locked();
  uint64_t allocate(const Window& window, uint64_t& next, uint64_t size, const std::string& who);

  const HostBridgeLayout layout_;
  std::vector<std::shared_ptr<PciFunction>> functions_;  // by device number (0: the bridge)
  uint64_t next_mmio32_ = 0, next_mmio64_ = 0, next_io_ = 0;
  std::mutex config_write_mutex_;  // one configuration write (and its BAR moves) at a time
  mutable std::shared_mutex routes_mutex_;
  std::vector<Route> routes_;
};

}  // namespace libvmm::pci
