// The ioeventfds of a virtio-pci function's queue notifications (one per queue, 2 bytes at the
// queue's notify address in BAR 0, no data match), kept where BAR 0 decodes: moved with it, and
// withdrawn while it decodes nowhere (sizing, Memory Space off, a base outside the windows), so
// that those addresses are free for another BAR. KVM matches an ioeventfd before any device:
// left in place, it would take the notifications of whatever BAR the guest puts there next.
// KVM is behind two callbacks, so the bookkeeping is tested without it. Internal to the library.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace libvmm {

class VirtioPciTransport;

class PciNotifyEventfds {
 public:
  // Registers `fd` at `addr` (throws when KVM refuses); withdraws it.
  using Register = std::function<void(int fd, uint64_t addr)>;
  using Unregister = std::function<void(int fd, uint64_t addr)>;

  // `bar0`: where BAR 0 decodes now; nullopt while it decodes nowhere.
  PciNotifyEventfds(std::optional<uint64_t> bar0, Register add, Unregister remove);
  // The notify eventfds of `transport` (added to the bridge, before the guest runs): at BAR 0
  // where it decodes now (nowhere until the guest turns Memory Space on), then following it
  // through the transport's register-BAR listener.
  static std::shared_ptr<PciNotifyEventfds> follow(VirtioPciTransport& transport, Register add,
                                                   Unregister remove);

  // Queue `fds().size()`'s eventfd, registered where BAR 0 is now (throws as `add` does).
  void add_queue(int fd);
  // BAR 0 decodes at `now`, or nowhere. Where KVM refuses a new address (another ioeventfd is
  // there), that queue's notifications take the slow path (an MMIO exit) with a warning.
  void bar_moved(std::optional<uint64_t> now);

  const std::vector<int>& fds() const { return fds_; }
  // Where the eventfds are registered (nothing while BAR 0 decodes nowhere).
  std::optional<uint64_t> base() const;

 private:
  Register add_;
  Unregister remove_;
  mutable std::mutex mutex_;
  std::optional<uint64_t> base_;
  std::vector<int> fds_;
  std::vector<bool> registered_;  // per queue: KVM took it at base_
};

}  // namespace libvmm
