#pragma once
// Reads from a bank of 32-bit registers (the PrimeCell devices' layout): an access of 1-4 bytes
// at any offset gets the bytes of the aligned register it falls in; a wider or empty access
// reads as zeroes.
#include <cstdint>
#include <cstring>
#include <span>

namespace libvmm {

template <typename ReadRegister>  // uint32_t(uint64_t aligned_offset)
void read_32bit_register(uint64_t offset, std::span<uint8_t> data, ReadRegister read_register) {
  if (data.empty() || data.size() > 4) {
    std::memset(data.data(), 0, data.size());
    return;
  }
  const uint32_t value = read_register(offset & ~uint64_t{3}) >> (8 * (offset & 3));
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace libvmm
