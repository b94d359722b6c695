// The ARM PrimeCell PL061 GPIO controller (as on QEMU's virt board), here for one purpose: the
// power key of an AArch64 guest. The host drives input lines (set_input); Linux's gpio-pl061
// driver and a `gpio-keys` node in the device tree turn a line's edge into KEY_POWER, which
// systemd-logind answers with a clean power-off.
//
// Registers (PL061 TRM, DDI 0190): GPIODATA is read and written through the address mask of
// offsets 0x000-0x3FC (bits [9:2] of the offset select the bits); GPIODIR, GPIOIS (level/edge),
// GPIOIBE (both edges), GPIOIEV (rising/high), GPIOIE (mask), GPIORIS, GPIOMIS, GPIOIC (clear
// edges), GPIOAFSEL are 8-bit registers. A line the guest set as output reads what it wrote;
// an input reads the level the host set. The interrupt output is the OR of GPIOMIS, a level.
// The PrimeCell ID registers identify a PL061 (0x00041061, 0xB105F00D). Other offsets read 0
// and ignore writes; accesses wider than 4 bytes read 0.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/irq.hpp"

namespace libvmm {

class Pl061 : public BusDevice {
 public:
  static constexpr uint64_t kWindowSize = 0x1000;
  static constexpr unsigned kLines = 8;

  explicit Pl061(std::shared_ptr<IrqLine> irq);

  std::string name() const override { return "pl061"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // The host drives input line `line` (< kLines) to `high`; an edge or level the guest enabled
  // raises the interrupt. Thread-safe.
  void set_input(unsigned line, bool high);
  // Whether the guest enabled the interrupt of line `line` (a driver listens). Thread-safe.
  bool interrupt_enabled(unsigned line);
  // Whether the guest has read input line `line` through GPIODATA since the host last set it.
  // A key must be held until then: gpio-keys reads the level after its debounce delay, so a
  // press released before that read is lost (a slow guest took longer than a short press).
  // Thread-safe.
  bool input_seen(unsigned line);

 private:
  uint32_t read_register(uint64_t offset);
  void write_register(uint64_t offset, uint32_t value);
  void update_levels(uint8_t old_levels);  // latches edges and levels into GPIORIS
  void update_irq();

  const std::shared_ptr<IrqLine> irq_;
  std::mutex mutex_;
  uint8_t inputs_ = 0;  // what the host drives
  uint8_t data_ = 0;    // what the guest wrote (output lines)
  uint8_t dir_ = 0;     // 1: output
  uint8_t is_ = 0;      // 1: level-sensitive
  uint8_t ibe_ = 0;     // 1: both edges
  uint8_t iev_ = 0;     // 1: rising edge / high level
  uint8_t ie_ = 0;      // 1: interrupt enabled
  uint8_t ris_ = 0;     // raw interrupt status
  uint8_t afsel_ = 0;
  uint8_t seen_ = 0;  // inputs the guest read since the host last set them
  bool irq_level_ = false;
};

}  // namespace libvmm
