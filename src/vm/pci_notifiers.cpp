#include "pci_notifiers.hpp"

#include <exception>

#include "libvmm/core/log.hpp"
#include "libvmm/virtio/pci_transport.hpp"

namespace libvmm {

PciNotifyEventfds::PciNotifyEventfds(std::optional<uint64_t> bar0, Register add, Unregister remove)
    : add_(std::move(add)), remove_(std::move(remove)), base_(bar0) {}

std::shared_ptr<PciNotifyEventfds> PciNotifyEventfds::follow(VirtioPciTransport& transport,
                                                             Register add, Unregister remove) {
  // The bridge placed BAR 0 inside its window; it decodes once Memory Space is on. Registered
  // before that, the eventfds would take the notifications of another BAR the guest puts there.
  const std::optional<pci::BarMapping> now = transport.mappings()[VirtioPciTransport::kRegisterBar];
  auto notifiers = std::make_shared<PciNotifyEventfds>(
      now ? std::optional(now->address) : std::nullopt, std::move(add), std::move(remove));
  transport.set_register_bar_listener(
      [notifiers](std::optional<uint64_t>, std::optional<uint64_t> where) {
        notifiers->bar_moved(where);
      });
  return notifiers;
}

void PciNotifyEventfds::add_queue(int fd) {
  std::lock_guard lock(mutex_);
  const auto index = static_cast<uint16_t>(fds_.size());
  if (base_) add_(fd, VirtioPciTransport::notify_address(*base_, index));
  fds_.push_back(fd);
  registered_.push_back(base_.has_value());
}

void PciNotifyEventfds::bar_moved(std::optional<uint64_t> now) {
  std::lock_guard lock(mutex_);
  if (now == base_) return;
  for (size_t q = 0; q < fds_.size(); ++q) {
    const auto index = static_cast<uint16_t>(q);
    if (registered_[q]) remove_(fds_[q], VirtioPciTransport::notify_address(*base_, index));
    registered_[q] = false;
    if (!now) continue;
    try {
      add_(fds_[q], VirtioPciTransport::notify_address(*now, index));
      registered_[q] = true;
    } catch (const std::exception& e) {
      log::warn("virtio-pci: queue {} notifications take the slow path: {}", q, e.what());
    }
  }
  base_ = now;
}

std::optional<uint64_t> PciNotifyEventfds::base() const {
  std::lock_guard lock(mutex_);
  return base_;
}

}  // namespace libvmm
