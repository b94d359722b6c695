#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include "libvmm/pci/config_space.hpp"

namespace libvmm::pci {
namespace pci_config_space_test {

Identity test_identity() {
  return Identity{0x1af4, 0x1042, 1, 0x018000, 0x1af4, 0x0002};
}

uint32_t read32(const ConfigSpace& c, uint32_t offset) {
  std::array<uint8_t, 4> b{};
  std::string why;
  EXPECT_TRUE(c.read(offset, b, why)) << why;
  uint32_t v;
  std::memcpy(&v, b.data(), 4);
  return v;
}

void write32(ConfigSpace& c, uint32_t offset, uint32_t value) {
  std::array<uint8_t, 4> b{};
  std::memcpy(b.data(), &value, 4);
  std::string why;
  EXPECT_TRUE(c.write(offset, b, why)) << why;
}

TEST(PciConfigSpace, IdentityAndHeader) {
  ConfigSpace c(test_identity());
  EXPECT_EQ(read32(c, kVendorId), 0x10421af4u);
  EXPECT_EQ(read32(c, 0x08), 0x01800001u);  // class 01, subclass 80, prog-if 00, revision 1
  EXPECT_EQ(read32(c, kSubsystemVendorId), 0x00021af4u);
  EXPECT_EQ(c.u8(kHeaderType), 0);
  EXPECT_EQ(read32(c, kCapabilityPointer), 0u);
  EXPECT_EQ(c.u16(kStatus) & kStatusCapabilities, 0);
}

TEST(PciConfigSpace, ReadOnlyRegistersIgnoreWrites) {
  ConfigSpace c(test_identity());
  write32(c, kVendorId, 0xdeadbeef);
  write32(c, 0x08, 0xffffffff);
  EXPECT_EQ(read32(c, kVendorId), 0x10421af4u);
  EXPECT_EQ(read32(c, 0x08), 0x01800001u);
  // Command: only the defined bits stick.
  write32(c, kCommand, 0x0000ffff);
  EXPECT_EQ(c.command(),
            kCommandIo | kCommandMemory | kCommandBusMaster | kCommandSerr | kCommandIntxDisable);
  // Interrupt line is scratch; the pin is the device's.
  c.set_interrupt_pin(1);
  write32(c, kInterruptLine, 0xffffff0b);
  EXPECT_EQ(c.u8(kInterruptLine), 0x0b);
  EXPECT_EQ(c.u8(kInterruptPin), 1);
}

TEST(PciConfigSpace, Mem32BarSizingAndReprogramming) {
  ConfigSpace c(test_identity());
  c.add_bar(0, {BarKind::mem32, 0x4000, false});
  write32(c, kBar0, 0xffffffff);
  EXPECT_EQ(read32(c, kBar0), 0xffffc000u);  // size 16 KiB, 32-bit memory
  write32(c, kBar0, 0xfe001234);
  EXPECT_EQ(read32(c, kBar0), 0xfe000000u);
  EXPECT_EQ(c.bar_address(0), 0xfe000000u);
  // Not decoding until the command register enables memory space.
  EXPECT_FALSE(c.mappings()[0]);
  write32(c, kCommand, kCommandMemory);
  ASSERT_TRUE(c.mappings()[0]);
  EXPECT_EQ(c.mappings()[0]->address, 0xfe000000u);
  EXPECT_EQ(c.mappings()[0]->size, 0x4000u);
  // A byte write to the second byte of the BAR moves it by 64 KiB steps.
  std::array<uint8_t, 1> b{0x01};
  std::string why;
  ASSERT_TRUE(c.write(kBar0 + 2, b, why));
  EXPECT_EQ(c.bar_address(0), 0xfe010000u);
}

TEST(PciConfigSpace, Mem64BarTakesTwoRegisters) {
  ConfigSpace c(test_identity());
  c.add_bar(2, {BarKind::mem64, 0x100000, true});
  write32(c, kBar0 + 8, 0xffffffff);
  write32(c, kBar0 + 12, 0xffffffff);
  EXPECT_EQ(read32(c, kBar0 + 8), 0xfff0000cu);  // 64-bit, prefetchable
  EXPECT_EQ(read32(c, kBar0 + 12), 0xffffffffu);
  write32(c, kBar0 + 8, 0x00200000);
  write32(c, kBar0 + 12, 0x00000080);
  EXPECT_EQ(c.bar_address(2), 0x8000200000ull);
  write32(c, kCommand, kCommandMemory);
  ASSERT_TRUE(c.mappings()[2]);
  EXPECT_EQ(c.mappings()[2]->kind, BarKind::mem64);
  EXPECT_FALSE(c.mappings()[3]);
}

TEST(PciConfigSpace, IoBarAndUnimplementedBars) {
  ConfigSpace c(test_identity());
  c.add_bar(1, {BarKind::io, 0x40, false});
  write32(c, kBar0 + 4, 0xffffffff);
  EXPECT_EQ(read32(c, kBar0 + 4), 0x0000ffc1u);
  write32(c, kBar0 + 4, 0xc040);
  write32(c, kCommand, kCommandMemory);
  EXPECT_FALSE(c.mappings()[1]);  // I/O space not enabled
  write32(c, kCommand, kCommandIo);
  ASSERT_TRUE(c.mappings()[1]);
  EXPECT_EQ(c.mappings()[1]->address, 0xc040u);
  // Unimplemented BARs and the expansion ROM read 0 after sizing.
  write32(c, kBar0, 0xffffffff);
  EXPECT_EQ(read32(c, kBar0), 0u);
  write32(c, kExpansionRom, 0xffffffff);
  EXPECT_EQ(read32(c, kExpansionRom), 0u);
}

TEST(PciConfigSpace, BadBarDeclarationsThrow) {
  ConfigSpace c(test_identity());
  EXPECT_THROW(c.add_bar(0, {BarKind::mem32, 0x3000, false}), std::invalid_argument);
  EXPECT_THROW(c.add_bar(0, {BarKind::mem32, 8, false}), std::invalid_argument);
  EXPECT_THROW(c.add_bar(5, {BarKind::mem64, 0x1000, false}), std::invalid_argument);
  EXPECT_THROW(c.add_bar(6, {BarKind::mem32, 0x1000, false}), std::invalid_argument);
  c.add_bar(0, {BarKind::mem64, 0x1000, false});
  EXPECT_THROW(c.add_bar(1, {BarKind::mem32, 0x1000, false}), std::invalid_argument);
}

TEST(PciConfigSpace, CapabilityList) {
  ConfigSpace c(test_identity());
  const uint32_t a = c.add_capability(kCapVendor, 16);
  const uint32_t b = c.add_capability(kCapMsix, 12);
  EXPECT_EQ(a, kFirstCapability);
  EXPECT_EQ(b, kFirstCapability + 16);
  EXPECT_NE(c.u16(kStatus) & kStatusCapabilities, 0);
  EXPECT_EQ(c.u8(kCapabilityPointer), a);
  EXPECT_EQ(c.u8(a + 1), b);
  EXPECT_EQ(c.u8(b + 1), 0);
  EXPECT_EQ(c.find_capability(kCapMsix), b);
  EXPECT_EQ(c.find_capability(kCapMsi), 0u);
  // Capability bodies are read-only unless declared writable.
  write32(c, a, 0xffffffff);
  EXPECT_EQ(c.u8(a), kCapVendor);
  EXPECT_EQ(c.u8(a + 1), b);
  c.set_writable(a + 4, 2, 0x00ff);
  write32(c, a + 4, 0xffffffff);
  EXPECT_EQ(c.u16(a + 4), 0x00ff);
  EXPECT_EQ(c.u16(a + 6), 0);
  EXPECT_THROW(c.add_capability(kCapVendor, 250), std::invalid_argument);
}

TEST(PciConfigSpace, MalformedAccessesReadAllOnesAndWriteNothing) {
  ConfigSpace c(test_identity());
  std::string why;
  std::array<uint8_t, 4> four{};
  std::array<uint8_t, 2> two{};
  std::array<uint8_t, 3> three{};
  std::array<uint8_t, 8> eight{};
  EXPECT_FALSE(c.read(1, two, why));  // misaligned
  EXPECT_EQ(two[0], 0xff);
  EXPECT_NE(why.find("aligned"), std::string::npos);
  EXPECT_FALSE(c.read(0, three, why));
  EXPECT_FALSE(c.read(0, eight, why));
  EXPECT_FALSE(c.read(kExtendedConfigSize, four, why));
  EXPECT_FALSE(c.read(0xffffffff, four, why));
  std::array<uint8_t, 2> command{0xff, 0xff};
  EXPECT_FALSE(c.write(kCommand + 1, command, why));
  EXPECT_EQ(c.command(), 0);
  // The extended space is there and empty.
  EXPECT_TRUE(c.read(0x100, four, why));
  EXPECT_EQ(four, (std::array<uint8_t, 4>{0, 0, 0, 0}));
  EXPECT_TRUE(c.write(0xffc, four, why));
}

TEST(PciConfigSpace, ResetRestoresPowerOn) {
  ConfigSpace c(test_identity());
  c.add_bar(0, {BarKind::mem32, 0x1000, false});
  c.set_bar_address(0, 0xe0000000);
  write32(c, kCommand, kCommandMemory | kCommandBusMaster);
  c.reset();
  EXPECT_EQ(c.command(), 0);
  EXPECT_EQ(c.bar_address(0), 0u);
  EXPECT_EQ(read32(c, kVendorId), 0x10421af4u);
}

}  // namespace pci_config_space_test
}  // namespace libvmm::pci
