#include "libvmm/pci/host_bridge.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "libvmm/core/error.hpp"

namespace libvmm::pci {
namespace {

// Function 00.0: the host bridge itself. Red Hat's ID for a generic virtual PCIe host bridge.
class BridgeFunction final : public PciFunction {
 public:
  BridgeFunction() : PciFunction(Identity{0x1b36, 0x0008, 0, 0x060000, 0x1af4, 0x1100}) {}
  std::string name() const override { return "pci-host-bridge"; }
  void bar_read(unsigned, uint64_t, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0xff);
  }
  void bar_write(unsigned, uint64_t, std::span<const uint8_t>) override {}
};

class EcamDevice final : public BusDevice {
 public:
  explicit EcamDevice(std::shared_ptr<HostBridge> bridge) : bridge_(std::move(bridge)) {}
  std::string name() const override { return "pci-ecam"; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    bridge_->config_read(static_cast<uint32_t>(offset >> 12), offset & 0xfff, data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    bridge_->config_write(static_cast<uint32_t>(offset >> 12), offset & 0xfff, data);
  }

 private:
  std::shared_ptr<HostBridge> bridge_;
};

// 0xCF8: CONFIG_ADDRESS (enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2),
// 0xCFC-0xCFF: CONFIG_DATA.
class LegacyConfigDevice final : public BusDevice {
 public:
  explicit LegacyConfigDevice(std::shared_ptr<HostBridge> bridge) : bridge_(std::move(bridge)) {}
  std::string name() const override { return "pci-config-ports"; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    if (offset == 0 && data.size() == 4) {
      const uint32_t value = address_.load();
      std::memcpy(data.data(), &value, 4);
      return;
    }
    std::fill(data.begin(), data.end(), 0xff);
    uint32_t bdf, reg;
    if (data_target(offset, data.size(), bdf, reg)) bridge_->config_read(bdf, reg, data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset == 0 && data.size() == 4) {
      uint32_t value;
      std::memcpy(&value, data.data(), 4);
      address_ = value & 0x80fffffcu;
      return;
    }
    uint32_t bdf, reg;
    if (data_target(offset, data.size(), bdf, reg)) bridge_->config_write(bdf, reg, data);
  }

 private:
  bool data_target(uint64_t offset, size_t size, uint32_t& bdf, uint32_t& reg) const {
    if (offset < 4 || offset + size > 8) return false;  // the other bytes of CONFIG_ADDRESS
    const uint32_t a = address_.load();
    if (!(a & 0x80000000u)) return false;
    bdf = (a >> 8) & 0xffff;
    reg = (a & 0xfc) + static_cast<uint32_t>(offset - 4);
    return true;
  }
  std::shared_ptr<HostBridge> bridge_;
  std::atomic<uint32_t> address_{0};
};

class WindowDevice final : public BusDevice {
 public:
  WindowDevice(std::shared_ptr<HostBridge> bridge, bool mmio, uint64_t base, std::string name)
      : bridge_(std::move(bridge)), mmio_(mmio), base_(base), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    bridge_->bar_access(mmio_, base_ + offset, data, {});
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    bridge_->bar_access(mmio_, base_ + offset, {}, data);
  }

 private:
  std::shared_ptr<HostBridge> bridge_;
  bool mmio_;
  uint64_t base_;
  std::string name_;
};

}  // namespace

std::shared_ptr<HostBridge> HostBridge::create(const HostBridgeLayout& layout) {
  return std::shared_ptr<HostBridge>(new HostBridge(layout));
}

HostBridge::HostBridge(const HostBridgeLayout& layout)
    : layout_(layout),
      next_mmio32_(layout.mmio32.base),
      next_mmio64_(layout.mmio64.base),
      next_io_(layout.io.base) {
  if (layout.ecam.size < kEcamBusSize) throw std::invalid_argument("PCI: ECAM below 1 MiB");
  functions_.push_back(std::make_shared<BridgeFunction>());
}

std::shared_ptr<BusDevice> HostBridge::ecam() {
  return std::make_shared<EcamDevice>(shared_from_this());
}
std::shared_ptr<BusDevice> HostBridge::legacy_config() {
  return std::make_shared<LegacyConfigDevice>(shared_from_this());
}
std::shared_ptr<BusDevice> HostBridge::window(BarKind kind) {
  switch (kind) {
    case BarKind::io:
      return std::make_shared<WindowDevice>(shared_from_this(), false, layout_.io.base,
                                            "pci-io-window");
    case BarKind::mem64:
      return std::make_shared<WindowDevice>(shared_from_this(), true, layout_.mmio64.base,
                                            "pci-mmio64-window");
    case BarKind::mem32:
      break;
  }
  return std::make_shared<WindowDevice>(shared_from_this(), true, layout_.mmio32.base,
                                        "pci-mmio32-window");
}

uint64_t HostBridge::allocate(const Window& window, uint64_t& next, uint64_t size,
                              const std::string& who) {
  const uint64_t at = (next + size - 1) & ~(size - 1);
  if (window.size == 0 || !window.contains(at, size)) {
    throw UserError(
        fmt::format("{}: no room left in the PCI window at {:#x} ({:#x} bytes) for a "
                    "{:#x}-byte BAR; use fewer PCI devices",
                    who, window.base, window.size, size));
  }
  next = at + size;
  return at;
}

