// The identification registers that end every ARM PrimeCell peripheral's 4 KiB page:
// PeriphID0..3 at 0xFE0 (part number, designer ARM, revision) and PCellID0..3 at 0xFF0
// (0xB105F00D), one byte in each 32-bit register. Linux's AMBA bus reads them to pick a driver.
#pragma once

#include <cstdint>

namespace libvmm::primecell {

constexpr uint64_t kIdFirst = 0xFE0;
constexpr uint64_t kIdEnd = 0x1000;

constexpr bool is_id_register(uint64_t offset) {
  return offset >= kIdFirst && offset < kIdEnd;
}

// The ID register at `offset` (is_id_register()) of part `part`, revision `revision`.
constexpr uint32_t id_register(uint64_t offset, uint16_t part, uint8_t revision) {
  const uint8_t ids[8] = {
      static_cast<uint8_t>(part & 0xff),
      static_cast<uint8_t>(0x10 | ((part >> 8) & 0xf)),  // designer 0x41 (ARM), low nibble
      static_cast<uint8_t>(revision << 4 | 0x4),         // ... its high nibble
      0x00,
      0x0D,
      0xF0,
      0x05,
      0xB1};
  return ids[(offset - kIdFirst) / 4];
}

}  // namespace libvmm::primecell
