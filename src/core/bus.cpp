#include "libvmm/core/bus.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "libvmm/core/error.hpp"

namespace libvmm {

void Bus::attach(uint64_t base, uint64_t size, std::shared_ptr<BusDevice> device) {
  if (size == 0 || base + size < base) {
    throw UserError(fmt::format("{} bus: device '{}' has an invalid range at {:#x} (size {:#x})",
                                name_, device->name(), base, size));
  }
  for (const auto& e : entries_) {
    if (base < e.end() && e.base < base + size) {
      throw UserError(
          fmt::format("{} bus: device '{}' at [{:#x}, {:#x}) overlaps '{}' at [{:#x}, {:#x})",
                      name_, device->name(), base, base + size, e.device->name(), e.base, e.end()));
    }
  }
  Entry entry{base, size, std::move(device)};
  auto pos = std::upper_bound(entries_.begin(), entries_.end(), base,
                              [](uint64_t a, const Entry& e) { return a < e.base; });
  entries_.insert(pos, std::move(entry));
}

const Bus::Entry* Bus::find(uint64_t addr, uint64_t len) const {
  auto it = std::upper_bound(entries_.begin(), entries_.end(), addr,
                             [](uint64_t a, const Entry& e) { return a < e.base; });
  if (it == entries_.begin()) return nullptr;
  --it;
  if (addr + len < addr || addr + len > it->end()) return nullptr;
  return &*it;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
  const Entry* e = find(addr, data.size());
  if (e == nullptr) return false;
  e->device->read(addr - e->base, data);
  return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
  const Entry* e = find(addr, data.size());
  if (e == nullptr) return false;
  e->device->write(addr - e->base, data);
  return true;
}

}  // namespace libvmm
