#include <gtest/gtest.h>

#include <array>
#include <memory>

#include "libvmm/core/bus.hpp"
#include "libvmm/devices/i8042.hpp"

namespace libvmm {
namespace devices_i8042_test {

constexpr uint64_t kData = 0;
constexpr uint64_t kCommand = I8042::kCommandPort - I8042::kDataPort;

class I8042Test : public testing::Test {
 protected:
  void out(uint64_t offset, uint8_t value) { device_->write(offset, std::span(&value, 1)); }
  uint8_t in(uint64_t offset) {
    uint8_t value = 0xEE;
    device_->read(offset, std::span(&value, 1));
    return value;
  }

  int resets_ = 0;
  std::shared_ptr<I8042> device_ = std::make_shared<I8042>([this] { ++resets_; });
};

TEST_F(I8042Test, IdleController) {
  EXPECT_EQ(in(kCommand), 0);  // status: no output, input buffer empty
  EXPECT_EQ(in(kData), 0);
  std::array<uint8_t, 4> wide{};
  wide.fill(0xEE);
  device_->read(kCommand, wide);
  EXPECT_EQ(wide, (std::array<uint8_t, 4>{}));
}

TEST_F(I8042Test, PulseResetCommandCallsOnReset) {
  out(kCommand, 0xFE);
  EXPECT_EQ(resets_, 1);
}

TEST_F(I8042Test, OtherWritesIgnored) {
  out(kCommand, 0xAD);  // disable keyboard
  out(kCommand, 0x60);  // write command byte...
  out(kData, 0xFE);     // ...its value; not a reset
  out(kCommand, 0xD1);  // write output port
  EXPECT_EQ(resets_, 0);
  EXPECT_EQ(in(kCommand), 0);
}

TEST_F(I8042Test, AttachUsesOnlyItsTwoPorts) {
  Bus pio("pio");
  I8042::attach(pio, device_);
  for (uint64_t port = 0x61; port <= 0x63; ++port) EXPECT_EQ(pio.find(port), nullptr) << port;
  uint8_t status = 0xEE;
  ASSERT_TRUE(pio.read(0x64, std::span(&status, 1)));
  EXPECT_EQ(status, 0);
  const uint8_t reset = 0xFE;
  ASSERT_TRUE(pio.write(0x60, std::span(&reset, 1)));
  EXPECT_EQ(resets_, 0);
  ASSERT_TRUE(pio.write(0x64, std::span(&reset, 1)));
  EXPECT_EQ(resets_, 1);
}

TEST_F(I8042Test, WithoutResetHandler) {
  I8042 device(nullptr);
  const uint8_t reset = 0xFE;
  device.write(kCommand, std::span(&reset, 1));  // nothing to call, nothing breaks
}

}  // namespace devices_i8042_test
}  // namespace libvmm
