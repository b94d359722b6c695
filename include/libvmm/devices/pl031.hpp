// The ARM PrimeCell PL031 real-time clock (as on QEMU's virt board), so that an AArch64 guest's
// wall clock is right at boot (Linux's rtc-pl031 driver; systemd and TLS then see the date).
//
// RTCDR counts the host's seconds since the epoch plus an offset the guest sets through RTCLR
// (its own clock, per VM: the guest cannot move the host's time); RTCLR reads back the value
// last loaded (0 before any). RTCCR reads as started. The match register is stored and read
// back, but there is no alarm interrupt: the device tree gives the device none, so Linux
// offers no alarm (RTCRIS/RTCMIS read 0). The PrimeCell ID
// registers identify a PL031 (0x00041031, 0xB105F00D) for the AMBA bus. Other offsets read 0
// and ignore writes; accesses are 32-bit (narrower ones are rounded to the register).
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "libvmm/core/bus.hpp"

namespace libvmm {

class Pl031 : public BusDevice {
 public:
  static constexpr uint64_t kWindowSize = 0x1000;
  using Clock = std::function<std::time_t()>;

  explicit Pl031(Clock clock = [] { return std::time(nullptr); });

  std::string name() const override { return "pl031"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint32_t read_register(uint64_t offset);
  void write_register(uint64_t offset, uint32_t value);

  const Clock clock_;
  std::mutex mutex_;
  int64_t offset_ = 0;  // guest time - host time, seconds
  uint32_t match_ = 0;
  uint32_t load_ = 0;  // RTCLR reads back what was last written
  bool interrupt_mask_ = false;
};

}  // namespace libvmm
