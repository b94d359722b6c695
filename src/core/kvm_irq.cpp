#include "libvmm/core/kvm_irq.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include "libvmm/core/error.hpp"

namespace libvmm {

KvmIrqLine::KvmIrqLine(KvmVm& vm, KvmIrqRoute route, uint32_t number)
    : vm_(vm), route_(route), number_(number) {}

KvmIrqLine::~KvmIrqLine() {
  if (irqfd_) {
    try {
      vm_.unregister_irqfd(irqfd_.get(), route_.gsi);
    } catch (const std::exception&) {
      // The VM is going away; nothing useful to do.
    }
  }
}

void KvmIrqLine::set_level(bool asserted) {
  vm_.irq_line(route_.line, asserted);
}

int KvmIrqLine::irqfd() {
  std::call_once(irqfd_once_, [this] {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw_errno("irqfd: eventfd");
    vm_.register_irqfd(fd.get(), route_.gsi);
    irqfd_ = std::move(fd);
  });
  return irqfd_.get();
}

void KvmIrqLine::pulse() {
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated: an interrupt is already pending, which is enough.
  [[maybe_unused]] auto n = ::write(irqfd(), &one, sizeof one);
}

}  // namespace libvmm
