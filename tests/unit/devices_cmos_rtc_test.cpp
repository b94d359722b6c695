#include <gtest/gtest.h>

#include <array>
#include <ctime>
#include <memory>
#include <vector>

#include "libvmm/devices/cmos_rtc.hpp"

namespace libvmm {
namespace devices_cmos_rtc_test {

constexpr std::time_t kLeapDay = 1709214307;  // 2024-02-29 13:45:07 UTC, a Thursday
constexpr std::time_t kLastDay = 946598709;   // 1999-12-31 00:05:09 UTC, a Friday

class RecordingIrq final : public IrqLine {
 public:
  uint32_t number() const override { return CmosRtc::kIrq; }
  void set_level(bool asserted) override { levels.push_back(asserted); }
  void pulse() override {}
  bool raised() const { return !levels.empty() && levels.back(); }
  std::vector<bool> levels;
};

class CmosRtcTest : public testing::Test {
 protected:
  uint8_t cmos(uint8_t index) {
    select(index);
    uint8_t value = 0xEE;
    rtc_.read(1, std::span(&value, 1));
    return value;
  }
  void set_cmos(uint8_t index, uint8_t value) {
    select(index);
    rtc_.write(1, std::span(&value, 1));
  }
  void select(uint8_t index) { rtc_.write(0, std::span(&index, 1)); }

