#include "pci_notifiers.hpp"

#include <exception>

#include "libvmm/core/log.hpp"
#include "libvmm/virtio/pci_transport.hpp"

namespace libvmm {

PciNotifyEventfds::PciNotifyEventfds(uint64_t bar0, Register add, Unregister remove)
    : add_(std::move(add)), remove_(std::move(remove)), base_(bar0) {}

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
