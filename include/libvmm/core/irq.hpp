// An interrupt line into the guest's interrupt controller, as a device sees it.
#pragma once

#include <cstdint>

namespace libvmm {

class IrqLine {
 public:
  virtual ~IrqLine() = default;
  // The interrupt number the controller uses (x86: GSI; AArch64: INTID, SPIs from 32).
  virtual uint32_t number() const = 0;
  // Level-triggered devices (UART) drive the line.
  virtual void set_level(bool asserted) = 0;
  // Edge-triggered devices (virtIO MMIO) send one interrupt; cheap and thread-safe
  // (the machine implements it with a KVM irqfd).
  virtual void pulse() = 0;
};

}  // namespace libvmm
