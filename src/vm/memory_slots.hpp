// The KVM memory slots of a VM: guest RAM and `<map>` regions at start, and the slots that come
// and go while the guest runs (a passed-through device's BAR pages, installed where the guest
// places the BAR). Slot ids are handed out lowest-free first and reused once removed; a range
// that overlaps an installed slot is refused before KVM sees it. KVM is reached through a
// commit callback (tests record it). Thread-safe: vCPU threads move BARs. Internal to the
// library.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

namespace libvmm {

class MemorySlotError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class MemorySlots {
 public:
  // KVM_SET_USER_MEMORY_REGION: `size` 0 deletes the slot. Throws when KVM refuses.
  using Commit =
      std::function<void(uint32_t slot, uint64_t gpa, uint64_t size, void* host, bool readonly)>;
  // Slot ids [0, max_slots) (KVM_CAP_NR_MEMSLOTS).
  MemorySlots(uint32_t max_slots, Commit commit);

  // Installs [gpa, gpa + size) backed by `host` in the lowest free slot and returns its id.
  // Throws MemorySlotError (size 0 or wrapping, overlapping slot `what` names, no slot left)
  // without calling KVM, or what `commit` throws (then nothing changed).
  uint32_t add(uint64_t gpa, uint64_t size, void* host, bool readonly, const std::string& what);
  // Deletes slot `slot` (installed by add()); its id is free again. Throws what `commit` throws.
  void remove(uint32_t slot);

  size_t used() const;
  uint32_t max_slots() const { return max_slots_; }
  // The slot covering guest-physical `gpa`, if any.
  std::optional<uint32_t> find(uint64_t gpa) const;

 private:
  struct Slot {
    uint64_t gpa;
    uint64_t size;
    std::string what;
  };
  const uint32_t max_slots_;
  const Commit commit_;
  mutable std::mutex mutex_;
  std::map<uint32_t, Slot> slots_;  // by id
};

}  // namespace libvmm