  std::time_t now_ = kLeapDay;
  std::shared_ptr<RecordingIrq> irq_ = std::make_shared<RecordingIrq>();
  CmosRtc rtc_{[this] { return now_; }, irq_};
};

TEST_F(CmosRtcTest, ClockInBcdFromUtc) {
  EXPECT_EQ(cmos(0x00), 0x07);  // seconds
  EXPECT_EQ(cmos(0x02), 0x45);  // minutes
  EXPECT_EQ(cmos(0x04), 0x13);  // hours, 24-hour mode
  EXPECT_EQ(cmos(0x06), 0x05);  // day of week, Sunday = 1
  EXPECT_EQ(cmos(0x07), 0x29);  // day of month
  EXPECT_EQ(cmos(0x08), 0x02);  // month
  EXPECT_EQ(cmos(0x09), 0x24);  // year
  EXPECT_EQ(cmos(0x32), 0x20);  // century

  now_ = kLastDay;
  EXPECT_EQ(cmos(0x00), 0x09);
  EXPECT_EQ(cmos(0x04), 0x00);
  EXPECT_EQ(cmos(0x06), 0x06);
  EXPECT_EQ(cmos(0x08), 0x12);
  EXPECT_EQ(cmos(0x09), 0x99);
  EXPECT_EQ(cmos(0x32), 0x19);
}

// The calendar arithmetic agrees with the C library's gmtime_r() over 1970-2150 (every ~10 days
// at a different time of day), binary mode so the fields compare directly.
TEST_F(CmosRtcTest, ClockAgreesWithGmtime) {
  set_cmos(0x0B, 0x06);  // binary, 24-hour
  for (std::time_t t = 0; t < 5'680'000'000; t += 863'999) {
    now_ = t;
    std::tm tm{};
    gmtime_r(&t, &tm);
    ASSERT_EQ(cmos(0x00), tm.tm_sec) << t;
    ASSERT_EQ(cmos(0x02), tm.tm_min) << t;
    ASSERT_EQ(cmos(0x04), tm.tm_hour) << t;
    ASSERT_EQ(cmos(0x06), tm.tm_wday + 1) << t;
    ASSERT_EQ(cmos(0x07), tm.tm_mday) << t;
    ASSERT_EQ(cmos(0x08), tm.tm_mon + 1) << t;
    ASSERT_EQ(cmos(0x09), (tm.tm_year + 1900) % 100) << t;
    ASSERT_EQ(cmos(0x32), (tm.tm_year + 1900) / 100) << t;
  }
}

TEST_F(CmosRtcTest, StatusRegisters) {
  EXPECT_EQ(cmos(0x0A), 0x26);  // UIP clear
  EXPECT_EQ(cmos(0x0B), 0x02);  // 24-hour, BCD
  EXPECT_EQ(cmos(0x0C), 0x00);
  EXPECT_EQ(cmos(0x0D), 0x80);  // valid RAM and time

  set_cmos(0x0A, 0xA6);  // UIP is read-only
  EXPECT_EQ(cmos(0x0A), 0x26);
  set_cmos(0x0C, 0xFF);
  set_cmos(0x0D, 0x00);
  EXPECT_EQ(cmos(0x0C), 0x00);
  EXPECT_EQ(cmos(0x0D), 0x80);
}

// IRQ 8: an update-ended interrupt each second while UIE is set, held until register C is read;
// the flags are set whether or not they interrupt.
TEST_F(CmosRtcTest, UpdateEndedInterruptsEverySecondUntilRegisterCIsRead) {
  ++now_;
  rtc_.update();
  EXPECT_FALSE(irq_->raised()) << "UIE is clear";
  EXPECT_EQ(cmos(0x0C), 0x10) << "UF without IRQF";
  set_cmos(0x0B, 0x12);  // UIE, 24-hour BCD
  ++now_;
  rtc_.update();
  EXPECT_TRUE(irq_->raised());
  ++now_;
  rtc_.update();
  EXPECT_EQ(irq_->levels, (std::vector<bool>{true})) << "held high: one interrupt";
  EXPECT_EQ(cmos(0x0C), 0x90) << "IRQF and UF";
  EXPECT_FALSE(irq_->raised()) << "the read lowers it";
  EXPECT_EQ(cmos(0x0C), 0x00) << "and clears the flags";
}

// What Linux's RTC core does for hwclock's update interrupt: an alarm a second ahead with AIE.
TEST_F(CmosRtcTest, AnAlarmInterruptsWhenTheTimeMatches) {
  // Now 13:45:07; the alarm at 13:45:09 (BCD).
  set_cmos(0x01, 0x09);
  set_cmos(0x03, 0x45);
  set_cmos(0x05, 0x13);
  set_cmos(0x0B, 0x22);  // AIE
  ++now_;
  rtc_.update();
  EXPECT_FALSE(irq_->raised());
  EXPECT_EQ(cmos(0x0C), 0x10) << "UF only";
  ++now_;
  rtc_.update();
  EXPECT_TRUE(irq_->raised());
  EXPECT_EQ(cmos(0x0C), 0xB0) << "IRQF, AF and UF";
  EXPECT_FALSE(irq_->raised());

  // 0xC0-0xFF matches any value: every second.
  set_cmos(0x01, 0xFF);
  set_cmos(0x03, 0xC0);
  set_cmos(0x05, 0xC0);
  ++now_;
  rtc_.update();
  EXPECT_EQ(cmos(0x0C), 0xB0);
  // A flag set while its interrupt is off raises the line once enabled.
  set_cmos(0x0B, 0x02);
  ++now_;
  rtc_.update();
  EXPECT_FALSE(irq_->raised());
  set_cmos(0x0B, 0x22);
  EXPECT_TRUE(irq_->raised());
  EXPECT_EQ(cmos(0x0C), 0xB0);
}

// Register C read without the timer (start()) still shows the seconds gone by; an alarm passed
// while the host was away (days) is seen, the seconds looked at bounded.
TEST_F(CmosRtcTest, AnAlarmPassedDuringALongGapIsSeen) {
  set_cmos(0x01, 0x00);
  set_cmos(0x03, 0x00);
  set_cmos(0x05, 0x00);  // midnight
  set_cmos(0x0B, 0x22);
  now_ += 3 * 24 * 60 * 60;
  rtc_.update();
  EXPECT_TRUE(irq_->raised());
}

TEST_F(CmosRtcTest, NmiMaskBitOfIndexIgnored) {
  EXPECT_EQ(cmos(0x80 | 0x02), 0x45);
  EXPECT_EQ(cmos(0x80 | 0x0D), 0x80);
}

TEST_F(CmosRtcTest, GuestCannotSetTheClock) {
  set_cmos(0x00, 0x30);
  set_cmos(0x09, 0x01);
  EXPECT_EQ(cmos(0x00), 0x07);
  EXPECT_EQ(cmos(0x09), 0x24);
}

TEST_F(CmosRtcTest, BinaryAndTwelveHourModes) {
  set_cmos(0x0B, 0x06);  // binary, 24-hour
  EXPECT_EQ(cmos(0x02), 45);
  EXPECT_EQ(cmos(0x04), 13);
  set_cmos(0x0B, 0x00);                // BCD, 12-hour
  EXPECT_EQ(cmos(0x04), 0x80 | 0x01);  // 1 PM
  now_ = kLastDay;
  EXPECT_EQ(cmos(0x04), 0x12);  // midnight is 12 AM
}

TEST_F(CmosRtcTest, RamStoredAndReadBack) {
  set_cmos(0x0F, 0x0A);  // shutdown status
  set_cmos(0x40, 0x5A);
  set_cmos(0x7F, 0xA5);
  set_cmos(0x01, 0x30);  // alarm seconds: plain storage
  EXPECT_EQ(cmos(0x0F), 0x0A);
  EXPECT_EQ(cmos(0x40), 0x5A);
  EXPECT_EQ(cmos(0x7F), 0xA5);
  EXPECT_EQ(cmos(0x01), 0x30);
  EXPECT_EQ(cmos(0x41), 0x00);
}

TEST_F(CmosRtcTest, WideAndStrayAccesses) {
  select(0x02);
  std::array<uint8_t, 4> data{};
  data.fill(0xEE);
  rtc_.read(1, data);
  EXPECT_EQ(data, (std::array<uint8_t, 4>{0x45, 0, 0, 0}));
  rtc_.read(0, data);  // the index register is write-only
  EXPECT_EQ(data[0], 0xFF);
  rtc_.read(2, data);
  EXPECT_EQ(data, (std::array<uint8_t, 4>{}));
  const std::array<uint8_t, 2> index = {0x40, 0x09};
  rtc_.write(0, index);  // the first byte selects
  rtc_.write(5, index);  // ignored
  EXPECT_EQ(cmos(0x40), 0x00);
}

}  // namespace devices_cmos_rtc_test
}  // namespace libvmm
