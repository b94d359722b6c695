// What every fuzzer needs besides the virtIO test kit: fuzz input read as little-endian numbers
// and byte runs (zeroes past its end), and a check that crashes so that libFuzzer keeps the input.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>

namespace libvmm::fuzz {

// Says which check failed (inlined traps lose their line in the stack trace), then crashes.
// (std::source_location needs clang 15 with libstdc++; these builtins are what it wraps.)
inline void check(bool ok, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  if (ok) return;
  std::fprintf(stderr, "fuzz check failed: %s:%d\n", file, line);
  __builtin_trap();
}

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() {
    const uint16_t low = u8();
    return static_cast<uint16_t>(low | u8() << 8);
  }
  uint32_t u32() {
    const uint32_t low = u16();
    return low | static_cast<uint32_t>(u16()) << 16;
  }
  // Up to `n` bytes (fewer at the end of the input).
  std::span<const uint8_t> take(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    const auto bytes = std::span(data_ + pos_, n);
    pos_ += n;
    return bytes;
  }
  // Everything not read yet.
  std::span<const uint8_t> rest() { return take(size_); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace libvmm::fuzz
