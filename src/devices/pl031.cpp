#include "libvmm/devices/pl031.hpp"

#include <cstring>

#include "libvmm/devices/register_read.hpp"
#include "primecell.hpp"

namespace libvmm {
namespace {

// Register offsets (PL031 technical reference manual, DDI 0224).
constexpr uint64_t kData = 0x000;          // RTCDR
constexpr uint64_t kMatch = 0x004;         // RTCMR
constexpr uint64_t kLoad = 0x008;          // RTCLR
constexpr uint64_t kControl = 0x00C;       // RTCCR
constexpr uint64_t kIntMask = 0x010;       // RTCIMSC
constexpr uint64_t kRawStatus = 0x014;     // RTCRIS
constexpr uint64_t kMaskedStatus = 0x018;  // RTCMIS
constexpr uint64_t kIntClear = 0x01C;      // RTCICR

}  // namespace

Pl031::Pl031(Clock clock) : clock_(std::move(clock)) {}

uint32_t Pl031::read_register(uint64_t offset) {
  switch (offset) {
    case kData:
      return static_cast<uint32_t>(static_cast<int64_t>(clock_()) + offset_);
    case kMatch:
      return match_;
    case kLoad:
      return load_;  // the value last loaded, not the count (TRM: RTCLR reads back)
    case kControl:
      return 1;  // started
    case kIntMask:
      return interrupt_mask_ ? 1 : 0;
    case kRawStatus:
    case kMaskedStatus:
      return 0;  // no alarm interrupt (see the header)
    default:
      break;
  }
  if (primecell::is_id_register(offset)) return primecell::id_register(offset, 0x031, 0);
  return 0;
}

void Pl031::write_register(uint64_t offset, uint32_t value) {
  switch (offset) {
    case kMatch:
      match_ = value;
      break;
    case kLoad:
      // The counter is 32 bits: the guest's time is the value, from now on.
      offset_ = static_cast<int64_t>(value) - static_cast<int64_t>(clock_());
      load_ = value;
      break;
    case kIntMask:
      interrupt_mask_ = (value & 1) != 0;
      break;
    case kIntClear:
    case kControl:  // the clock cannot be stopped (writing 0 has no effect on a PL031 either)
    default:
      break;
  }
}

void Pl031::read(uint64_t offset, std::span<uint8_t> data) {
  read_32bit_register(offset, data, [this](uint64_t aligned) {
    std::lock_guard lock(mutex_);
    return read_register(aligned);
  });
}

void Pl031::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.size() != 4 || (offset & 3) != 0) return;  // registers take 32-bit writes
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value |= uint32_t{data[i]} << (8 * i);
  std::lock_guard lock(mutex_);
  write_register(offset, value);
}

}  // namespace libvmm
