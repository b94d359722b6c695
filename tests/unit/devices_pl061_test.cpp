#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <vector>

#include "libvmm/devices/pl061.hpp"

namespace libvmm {
namespace devices_pl061_test {

class FakeIrq : public IrqLine {
 public:
  uint32_t number() const override { return 34; }
  void set_level(bool asserted) override { levels.push_back(asserted); }
  void pulse() override {}
  bool level() const { return !levels.empty() && levels.back(); }
  std::vector<bool> levels;
};

// Register offsets (PL061 TRM).
constexpr uint64_t kDir = 0x400, kIs = 0x404, kIbe = 0x408, kIev = 0x40C, kIe = 0x410, kRis = 0x414,
                   kMis = 0x418, kIc = 0x41C;

class Pl061Test : public testing::Test {
 protected:
  uint8_t reg(uint64_t offset) {  // Linux's gpio-pl061 uses byte accesses
    std::array<uint8_t, 1> b{0xEE};
    gpio_.read(offset, b);
    return b[0];
  }
  void set(uint64_t offset, uint8_t value) { gpio_.write(offset, std::array<uint8_t, 1>{value}); }

  std::shared_ptr<FakeIrq> irq_ = std::make_shared<FakeIrq>();
  Pl061 gpio_{irq_};
};

TEST_F(Pl061Test, IdentifiesAsPl061) {
  std::array<uint8_t, 4> id{};
  uint32_t periph = 0, cell = 0;
  for (unsigned i = 0; i < 4; ++i) {
    gpio_.read(0xFE0 + 4 * i, id);
    periph |= uint32_t{id[0]} << (8 * i);
    gpio_.read(0xFF0 + 4 * i, id);
    cell |= uint32_t{id[0]} << (8 * i);
  }
  EXPECT_EQ(periph, 0x00041061u);
  EXPECT_EQ(cell, 0xB105F00Du);
}

TEST_F(Pl061Test, DataReadsThroughTheAddressMask) {
  gpio_.set_input(3, true);
  EXPECT_EQ(reg(0x3FC), 0x08);      // all bits
  EXPECT_EQ(reg(0x08 << 2), 0x08);  // bit 3 alone
  EXPECT_EQ(reg(0x04 << 2), 0x00);  // bit 2 alone
  set(kDir, 0x01);                  // line 0 an output
  set(0x01 << 2, 0xFF);             // writes bit 0 only
  EXPECT_EQ(reg(0x3FC), 0x09);
  set(0x02 << 2, 0xFF);  // bit 1 is an input: no effect on its level
  EXPECT_EQ(reg(0x3FC), 0x09);
}

// How Linux's gpio-keys sets up the power key: both edges, interrupt enabled.
TEST_F(Pl061Test, BothEdgesOfTheKeyRaiseTheInterrupt) {
  EXPECT_FALSE(gpio_.interrupt_enabled(3));
  set(kIs, 0x00);
  set(kIbe, 0x08);
  set(kIe, 0x08);
  EXPECT_TRUE(gpio_.interrupt_enabled(3));
  EXPECT_FALSE(irq_->level());
  gpio_.set_input(3, true);  // pressed
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(reg(kRis), 0x08);
  EXPECT_EQ(reg(kMis), 0x08);
  set(kIc, 0x08);
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(reg(kRis), 0x00);
  gpio_.set_input(3, false);  // released
  EXPECT_TRUE(irq_->level());
  set(kIc, 0x08);
  EXPECT_FALSE(irq_->level());
}

// The power key is held until gpio-keys has read it (after its debounce delay): a line counts
// as seen once the guest reads GPIODATA through a mask that includes it, and each new level the
// host sets is unseen again. Output lines and other bits do not count.
TEST_F(Pl061Test, AnInputIsSeenOnceTheGuestReadsItsBit) {
  gpio_.set_input(3, true);
  EXPECT_FALSE(gpio_.input_seen(3));
  EXPECT_EQ(reg(0x04 << 2), 0x00);  // bit 2 alone
  EXPECT_EQ(reg(kRis), 0x00);       // not GPIODATA
  EXPECT_FALSE(gpio_.input_seen(3));
  EXPECT_EQ(reg(0x08 << 2), 0x08);  // bit 3, as gpio-pl061 reads one line
  EXPECT_TRUE(gpio_.input_seen(3));
  gpio_.set_input(3, false);
  EXPECT_FALSE(gpio_.input_seen(3));
  EXPECT_EQ(reg(0x3FC), 0x00);  // all bits
  EXPECT_TRUE(gpio_.input_seen(3));
  set(kDir, 0x08);  // an output line is not an input the guest can see
  gpio_.set_input(3, true);
  EXPECT_EQ(reg(0x3FC), 0x00);
  EXPECT_FALSE(gpio_.input_seen(3));
  EXPECT_FALSE(gpio_.input_seen(99));
}

TEST_F(Pl061Test, SingleEdgeAndMasking) {
  set(kIev, 0x08);  // rising edges only
  gpio_.set_input(3, true);
  EXPECT_EQ(reg(kRis), 0x08);
  EXPECT_FALSE(irq_->level());  // masked
  set(kIe, 0x08);
  EXPECT_TRUE(irq_->level());
  set(kIc, 0x08);
  gpio_.set_input(3, false);  // falling: ignored
  EXPECT_EQ(reg(kRis), 0x00);
  EXPECT_FALSE(irq_->level());
}

TEST_F(Pl061Test, LevelInterruptsFollowTheLine) {
  set(kIs, 0x08);
  set(kIev, 0x08);  // high level
  set(kIe, 0x08);
  EXPECT_FALSE(irq_->level());
  gpio_.set_input(3, true);
  EXPECT_TRUE(irq_->level());
  set(kIc, 0x08);  // clearing does not end a level held
  EXPECT_TRUE(irq_->level());
  gpio_.set_input(3, false);
  EXPECT_FALSE(irq_->level());
}

TEST_F(Pl061Test, HostileAccessesAreHarmless) {
  std::array<uint8_t, 8> wide{};
  gpio_.read(0x400, wide);
  EXPECT_EQ(wide, (std::array<uint8_t, 8>{}));
  gpio_.write(0x401, std::array<uint8_t, 1>{0xFF});  // unaligned: ignored
  EXPECT_EQ(reg(kDir), 0x00);
  gpio_.write(0x2000, std::array<uint8_t, 4>{1, 2, 3, 4});
  EXPECT_EQ(reg(0xFFF), 0x00);
  gpio_.set_input(8, true);  // no such line
  EXPECT_EQ(reg(0x3FC), 0x00);
  EXPECT_FALSE(gpio_.interrupt_enabled(99));
}

}  // namespace devices_pl061_test
}  // namespace libvmm
