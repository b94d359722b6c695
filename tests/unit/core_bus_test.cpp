#include <gtest/gtest.h>

#include <array>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/error.hpp"

using namespace libvmm;

namespace core_bus_test {

class Recorder : public BusDevice {
 public:
  explicit Recorder(std::string n) : name_(std::move(n)) {}
  std::string name() const override { return name_; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    last_offset = offset;
    for (auto& b : data) b = 0x5a;
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    last_offset = offset;
    last_size = data.size();
  }
  uint64_t last_offset = ~0ull;
  size_t last_size = 0;

 private:
  std::string name_;
};

TEST(Bus, DispatchesByRangeWithRelativeOffsets) {
  Bus bus("mmio");
  auto a = std::make_shared<Recorder>("a");
  auto b = std::make_shared<Recorder>("b");
  bus.attach(0x1000, 0x100, a);
  bus.attach(0x2000, 0x10, b);
  std::array<uint8_t, 4> data{};
  EXPECT_TRUE(bus.read(0x1010, data));
  EXPECT_EQ(a->last_offset, 0x10u);
  EXPECT_EQ(data[3], 0x5a);
  EXPECT_TRUE(bus.write(0x200c, data));
  EXPECT_EQ(b->last_offset, 0xcu);
  EXPECT_EQ(b->last_size, 4u);
}

TEST(Bus, UnclaimedAndStraddlingAccessesAreRefused) {
  Bus bus("mmio");
  bus.attach(0x1000, 0x100, std::make_shared<Recorder>("a"));
  std::array<uint8_t, 4> data{};
  EXPECT_FALSE(bus.read(0x0fff, std::span<uint8_t>(data).first(1)));
  EXPECT_FALSE(bus.read(0x10fe, data));  // runs past the device's end
  EXPECT_FALSE(bus.write(0x1100, data));
  EXPECT_FALSE(bus.read(~0ull - 1, data));  // wraps
}

TEST(Bus, OverlapIsAUserErrorNamingBothDevices) {
  Bus bus("mmio");
  bus.attach(0x1000, 0x100, std::make_shared<Recorder>("uart"));
  try {
    bus.attach(0x10f0, 0x100, std::make_shared<Recorder>("virtio-blk"));
    FAIL() << "expected an overlap error";
  } catch (const UserError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("virtio-blk"), std::string::npos);
    EXPECT_NE(msg.find("uart"), std::string::npos);
  }
  EXPECT_THROW(bus.attach(0x5000, 0, std::make_shared<Recorder>("empty")), UserError);
  EXPECT_THROW(bus.attach(~0ull - 4, 0x10, std::make_shared<Recorder>("wrap")), UserError);
}

}  // namespace core_bus_test
