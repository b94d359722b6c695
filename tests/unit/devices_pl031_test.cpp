#include <gtest/gtest.h>

#include <array>

#include "libvmm/devices/pl031.hpp"

namespace libvmm {
namespace devices_pl031_test {

class Pl031Test : public testing::Test {
 protected:
  uint32_t reg(uint64_t offset) {
    std::array<uint8_t, 4> b{0xEE, 0xEE, 0xEE, 0xEE};
    rtc_.read(offset, b);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  }
  void set(uint64_t offset, uint32_t value) {
    const std::array<uint8_t, 4> b{static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                                   static_cast<uint8_t>(value >> 16),
                                   static_cast<uint8_t>(value >> 24)};
    rtc_.write(offset, b);
  }

  std::time_t now_ = 1796000000;
  Pl031 rtc_{[this] { return now_; }};
};

TEST_F(Pl031Test, DataRegisterIsTheHostsTime) {
  EXPECT_EQ(reg(0x000), 1796000000u);
  now_ += 5;
  EXPECT_EQ(reg(0x000), 1796000005u);
  EXPECT_EQ(reg(0x00C), 1u);  // started
}

TEST_F(Pl031Test, LoadSetsTheGuestsClockOnly) {
  EXPECT_EQ(reg(0x008), 0u);  // nothing loaded yet
  set(0x008, 1000);
  EXPECT_EQ(reg(0x000), 1000u);
  now_ += 7;
  EXPECT_EQ(reg(0x000), 1007u);          // keeps counting from the loaded value
  EXPECT_EQ(reg(0x008), 1000u);          // the load register reads back, it does not count
  Pl031 other([this] { return now_; });  // another VM's clock is the host's
  std::array<uint8_t, 4> b{};
  other.read(0, b);
  EXPECT_EQ(b[0] | b[1] << 8 | b[2] << 16 | static_cast<uint32_t>(b[3]) << 24, now_);
}

TEST_F(Pl031Test, MatchAndMaskAreStoredNoInterruptIsRaised) {
  set(0x004, 1796000001);
  set(0x010, 1);
  EXPECT_EQ(reg(0x004), 1796000001u);
  EXPECT_EQ(reg(0x010), 1u);
  now_ += 10;
  EXPECT_EQ(reg(0x014), 0u);
  EXPECT_EQ(reg(0x018), 0u);
  set(0x01C, 1);  // clearing is harmless
  set(0x00C, 0);  // the clock cannot be stopped
  EXPECT_EQ(reg(0x00C), 1u);
}

TEST_F(Pl031Test, PrimeCellIdentification) {
  uint32_t periph = 0, cell = 0;
  for (unsigned i = 0; i < 4; ++i) {
    periph |= (reg(0xFE0 + 4 * i) & 0xFF) << (8 * i);
    cell |= (reg(0xFF0 + 4 * i) & 0xFF) << (8 * i);
  }
  EXPECT_EQ(periph, 0x00041031u);
  EXPECT_EQ(cell, 0xB105F00Du);
}

TEST_F(Pl031Test, OddAccessesAreHarmless) {
  std::array<uint8_t, 1> byte{0xEE};
  rtc_.read(0x001, byte);  // the second byte of RTCDR
  EXPECT_EQ(byte[0], (1796000000u >> 8) & 0xFF);
  std::array<uint8_t, 8> wide{};
  wide.fill(0xEE);
  rtc_.read(0x000, wide);  // wider than a register: zeros
  EXPECT_EQ(wide[0], 0);
  set(0x009, 5);  // unaligned: ignored
  const std::array<uint8_t, 2> half{1, 2};
  rtc_.write(0x008, half);  // not 32-bit: ignored
  EXPECT_EQ(reg(0x000), 1796000000u);
  EXPECT_EQ(reg(0x800), 0u);  // nothing there
  set(0x800, 0xFFFFFFFF);
  rtc_.read(0xFFC, byte);
  EXPECT_EQ(byte[0], 0xB1);
}

}  // namespace devices_pl031_test
}  // namespace libvmm
