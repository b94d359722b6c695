// The MSI capability (PCI 3.0 §6.8.1), as emulated for a function whose device signals MSIs
// (a passed-through function with MSI but no MSI-X): 64-bit message address, no per-vector
// masking, up to 32 vectors as Multiple Message Capable allows. The guest programs address,
// data, the number of vectors it enables and the enable bit in configuration space; state()
// reads them back, and message_data() gives each vector its message (PCI: the low bits of the
// data carry the vector number). Pure data over a ConfigSpace, no locking: the function's
// configuration lock covers it.
#pragma once

#include <cstdint>

#include "libvmm/pci/config_space.hpp"

namespace libvmm::pci {

class MsiCapability {
 public:
  static constexpr uint32_t kLength = 16;  // 64-bit address, no mask bits (extended data: 0)
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

  struct State {
    bool enabled = false;
    uint8_t vectors = 1;  // enabled by the guest (Multiple Message Enable), at most vectors()
    uint64_t address = 0;
    uint16_t data = 0;
    bool operator==(const State&) const = default;
  };
  // What the guest has programmed. A Multiple Message Enable above what the capability offers
  // (software must not write one) counts as the most it offers.
  State state(const ConfigSpace& config) const;
  // Vector `vector`'s message data under `state`.
  static uint32_t message_data(const State& state, uint8_t vector);

 private:
  uint8_t vectors_ = 1;
  uint8_t log2_vectors_ = 0;
  uint32_t offset_ = 0;
};

}  // namespace libvmm::pci
