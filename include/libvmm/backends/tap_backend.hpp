// A NetBackend on a Linux TAP device (/dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
// non-blocking and driven by the event loop. The TAP may exist already (created by the user,
// e.g. `ip tuntap add tap0 mode tap user USER`) or is created here when the VMM has
// CAP_NET_ADMIN; a TAP created here disappears when the VMM exits. The event loop must not
// run once the backend is destroyed (its callback refers to it).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "libvmm/backends/link_watch.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class TapBackend final : public NetBackend {
 public:
  static constexpr size_t kVnetHeaderSize = 12;  // struct virtio_net_hdr_v1

  // Attaches to (or creates) TAP `name`. Throws UserError "--net tap=NAME: reason" (no
  // /dev/net/tun or no permission on it, a name too long, not a TAP, cannot be created).
  static std::unique_ptr<TapBackend> open(const std::string& name);
  // `queues` queues of multiqueue TAP `name` (IFF_MULTI_QUEUE), one backend each; with one, as
  // open(). An existing TAP must have been made multiqueue (`ip tuntap add NAME mode tap
  // multi_queue`); the error says so. Throws UserError as open().
  static std::vector<std::unique_ptr<TapBackend>> open_queues(const std::string& name,
                                                              size_t queues);
  // Any descriptor that moves whole frames, with their headers (tests: a SOCK_SEQPACKET pair).
  // Offloads are only set on real TAPs.
  TapBackend(UniqueFd fd, std::string description, bool is_tap = false);

  ssize_t receive(std::span<uint8_t> buffer) override;
  bool send(std::span<const iovec> iov) override;
  void set_offloads(uint64_t guest_features) override;
  void start(EventLoop& loop, std::function<void()> readable) override;
  void pause_receive() override;
  void resume_receive() override;
  void set_enabled(bool enabled) override;  // TUNSETQUEUE; only on a multiqueue TAP's queues
  // The TAP's interface state (LinkWatch), on the first queue's backend of open_queues();
  // always up on the others and without a TAP.
  bool link_up() const override { return !link_ || link_->up(); }
  void watch_link(EventLoop& loop, std::function<void()> changed) override;
  std::string describe() const override { return description_; }

  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string description_;
  bool is_tap_;
  EventLoop* loop_ = nullptr;
  bool paused_ = false;
  bool multiqueue_ = false;
  std::unique_ptr<LinkWatch> link_;
  // Frames the host refused (the interface down, a header its kernel rejects, no memory): the
  // guest's chain goes back, and the reason is said.
  log::RateLimited send_errors_{"transmit errors"};
};

}  // namespace libvmm
