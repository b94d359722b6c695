// The MSI capability (PCI 3.0 §6.8.1), as emulated for a function whose device signals MSIs
// (a passed-through function with MSI but no MSI-X): 64-bit message address, per-vector
// masking, up to 32 vectors as Multiple Message Capable allows. The guest programs address,
// data, the number of vectors it enables, the enable bit and the mask bits in configuration
// space; state() reads them back, and message_data() gives each vector its message (PCI: the low
// bits of the data carry the vector number). The pending bits are the function's to set
// (set_pending), read-only to the guest. Pure data over a ConfigSpace, no locking: the
// function's configuration lock covers it.
#pragma once

#include <cstdint>

#include "libvmm/pci/config_space.hpp"

namespace libvmm::pci {

class MsiCapability {
 public:
  static constexpr uint32_t kLength = 24;  // 64-bit address, mask and pending bits
  static constexpr uint32_t kMaskOffset = 16;
  static constexpr uint32_t kPendingOffset = 20;
  static constexpr uint8_t kMaxVectors = 32;

  // `vectors`: how many the function can signal, rounded down to a power of two (1..32).
  // Throws std::invalid_argument for 0.
  explicit MsiCapability(uint32_t vectors);

  // Adds the capability to `config` and returns its offset.
  uint32_t add_to(ConfigSpace& config);
  uint32_t offset() const { return offset_; }
  uint8_t vectors() const { return vectors_; }
  // Whether a configuration write at [offset, offset + size) touched the capability.
  bool covers(uint32_t offset, uint32_t size) const {
    return offset_ != 0 && offset < offset_ + kLength && offset + size > offset_;
  }

  // Whether a configuration read at [offset, offset + size) reads the pending bits.
  bool covers_pending(uint32_t offset, uint32_t size) const {
    return offset_ != 0 && offset < offset_ + kPendingOffset + 4 &&
           offset + size > offset_ + kPendingOffset;
  }

  struct State {
    bool enabled = false;
    uint8_t vectors = 1;  // enabled by the guest (Multiple Message Enable), at most vectors()
    uint64_t address = 0;
    uint16_t data = 0;
    uint32_t mask = 0;  // bit v: vector v masked (only vectors() bits can be set)
    bool operator==(const State&) const = default;
    // Whether vector `v` may be signalled now: enabled, among those enabled, not masked.
    bool deliverable(uint8_t v) const { return enabled && v < vectors && !(mask >> v & 1u); }
  };
  // What the guest has programmed. A Multiple Message Enable above what the capability offers
  // (software must not write one) counts as the most it offers.
  State state(const ConfigSpace& config) const;
  // Vector `vector`'s message data under `state`.
  static uint32_t message_data(const State& state, uint8_t vector);
  // The Pending Bits register as the guest reads it next: bit v for vector v (beyond vectors()
  // ignored).
  void set_pending(ConfigSpace& config, uint32_t bits) const;

 private:
  // The mask and pending bits of the vectors the function has.
  uint32_t implemented() const { return vectors_ == 32 ? 0xffff'ffffu : (1u << vectors_) - 1u; }

  uint8_t vectors_ = 1;
  uint8_t log2_vectors_ = 0;
  uint32_t offset_ = 0;
};

}  // namespace libvmm::pci
