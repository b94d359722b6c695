#include "libvmm/pci/msi.hpp"

#include <bit>
#include <stdexcept>

namespace libvmm::pci {
namespace {

// Message Control (PCI 3.0 §6.8.1.3).
constexpr uint16_t kMsiControlEnable = 1u << 0;
constexpr unsigned kCapableShift = 1;  // Multiple Message Capable: log2, bits 3:1
constexpr unsigned kEnableShift = 4;   // Multiple Message Enable: log2, bits 6:4
constexpr uint16_t kControl64Bit = 1u << 7;
constexpr uint16_t kControlPerVectorMask = 1u << 8;
// Register offsets in the 64-bit layout with mask bits (kMaskOffset, kPendingOffset).
constexpr uint32_t kControl = 2;
constexpr uint32_t kAddressLow = 4;
constexpr uint32_t kAddressHigh = 8;
constexpr uint32_t kData = 12;

}  // namespace

MsiCapability::MsiCapability(uint32_t vectors) {
  if (vectors == 0) throw std::invalid_argument("MSI: a function signals at least one vector");
  vectors_ = static_cast<uint8_t>(std::bit_floor(std::min<uint32_t>(vectors, kMaxVectors)));
  log2_vectors_ = static_cast<uint8_t>(std::countr_zero(unsigned{vectors_}));
}

uint32_t MsiCapability::add_to(ConfigSpace& config) {
  offset_ = config.add_capability(kCapMsi, kLength);
  config.set_u16(offset_ + kControl, static_cast<uint16_t>(kControl64Bit | kControlPerVectorMask |
                                                           log2_vectors_ << kCapableShift));
  config.set_writable(offset_ + kControl, 2, kMsiControlEnable | 0x7u << kEnableShift);
  config.set_writable(offset_ + kAddressLow, 4, 0xffff'fffc);  // dword aligned
  config.set_writable(offset_ + kAddressHigh, 4, 0xffff'ffff);
  config.set_writable(offset_ + kData, 2, 0xffff);
  config.set_writable(offset_ + kMaskOffset, 4, implemented());
  return offset_;
}

MsiCapability::State MsiCapability::state(const ConfigSpace& config) const {
  State s;
  if (offset_ == 0) return s;
  const uint16_t control = config.u16(offset_ + kControl);
  s.enabled = control & kMsiControlEnable;
  const unsigned log2 = std::min<unsigned>((control >> kEnableShift) & 7u, log2_vectors_);
  s.vectors = static_cast<uint8_t>(1u << log2);
  s.address =
      uint64_t{config.u32(offset_ + kAddressHigh)} << 32 | config.u32(offset_ + kAddressLow);
  s.data = config.u16(offset_ + kData);
  s.mask = config.u32(offset_ + kMaskOffset) & implemented();
  return s;
}

void MsiCapability::set_pending(ConfigSpace& config, uint32_t bits) const {
  if (offset_ != 0) config.set_u32(offset_ + kPendingOffset, bits & implemented());
}

uint32_t MsiCapability::message_data(const State& state, uint8_t vector) {
  const uint32_t low_bits = state.vectors - 1u;  // a power of two's mask
  return (state.data & ~low_bits) | (vector & low_bits);
}

}  // namespace libvmm::pci
