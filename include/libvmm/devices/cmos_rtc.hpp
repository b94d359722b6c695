// The PC's CMOS RAM and MC146818 real-time clock at ports 0x70 (index) and 0x71 (data).
//
// The clock registers read the host's UTC time. Register A never shows an update in progress
// (Linux busy-waits on UIP), B selects 24-hour BCD, D reports valid RAM. Guest writes to the
// clock are ignored (the guest cannot move the host's time); the rest of the RAM is plain storage.
// Interrupts on IRQ 8: update-ended (UF) and alarm (AF, the alarm registers 1, 3 and 5 matching
// the time, a value 0xC0-0xFF matching any) once a second, raised while register B enables
// them and held until register C is read. Linux's RTC core makes its update interrupts
// (hwclock waits for one) from alarms, and its periodic interrupts with a timer of its own:
// periodic interrupts (PIE, PF) are not made.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class EventLoop;

class CmosRtc : public BusDevice {
 public:
  static constexpr uint64_t kBasePort = 0x70;
  static constexpr uint64_t kPortCount = 2;
  static constexpr uint32_t kIrq = 8;
  using Clock = std::function<std::time_t()>;

  // The host's clock, the default.
  static std::time_t host_time() { return std::time(nullptr); }

  // `clock` returns the current time (seconds since the epoch); tests pass a fixed one. `irq`:
  // IRQ 8, or none (no interrupts).
  explicit CmosRtc(Clock clock = host_time, std::shared_ptr<IrqLine> irq = nullptr);

  // Its once-a-second timer on `loop`, armed while the guest enables update or alarm
  // interrupts; without start() the interrupts come only from update().
  void start(EventLoop& loop);
  // The update cycles since the last call (one a second of `clock`): their flags, and the
  // interrupt where register B enables one. The timer's work; tests call it.
  void update();

  std::string name() const override { return "cmos-rtc"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint8_t read_data();
  void write_data(uint8_t value);
  // The clock register `index` for time `now`, in the format register B selects.
  uint8_t clock_register(uint8_t index, std::time_t now) const;
  void update_locked();
  // IRQF: a flag register B enables is set.
  bool interrupting() const;
  // Raises IRQ 8 while interrupting(), lowers it otherwise.
  void update_irq();
  // Arms the timer for the next whole second while B enables UF or AF interrupts; else disarms.
  void arm_timer();

  const Clock clock_;
  const std::shared_ptr<IrqLine> irq_;
  UniqueFd timer_;  // CLOCK_REALTIME, after start()
  std::mutex mutex_;
  uint8_t index_ = 0;
  std::array<uint8_t, 128> ram_{};
  uint8_t flags_ = 0;  // register C's UF and AF, until it is read
  bool irq_raised_ = false;
  std::time_t last_update_ = 0;  // the second of the last update cycle looked at
};

}  // namespace libvmm