uint8_t HostBridge::add(std::shared_ptr<PciFunction> function) {
  if (!function) throw std::invalid_argument("PCI: no function");
  std::lock_guard write_lock(config_write_mutex_);
  if (functions_.size() >= kMaxDevices) {
    throw UserError(
        fmt::format("{}: the PCI bus has {} device slots, all taken; use fewer PCI "
                    "devices (or transport=mmio)",
                    function->name(), kMaxDevices - 1));
  }
  // Largest BARs first, each aligned to its size.
  std::vector<unsigned> order;
  for (unsigned i = 0; i < kBarCount; ++i) {
    if (function->bar_info(i).size != 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&function](unsigned a, unsigned b) {
    return function->bar_info(a).size > function->bar_info(b).size;
  });
  for (unsigned i : order) {
    const BarInfo& b = function->bar_info(i);
    uint64_t address;
    if (b.kind == BarKind::io) {
      address = allocate(layout_.io, next_io_, b.size, function->name());
    } else if (b.kind == BarKind::mem64 && layout_.mmio64.size != 0) {
      address = allocate(layout_.mmio64, next_mmio64_, b.size, function->name());
    } else {
      address = allocate(layout_.mmio32, next_mmio32_, b.size, function->name());
    }
    function->assign_bar(i, address);
  }
  functions_.push_back(std::move(function));
  return static_cast<uint8_t>(functions_.size() - 1);
}

uint8_t HostBridge::next_device() const {
  return static_cast<uint8_t>(functions_.size());
}

std::shared_ptr<PciFunction> HostBridge::function(uint8_t device) const {
  return device < functions_.size() ? functions_[device] : nullptr;
}

void HostBridge::config_read(uint32_t bdf, uint32_t offset, std::span<uint8_t> data) {
  const uint32_t bus = bdf >> 8, device = (bdf >> 3) & 31, fn = bdf & 7;
  std::shared_ptr<PciFunction> f =
      bus == 0 && fn == 0 ? function(static_cast<uint8_t>(device)) : nullptr;
  if (!f) {
    std::fill(data.begin(), data.end(), 0xff);  // no device: master abort
    return;
  }
  f->config_read(offset, data);
}

void HostBridge::config_write(uint32_t bdf, uint32_t offset, std::span<const uint8_t> data) {
  const uint32_t bus = bdf >> 8, device = (bdf >> 3) & 31, fn = bdf & 7;
  std::shared_ptr<PciFunction> f =
      bus == 0 && fn == 0 ? function(static_cast<uint8_t>(device)) : nullptr;
  if (!f) return;
  std::lock_guard write_lock(config_write_mutex_);
  const auto before = f->mappings();
  f->config_write(offset, data);
  const auto after = f->mappings();
  if (before == after) return;
  {
    std::unique_lock lock(routes_mutex_);
    rebuild_routes_locked();
  }
  for (unsigned i = 0; i < kBarCount; ++i) {
    if (before[i] == after[i]) continue;
    // Outside its window a BAR decodes nothing: report it as not decoding.
    auto now = after[i] && decodable(*after[i]) ? after[i] : std::nullopt;
    auto old = before[i] && decodable(*before[i]) ? before[i] : std::nullopt;
    if (old != now) f->bar_moved(i, old, now);
  }
}

bool HostBridge::decodable(const BarMapping& m) const {
  if (m.kind == BarKind::io) return layout_.io.contains(m.address, m.size);
  return layout_.mmio32.contains(m.address, m.size) ||
         (layout_.mmio64.size != 0 && layout_.mmio64.contains(m.address, m.size));
}

void HostBridge::rebuild_routes_locked() {
  routes_.clear();
  for (const auto& f : functions_) {
    for (const auto& m : f->mappings()) {
      if (!m || !decodable(*m)) continue;
      routes_.push_back({m->kind != BarKind::io, m->address, m->size, f, m->index});
    }
  }
}

bool HostBridge::bar_access(bool mmio, uint64_t address, std::span<uint8_t> read_data,
                            std::span<const uint8_t> write_data) {
  const uint64_t length = read_data.empty() ? write_data.size() : read_data.size();
  std::shared_ptr<PciFunction> f;
  unsigned bar = 0;
  uint64_t offset = 0;
  {
    std::shared_lock lock(routes_mutex_);
    for (const Route& r : routes_) {
      if (r.mmio == mmio && Window{r.base, r.size}.contains(address, length)) {
        f = r.function;
        bar = r.bar;
        offset = address - r.base;
        break;
      }
    }
  }
  if (!f) {
    std::fill(read_data.begin(), read_data.end(), 0xff);
    return false;
  }
  if (!read_data.empty()) {
    f->bar_read(bar, offset, read_data);
  } else {
    f->bar_write(bar, offset, write_data);
  }
  return true;
}

}  // namespace libvmm::pci
