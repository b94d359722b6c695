// The emulated MSI capability: its layout as the guest reads it, what the guest may write, and
// the state (enable, vectors, message, mask bits) read back, with malformed values (a Multiple
// Message Enable beyond what is offered, unaligned addresses, bits of vectors it does not have)
// kept in bounds.
#include <gtest/gtest.h>

#include <array>
#include <stdexcept>
#include <string>

#include "libvmm/pci/msi.hpp"

namespace libvmm::pci {
namespace pci_msi_test {

struct MsiTest : ::testing::Test {
  ConfigSpace config{Identity{0x8086, 0x2922, 2, 0x010601, 0, 0}};
  MsiCapability msi{4};
  uint32_t cap = msi.add_to(config);

  void write(uint32_t offset, uint32_t value, uint32_t size) {
    std::array<uint8_t, 4> b{static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                             static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
    std::string why;
    ASSERT_TRUE(config.write(offset, std::span<const uint8_t>(b.data(), size), why)) << why;
  }
};

TEST_F(MsiTest, LayoutIs64BitWithMaskBits) {
  EXPECT_EQ(config.find_capability(kCapMsi), cap);
  EXPECT_EQ(config.u8(cap), kCapMsi);
  // Per-vector masking (bit 8), 64-bit capable (bit 7), Multiple Message Capable = log2(4) = 2,
  // nothing enabled; nothing masked or pending.
  EXPECT_EQ(config.u16(cap + 2), 0x0180 | 2 << 1);
  EXPECT_EQ(config.u32(cap + 16), 0u);
  EXPECT_EQ(config.u32(cap + 20), 0u);
  EXPECT_EQ(msi.vectors(), 4);
  EXPECT_FALSE(msi.state(config).enabled);
}

TEST_F(MsiTest, GuestProgramsAddressDataAndVectors) {
  write(cap + 4, 0xfee0'1004, 4);
  write(cap + 8, 0x1, 4);
  write(cap + 12, 0x4060, 2);
  write(cap + 2, 1 | 2 << 4, 2);  // enable, 4 vectors
  const MsiCapability::State s = msi.state(config);
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.vectors, 4);
  EXPECT_EQ(s.address, 0x1'fee0'1004u);
  EXPECT_EQ(s.data, 0x4060);
  // The vector number replaces the data's low log2(vectors) bits.
  EXPECT_EQ(MsiCapability::message_data(s, 0), 0x4060u);
  EXPECT_EQ(MsiCapability::message_data(s, 3), 0x4063u);
}

TEST_F(MsiTest, ReadOnlyBitsStayAndMalformedValuesAreBounded) {
  write(cap + 2, 0xffff, 2);  // capable bits and 64-bit are read-only; MME 7 asks for 128
  EXPECT_EQ(config.u16(cap + 2) & 0x008e, 0x0080 | 2 << 1);
  EXPECT_EQ(msi.state(config).vectors, 4);  // at most what is offered
  write(cap + 4, 0xfee0'0003, 4);           // an unaligned address keeps its alignment
  EXPECT_EQ(msi.state(config).address & 3, 0u);
  write(cap + 12, 0xffff'ffff, 4);  // the data register is 16 bits
  EXPECT_EQ(msi.state(config).data, 0xffff);
  EXPECT_EQ(config.u16(cap + 14), 0);  // extended message data: not offered
}

TEST_F(MsiTest, CoversOnlyItsOwnBytes) {
  EXPECT_TRUE(msi.covers(cap + 2, 2));
  EXPECT_TRUE(msi.covers(cap + 12, 4));
  EXPECT_TRUE(msi.covers(cap + 16, 4));  // mask bits
  EXPECT_TRUE(msi.covers(cap + 20, 4));  // pending bits
  EXPECT_FALSE(msi.covers(cap + 24, 4));
  EXPECT_TRUE(msi.covers_pending(cap + 20, 4));
  EXPECT_TRUE(msi.covers_pending(cap + 16, 8));
  EXPECT_FALSE(msi.covers_pending(cap + 16, 4));
  EXPECT_FALSE(msi.covers(kCommand, 2));
  EXPECT_FALSE(MsiCapability(1).covers(0x40, 4));  // not added anywhere yet
}

TEST_F(MsiTest, MaskBitsAreTheGuestsPendingBitsTheFunctions) {
  write(cap + 2, 1 | 2 << 4, 2);    // enable, 4 vectors
  write(cap + 16, 0xffff'fffa, 4);  // only the 4 vectors' bits exist
  EXPECT_EQ(config.u32(cap + 16), 0xau);
  MsiCapability::State s = msi.state(config);
  EXPECT_EQ(s.mask, 0xau);
  EXPECT_TRUE(s.deliverable(0));
  EXPECT_FALSE(s.deliverable(1));
  EXPECT_TRUE(s.deliverable(2));
  EXPECT_FALSE(s.deliverable(4));  // beyond those enabled
  write(cap + 20, 0xf, 4);         // the guest cannot set pending bits
  EXPECT_EQ(config.u32(cap + 20), 0u);
  msi.set_pending(config, 0xffff'0002);
  EXPECT_EQ(config.u32(cap + 20), 0x2u);
  write(cap + 2, 0, 2);  // disabled: nothing deliverable
  EXPECT_FALSE(msi.state(config).deliverable(0));
  // All 32 bits exist with 32 vectors.
  ConfigSpace big{Identity{0x8086, 0x2922, 2, 0x010601, 0, 0}};
  MsiCapability msi32{32};
  const uint32_t at = msi32.add_to(big);
  std::string why;
  const std::array<uint8_t, 4> ones{0xff, 0xff, 0xff, 0xff};
  ASSERT_TRUE(big.write(at + 16, ones, why)) << why;
  EXPECT_EQ(msi32.state(big).mask, 0xffff'ffffu);
}

TEST(MsiCapability, VectorCountsRoundDownToAPowerOfTwo) {
  EXPECT_EQ(MsiCapability(1).vectors(), 1);
  EXPECT_EQ(MsiCapability(3).vectors(), 2);
  EXPECT_EQ(MsiCapability(32).vectors(), 32);
  EXPECT_EQ(MsiCapability(64).vectors(), 32);
  EXPECT_THROW(MsiCapability(0), std::invalid_argument);
}

}  // namespace pci_msi_test
}  // namespace libvmm::pci
