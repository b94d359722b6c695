// Fault reports: what the user reads when the guest touches an address nothing serves.
#include <gtest/gtest.h>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/fault_report.hpp"
#include "libvmm/core/guest_memory.hpp"

using namespace libvmm;

namespace core_fault_report_test {

struct Dummy final : BusDevice {
  std::string name() const override { return "dummy"; }
  void read(uint64_t, std::span<uint8_t>) override {}
  void write(uint64_t, std::span<const uint8_t>) override {}
};

struct FaultReportTest : ::testing::Test {
  FaultReportTest() {
    memory.map(0, MemoryRegion::create("ram", 0x10000), 0, 0x10000);
    memory.map(0x100000, MemoryRegion::create("rom", 0x2000), 0, 0x2000, /*readonly=*/true);
    mmio.attach(0xd0000000, 0x200, std::make_shared<Dummy>());
  }
  std::string report(uint64_t address, bool write) {
    return FaultReporter::describe({0, address, 4, write, 0x1234}, memory, mmio, false);
  }
  GuestMemory memory;
  Bus mmio{"MMIO"};
};

TEST_F(FaultReportTest, NamesTheNearestThingAndItsSide) {
  const std::string past = report(0x10010, false);
  EXPECT_NE(past.find("read 4 bytes at guest-physical 0x10010 (instruction pointer 0x1234): no "
                      "RAM or device is mapped there"),
            std::string::npos)
      << past;
  EXPECT_NE(past.find("nearest: memory 'ram' at [0x0, 0x10000), 0x11 bytes past its end"),
            std::string::npos)
      << past;
  const std::string below = report(0xcffffff0, false);
  EXPECT_NE(below.find("nearest: device 'dummy' at [0xd0000000, 0xd0000200), 0x10 bytes below its "
                       "start"),
            std::string::npos)
      << below;
}

// A write to a read-only map faults inside the mapping: the distance must not underflow into a
// huge "bytes past its end".
TEST_F(FaultReportTest, WriteInsideAReadOnlyMap) {
  const std::string r = report(0x100804, true);
  EXPECT_NE(r.find("memory 'rom' is read-only for the guest"), std::string::npos) << r;
  EXPECT_NE(r.find("nearest: memory 'rom' at [0x100000, 0x102000), 0x804 bytes into it"),
            std::string::npos)
      << r;
  EXPECT_EQ(r.find("past its end"), std::string::npos) << r;
  EXPECT_NE(r.find("the write is dropped"), std::string::npos) << r;
}

// Found by bus_fault_fuzzer: a device at [0, 1) is 2^64 - 1 bytes from the last address, the
// largest distance there is; the report said the guest had nothing at all.
TEST(FaultReport, NamesTheOnlyDeviceEvenAtTheLargestDistance) {
  GuestMemory memory;
  Bus mmio{"MMIO"};
  mmio.attach(0, 1, std::make_shared<Dummy>());
  const std::string r = FaultReporter::describe({0, ~0ull, 1, false, 0}, memory, mmio, false);
  EXPECT_NE(r.find("nearest: device 'dummy' at [0x0, 0x1), 0xffffffffffffffff bytes past its end"),
            std::string::npos)
      << r;
}

}  // namespace core_fault_report_test
