#include <gtest/gtest.h>

#include <array>
#include <memory>

#include "libvmm/core/bus.hpp"
#include "libvmm/devices/port_sink.hpp"

namespace libvmm {
namespace devices_port_sink_test {

TEST(PortSinkTest, AcceptsWritesAndReadsAllOnes) {
  PortSink sink("post-code");
  EXPECT_EQ(sink.name(), "post-code");
  const std::array<uint8_t, 4> value = {1, 2, 3, 4};
  sink.write(0, std::span(value).first(1));
  sink.write(0, value);
  std::array<uint8_t, 4> got{};
  sink.read(0, got);
  EXPECT_EQ(got, (std::array<uint8_t, 4>{0xFF, 0xFF, 0xFF, 0xFF}));
}

TEST(PortSinkTest, OneInstanceAtSeveralPorts) {
  Bus pio("pio");
  auto sink = std::make_shared<PortSink>();
  pio.attach(PortSink::kPostPort, 1, sink);
  pio.attach(0xED, 1, sink);
  uint8_t value = 0;
  EXPECT_TRUE(pio.write(0x80, std::span<const uint8_t>(&value, 1)));
  EXPECT_TRUE(pio.read(0xED, std::span(&value, 1)));
  EXPECT_EQ(value, 0xFF);
}

}  // namespace devices_port_sink_test
}  // namespace libvmm
