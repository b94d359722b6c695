#include "libvmm/devices/cmos_rtc.hpp"

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"

namespace libvmm {
namespace {

constexpr uint64_t kIndexPort = 0;
constexpr uint64_t kDataPort = 1;
constexpr uint8_t kIndexMask = 0x7F;  // bit 7 of the index write masks NMIs: not modelled

constexpr uint8_t kSeconds = 0x00;
constexpr uint8_t kSecondsAlarm = 0x01;
constexpr uint8_t kMinutes = 0x02;
constexpr uint8_t kMinutesAlarm = 0x03;
constexpr uint8_t kHours = 0x04;
constexpr uint8_t kHoursAlarm = 0x05;
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
constexpr uint8_t kBUpdateInterrupt = 0x10;  // UIE
constexpr uint8_t kBAlarmInterrupt = 0x20;   // AIE
constexpr uint8_t kCUpdateEnded = 0x10;      // UF (under UIE in register B)
constexpr uint8_t kCAlarm = 0x20;            // AF (under AIE)
constexpr uint8_t kCInterrupt = 0x80;        // IRQF: a flag B enables is set
constexpr uint8_t kAlarmAny = 0xC0;          // an alarm register 0xC0-0xFF matches any value
// After a long gap (a host suspended) only the last day's seconds are looked at for alarms.
constexpr std::time_t kMostSecondsLookedAt = 24 * 60 * 60;
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

CmosRtc::CmosRtc(Clock clock, std::shared_ptr<IrqLine> irq)
    : clock_(std::move(clock)), irq_(std::move(irq)) {
  ram_[kRegisterA] = kADefault;
  ram_[kRegisterB] = kB24Hour;
  ram_[kRegisterC] = 0;
  ram_[kRegisterD] = kDValidRam;
  last_update_ = clock_();
}

void CmosRtc::start(EventLoop& loop) {
  if (!irq_) return;  // no interrupts to time
  UniqueFd timer(::timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer) throw_errno("timerfd_create for the CMOS RTC");
  const int fd = timer.get();
  loop.add(fd, EPOLLIN, [this, fd](uint32_t) {
    uint64_t expirations = 0;
    if (::read(fd, &expirations, sizeof expirations) == sizeof expirations) update();
  });
  std::lock_guard lock(mutex_);
  timer_ = std::move(timer);
  arm_timer();
}

void CmosRtc::update() {
  std::lock_guard lock(mutex_);
  update_locked();
}

void CmosRtc::update_locked() {
  const std::time_t now = clock_();
  if (now < last_update_) last_update_ = now;  // the host's clock was set back
  const std::time_t first = std::max(last_update_ + 1, now - kMostSecondsLookedAt + 1);
  for (std::time_t second = first; second <= now; ++second) {
    flags_ |= kCUpdateEnded;
    const auto matches = [&](uint8_t alarm, uint8_t field) {
      const uint8_t value = ram_[alarm];
      return (value & kAlarmAny) == kAlarmAny || value == clock_register(field, second);
    };
    if (matches(kSecondsAlarm, kSeconds) && matches(kMinutesAlarm, kMinutes) &&
        matches(kHoursAlarm, kHours)) {
      flags_ |= kCAlarm;
    }
  }
  last_update_ = now;
  update_irq();
}

bool CmosRtc::interrupting() const {
  return (flags_ & ram_[kRegisterB] & (kCUpdateEnded | kCAlarm)) != 0;
}

void CmosRtc::update_irq() {
  const bool raise = interrupting();
  if (!irq_ || raise == irq_raised_) return;
  irq_raised_ = raise;
  irq_->set_level(raise);
}

void CmosRtc::arm_timer() {
  if (!timer_) return;
  itimerspec when{};
  if ((ram_[kRegisterB] & (kBUpdateInterrupt | kBAlarmInterrupt)) != 0) {
    // Every whole second of the host's clock, when the guest's clock registers change.
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    when.it_value.tv_sec = now.tv_sec + 1;
    when.it_interval.tv_sec = 1;
  }
  // Fails only for a bad descriptor or values, neither possible here.
  static_cast<void>(::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &when, nullptr));
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
  if (is_clock_register(index_)) return clock_register(index_, clock_());
  switch (index_) {
    case kRegisterA:
      return ram_[kRegisterA] & static_cast<uint8_t>(~kAUpdateInProgress);
    case kRegisterC: {
      // The flags of the update cycles so far (also without the timer: a guest polling UF),
      // cleared by the read, which lowers the interrupt.
      update_locked();
      const uint8_t value = static_cast<uint8_t>(flags_ | (interrupting() ? kCInterrupt : 0));
      flags_ = 0;
      update_irq();
      return value;
    }
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
    case kRegisterB: {
      const uint8_t enables = kBUpdateInterrupt | kBAlarmInterrupt;
      const bool enables_changed = ((ram_[kRegisterB] ^ value) & enables) != 0;
      ram_[kRegisterB] = value;
      update_irq();  // a flag already set raises the line once enabled
      if (enables_changed) arm_timer();
      break;
    }
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

uint8_t CmosRtc::clock_register(uint8_t index, std::time_t now) const {
  const std::tm tm = utc_fields(now);
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
