// IrqLine backed by KVM's in-kernel interrupt controller.
#pragma once

#include <mutex>

#include "libvmm/core/irq.hpp"
#include "libvmm/core/kvm.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

// How KVM names one input of the in-kernel interrupt controller, which differs between the two
// ioctls on some architectures: irqfds take a GSI, KVM_IRQ_LINE the architecture's encoding
// (x86: the GSI itself; AArch64: type and INTID). The machine computes it (Machine::kvm_irq).
struct KvmIrqRoute {
  KvmIrqRoute(uint32_t gsi_and_line) : gsi(gsi_and_line), line(gsi_and_line) {}  // implicit
  KvmIrqRoute(uint32_t irqfd_gsi, uint32_t irq_line) : gsi(irqfd_gsi), line(irq_line) {}
  uint32_t gsi;   // KVM_IRQFD
  uint32_t line;  // KVM_IRQ_LINE
};

class KvmIrqLine : public IrqLine {
 public:
  // `route` is what KVM takes for the line; `number` is the controller's interrupt number shown
  // to users.
  KvmIrqLine(KvmVm& vm, KvmIrqRoute route, uint32_t number);
  ~KvmIrqLine() override;

  uint32_t number() const override { return number_; }
  void set_level(bool asserted) override;
  void pulse() override;

  // The eventfd that pulses this line (registered with KVM_IRQFD on first use), for devices
  // whose I/O threads signal the guest directly.
  int irqfd();

 private:
  KvmVm& vm_;
  KvmIrqRoute route_;
  uint32_t number_;
  std::once_flag irqfd_once_;
  UniqueFd irqfd_;
};

}  // namespace libvmm
