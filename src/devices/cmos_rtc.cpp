#include "libvmm/devices/cmos_rtc.hpp"

#include <algorithm>
#include <chrono>

namespace libvmm {
namespace {

constexpr uint64_t kIndexPort = 0;
constexpr uint64_t kDataPort = 1;
constexpr uint8_t kIndexMask = 0x7F;  // bit 7 of the index write masks NMIs: not modelled

constexpr uint8_t kSeconds = 0x00;
constexpr uint8_t kMinutes = 0x02;
constexpr uint8_t kHours = 0x04;
constexpr uint8_t kDayOfWeek = 0x06;
constexpr uint8_t kDayOfMonth = 0x07;
constexpr uint8_t kMonth = 0x08;
constexpr uint8_t kYear = 0x09;
constexpr uint8_t kRegisterA = 0x0A;
constexpr uint8_t kRegisterB = 0x0B;
constexpr uint8_t kRegisterC = 0x0C;
constexpr uint8_t kRegisterD = 0x0D;
constexpr uint8_t kCentury = 0x32;

constexpr uint8_t kAUpdateInProgress = 0x80;
constexpr uint8_t kADefault = 0x26;  // 32.768 kHz time base, 1024 Hz periodic rate
constexpr uint8_t kB24Hour = 0x02;
constexpr uint8_t kBBinary = 0x04;
constexpr uint8_t kDValidRam = 0x80;
constexpr uint8_t kHourPm = 0x80;

bool is_clock_register(uint8_t index) {
  switch (index) {
    case kSeconds:
    case kMinutes:
    case kHours:
    case kDayOfWeek:
    case kDayOfMonth:
    case kMonth:
    case kYear:
    case kCentury:
      return true;
    default:
      return false;
  }
}

uint8_t to_bcd(int value) {
  return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

}  // namespace

CmosRtc::CmosRtc(Clock clock) : clock_(std::move(clock)) {
  ram_[kRegisterA] = kADefault;
  ram_[kRegisterB] = kB24Hour;
  ram_[kRegisterC] = 0;
  ram_[kRegisterD] = kDValidRam;
}

void CmosRtc::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (data.empty()) return;
  if (offset == kDataPort) {
    std::lock_guard lock(mutex_);
    data[0] = read_data();
  } else if (offset == kIndexPort) {
    data[0] = 0xFF;  // the index register is write-only
  }
}

void CmosRtc::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  std::lock_guard lock(mutex_);
  if (offset == kIndexPort) {
    index_ = data[0] & kIndexMask;
  } else if (offset == kDataPort) {
    write_data(data[0]);
  }
}

uint8_t CmosRtc::read_data() {
  if (is_clock_register(index_)) return clock_register(index_);
  switch (index_) {
    case kRegisterA:
      return ram_[kRegisterA] & static_cast<uint8_t>(~kAUpdateInProgress);
    case kRegisterC:
      return 0;  // no interrupt flags: the RTC raises no interrupts
    case kRegisterD:
      return kDValidRam;
    default:
      return ram_[index_];
  }
}

void CmosRtc::write_data(uint8_t value) {
  if (is_clock_register(index_)) return;  // the time follows the host
  switch (index_) {
    case kRegisterA:
      ram_[kRegisterA] = value & static_cast<uint8_t>(~kAUpdateInProgress);
      break;
    case kRegisterC:
    case kRegisterD:
      break;  // read-only
    default:
      ram_[index_] = value;
      break;
  }
}

namespace {

// UTC calendar fields of `now`, by arithmetic alone: glibc's gmtime_r() loads the time zone file
// on its first call, a system call the vCPU thread's seccomp filter refuses (and need not make).
std::tm utc_fields(std::time_t now) {
  using namespace std::chrono;
  const sys_seconds t{seconds{now}};
  const sys_days day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  std::tm tm{};
  tm.tm_sec = static_cast<int>(hms.seconds().count());
  tm.tm_min = static_cast<int>(hms.minutes().count());
  tm.tm_hour = static_cast<int>(hms.hours().count());
  tm.tm_mday = static_cast<int>(static_cast<unsigned>(ymd.day()));
  tm.tm_mon = static_cast<int>(static_cast<unsigned>(ymd.month())) - 1;
  tm.tm_year = static_cast<int>(ymd.year()) - 1900;
  tm.tm_wday = static_cast<int>(weekday{day}.c_encoding());
  return tm;
}

}  // namespace

uint8_t CmosRtc::clock_register(uint8_t index) const {
  const std::tm tm = utc_fields(clock_());
  const uint8_t b = ram_[kRegisterB];
  auto encode = [binary = (b & kBBinary) != 0](int value) {
    return binary ? static_cast<uint8_t>(value) : to_bcd(value);
  };
  switch (index) {
    case kSeconds:
      return encode(std::min(tm.tm_sec, 59));  // a leap second shows as :59
    case kMinutes:
      return encode(tm.tm_min);
    case kHours:
      if ((b & kB24Hour) != 0) return encode(tm.tm_hour);
      return static_cast<uint8_t>(encode(tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12) |
                                  (tm.tm_hour >= 12 ? kHourPm : 0));
    case kDayOfWeek:
      return encode(tm.tm_wday + 1);  // 1 = Sunday
    case kDayOfMonth:
      return encode(tm.tm_mday);
    case kMonth:
      return encode(tm.tm_mon + 1);
    case kYear:
      return encode((tm.tm_year + 1900) % 100);
    case kCentury:
      return encode((tm.tm_year + 1900) / 100);
    default:
      return 0;
  }
}

}  // namespace libvmm
