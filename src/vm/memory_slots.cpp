#include "memory_slots.hpp"

#include <fmt/format.h>

namespace libvmm {

MemorySlots::MemorySlots(uint32_t max_slots, Commit commit)
    : max_slots_(max_slots), commit_(std::move(commit)) {}

uint32_t MemorySlots::add(uint64_t gpa, uint64_t size, void* host, bool readonly,
                          const std::string& what) {
  if (size == 0 || gpa + size < gpa) {
    throw MemorySlotError(
        fmt::format("{}: no memory slot for [{:#x}, +{:#x}): empty or wraps", what, gpa, size));
  }
  std::lock_guard lock(mutex_);
  for (const auto& [id, s] : slots_) {
    if (gpa < s.gpa + s.size && s.gpa < gpa + size) {
      throw MemorySlotError(fmt::format("{}: [{:#x}, {:#x}) overlaps {} at [{:#x}, {:#x})", what,
                                        gpa, gpa + size, s.what, s.gpa, s.gpa + s.size));
    }
  }
  uint32_t id = 0;
  for (const auto& entry : slots_) {
    if (entry.first != id) break;  // the map is ordered: the first gap
    ++id;
  }
  if (id >= max_slots_) {
    throw MemorySlotError(fmt::format("{}: all {} KVM memory slots are in use", what, max_slots_));
  }
  commit_(id, gpa, size, host, readonly);
  slots_.emplace(id, Slot{gpa, size, what});
  return id;
}

void MemorySlots::remove(uint32_t slot) {
  std::lock_guard lock(mutex_);
  auto it = slots_.find(slot);
  if (it == slots_.end()) return;
  commit_(slot, it->second.gpa, 0, nullptr, false);
  slots_.erase(it);
}

size_t MemorySlots::used() const {
  std::lock_guard lock(mutex_);
  return slots_.size();
}

std::optional<uint32_t> MemorySlots::find(uint64_t gpa) const {
  std::lock_guard lock(mutex_);
  for (const auto& [id, s] : slots_) {
    if (gpa >= s.gpa && gpa - s.gpa < s.size) return id;
  }
  return std::nullopt;
}

}  // namespace libvmm
