// IrqLine backed by KVM's in-kernel interrupt controller.
#pragma once

#include <mutex>

#include "libvmm/core/irq.hpp"
#include "libvmm/core/kvm.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class KvmIrqLine : public IrqLine {
 public:
  // `kvm_irq` is what KVM_IRQ_LINE/irqfd take: the GSI on x86 (on AArch64 the machine encodes
  // type and number); `number` is the controller's interrupt number shown to users.
  KvmIrqLine(KvmVm& vm, uint32_t kvm_irq, uint32_t number);
  ~KvmIrqLine() override;

  uint32_t number() const override { return number_; }
  void set_level(bool asserted) override;
  void pulse() override;

  // The eventfd that pulses this line (registered with KVM_IRQFD on first use), for devices
  // whose I/O threads signal the guest directly.
  int irqfd();

 private:
  KvmVm& vm_;
  uint32_t kvm_irq_;
  uint32_t number_;
  std::once_flag irqfd_once_;
  UniqueFd irqfd_;
};

}  // namespace libvmm
