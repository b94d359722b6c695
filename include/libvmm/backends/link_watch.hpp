// Whether a host network interface is up, followed as it changes: rtnetlink's link messages
// (RTMGRP_LINK) read on the event loop. For a VM on a TAP, the host's `ip link set tap0 down`
// is its cable pulled: the device tells the driver (VIRTIO_NET_S_LINK_UP), as a NIC would.
// Usable alone; the TAP backend keeps one for its interface.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class EventLoop;

class LinkWatch {
 public:
  // Subscribes, then reads the interface's state (so no change falls between the two). Throws
  // SystemError if there is no such interface or no rtnetlink socket (a sandbox without one).
  explicit LinkWatch(std::string interface);
  // Destroy it only after the event loop stopped running (its callback refers to it).
  ~LinkWatch() = default;
  LinkWatch(const LinkWatch&) = delete;
  LinkWatch& operator=(const LinkWatch&) = delete;

  const std::string& interface() const { return interface_; }
  // IFF_UP: administratively up. Any thread.
  bool up() const { return up_.load(); }
  // Calls `changed` on the loop's thread whenever up() changes, from now on.
  void start(EventLoop& loop, std::function<void()> changed);

 private:
  void read_messages();
  void ask_again();  // after an overrun: the kernel's answer comes as a link message too

  std::string interface_;
  int index_ = 0;
  UniqueFd socket_;  // NETLINK_ROUTE, non-blocking
  std::atomic<bool> up_{false};
  std::function<void()> changed_;
};

// The state of interface `index` after the link messages in `messages` (a datagram of
// rtnetlink messages): up (IFF_UP) or down for RTM_NEWLINK, down for RTM_DELLINK (gone); nullopt
// if none is about it. A truncated or malformed message ends the walk.
std::optional<bool> link_state_in(std::span<const uint8_t> messages, int index);

}  // namespace libvmm
