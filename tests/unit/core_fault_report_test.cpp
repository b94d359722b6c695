// Fault reports: what the user reads when the guest touches an address nothing serves.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/fault_report.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/vcpu_runner.hpp"

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
    return FaultReporter::describe({0, address, 4, write, 0x1234}, memory, mmio, {});
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
  EXPECT_NE(past.find("nearest: memory 'ram' at [0x0, 0x10000), 0x10 bytes past its end"),
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
  const std::string r = FaultReporter::describe({0, ~0ull, 1, false, 0}, memory, mmio, {});
  EXPECT_NE(r.find("nearest: device 'dummy' at [0x0, 0x1), 0xfffffffffffffffe bytes past its end"),
            std::string::npos)
      << r;
}

// The distance past an end adds up: end + distance = the address; the byte right after is "just
// past" it.
TEST_F(FaultReportTest, DistancePastTheEndAddsUpToTheAddress) {
  EXPECT_NE(report(0x10000, false).find("at [0x0, 0x10000), just past its end"), std::string::npos);
  EXPECT_NE(report(0xd0000300, false).find("at [0xd0000000, 0xd0000200), 0x100 bytes past its end"),
            std::string::npos);
}

// Found in review: an 8-byte read at a device's last 4 bytes is refused by the bus (it does not
// fit); "nothing is mapped there" beside "0x1fc bytes into it" contradicted itself.
TEST_F(FaultReportTest, AnAccessOverADevicesEdgeSaysSo) {
  const std::string over =
      FaultReporter::describe({0, 0xd00001fc, 8, false, 0x1234}, memory, mmio, {});
  EXPECT_NE(over.find(": the access runs 0x4 bytes past the end of device 'dummy' at "
                      "[0xd0000000, 0xd0000200)"),
            std::string::npos)
      << over;
  const std::string under =
      FaultReporter::describe({0, 0xcffffffe, 4, true, 0x1234}, memory, mmio, {});
  EXPECT_NE(under.find(": the access starts 0x2 bytes below device 'dummy'"), std::string::npos)
      << under;
  EXPECT_EQ(under.find("no RAM or device"), std::string::npos) << under;
}

TEST_F(FaultReportTest, NamesTheVmTheSettingAndAnUnknownOrLaterInstructionPointer) {
  const FaultReporter::Options options{
      .strict = false, .vm_name = "linux", .strict_setting = "strict_faults=\"true\""};
  const std::string r =
      FaultReporter::describe({1, 0x20000, 4, true, std::nullopt}, memory, mmio, options);
  EXPECT_NE(r.find("guest fault: VM 'linux' vCPU 1 wrote 4 bytes at guest-physical 0x20000 "
                   "(instruction pointer unavailable)"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("(strict_faults=\"true\" stops it)"), std::string::npos) << r;
  EXPECT_EQ(r.find("--strict"), std::string::npos) << r;
  const std::string x86 =
      FaultReporter::describe({0, 0x20000, 4, true, 0x1000, true}, memory, mmio, {});
  EXPECT_NE(x86.find("(instruction pointer 0x1000, just past the writing instruction)"),
            std::string::npos)
      << x86;
}

// Captures stderr (where log lines go) for the duration of a test.
class StderrCapture {
 public:
  StderrCapture() : saved_(::dup(STDERR_FILENO)) {
    file_ = std::tmpfile();
    ::dup2(::fileno(file_), STDERR_FILENO);
  }
  ~StderrCapture() {
    restore();
    std::fclose(file_);
  }
  std::string text() {
    restore();
    std::string out;
    std::rewind(file_);
    for (int c; (c = std::fgetc(file_)) != EOF;) out += static_cast<char>(c);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
  }
  int saved_;
  std::FILE* file_;
};

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Found in review: a guest touching 4096 addresses got 4096 reports, then none for ever; and a
// read then a write at one address reported only the read.
TEST_F(FaultReportTest, NewFaultsAreRateLimitedNotSilencedForGood) {
  FaultReporter reporter(memory, mmio, {});
  const auto start = FaultReporter::Clock::time_point{} + std::chrono::hours(1);
  StderrCapture capture;
  for (uint64_t i = 0; i < 10'000; ++i) {
    EXPECT_FALSE(reporter.report_at(start, {0, 0x20000 + 8 * i, 4, false, 0}));
  }
  EXPECT_FALSE(reporter.report_at(start, {0, 0x20000, 4, true, 0}));  // the write: limited now
  // Later, a new fault is reported again and says how many were left out.
  const auto later = start + FaultReporter::kInterval;
  EXPECT_FALSE(reporter.report_at(later, {0, 0x20000, 4, true, 0}));
  EXPECT_FALSE(reporter.report_at(later, {0, 0x20000, 4, true, 0}));  // once per address
  const std::string log = capture.text();
  EXPECT_EQ(count(log, "guest fault: vCPU"), FaultReporter::kBurst + 1) << log;
  EXPECT_EQ(count(log, "reporting at most one per 10 s"), 1u) << log;
  EXPECT_NE(log.find("vCPU 0 wrote 4 bytes at guest-physical 0x20000"), std::string::npos) << log;
  EXPECT_NE(log.find("(9937 other new faults were left out before this one)"), std::string::npos)
      << log;
}

TEST_F(FaultReportTest, QuietShowsStrictReportsOnlyAndAFailedRegisterReadIsNoError) {
  const log::Level before = log::level();
  log::set_level(log::Level::error);
  StderrCapture capture;
  FaultReporter lenient(memory, mmio, {});
  int reads = 0;
  EXPECT_FALSE(lenient.report({0, 0x20000, 4, false, std::nullopt}, [&]() -> uint64_t {
    ++reads;
    return 0;
  }));
  FaultReporter strict(memory, mmio, FaultReporter::Options::with_strict(true));
  EXPECT_TRUE(strict.report({0, 0x30000, 4, false, std::nullopt},
                            []() -> uint64_t { throw std::runtime_error("no registers"); }));
  log::set_level(before);
  const std::string log = capture.text();
  EXPECT_EQ(reads, 0);  // nothing shown: no register read either
  EXPECT_EQ(log.find("0x20000"), std::string::npos) << log;
  EXPECT_NE(log.find("error: guest fault: vCPU 0 read 4 bytes at guest-physical 0x30000 "
                     "(instruction pointer unavailable)"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("nearest:"), std::string::npos) << log;  // info lines: not at this level
}

// Found in review: an internal error said only "suberror 1".
TEST(InternalError, NamesTheSuberrorAndGivesKvmsDataBoundedByTheArray) {
  kvm_run run{};
  run.internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
  run.internal.ndata = 2;
  run.internal.data[0] = 0x1234;
  run.internal.data[1] = 0xf4;
  EXPECT_EQ(describe_internal_error(run),
            "suberror 1 (KVM could not emulate an instruction: often the guest ran code where it "
            "has no RAM, or used an instruction KVM cannot emulate on a device); data 0x1234 0xf4");
  run.internal.suberror = 99;
  run.internal.ndata = 1000;  // more than the array holds
  const std::string text = describe_internal_error(run);
  EXPECT_EQ(text.find("suberror 99 (a kind this VMM does not know); data 0x1234 0xf4 0x0"), 0u)
      << text;
  EXPECT_EQ(
      std::count(text.begin(), text.end(), ' '),
      std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(text.find("data")), ' ') +
          std::size(run.internal.data));
}

}  // namespace core_fault_report_test
