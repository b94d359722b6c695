// The PC's CMOS RAM and MC146818 real-time clock at ports 0x70 (index) and 0x71 (data).
//
// The clock registers read the host's UTC time. Register A never shows an update in progress
// (Linux busy-waits on UIP), B selects 24-hour BCD, D reports valid RAM. Guest writes to the
// clock are ignored (the guest cannot move the host's time); the rest of the RAM is plain storage.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "libvmm/core/bus.hpp"

namespace libvmm {

class CmosRtc : public BusDevice {
 public:
  static constexpr uint64_t kBasePort = 0x70;
  static constexpr uint64_t kPortCount = 2;
  using Clock = std::function<std::time_t()>;

  // `clock` returns the current time (seconds since the epoch); tests pass a fixed one.
  explicit CmosRtc(Clock clock = [] { return std::time(nullptr); });

  std::string name() const override { return "cmos-rtc"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint8_t read_data();
  void write_data(uint8_t value);
  // The clock register `index` for the current time, in the format register B selects.
  uint8_t clock_register(uint8_t index) const;

  const Clock clock_;
  std::mutex mutex_;
  uint8_t index_ = 0;
  std::array<uint8_t, 128> ram_{};
};

}  // namespace libvmm
