// Where a virtIO network device's frames go on the host: a TAP device, or (in tests) anything
// that moves whole frames. Every frame carries a 12-byte virtio_net_hdr_v1 in front, as a TAP
// with IFF_VNET_HDR and TUNSETVNETHDRSZ 12 expects, so checksum and segmentation offloads pass
// through untouched.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace libvmm {

class EventLoop;

class NetBackend {
 public:
  virtual ~NetBackend() = default;

  // Reads one frame (header included) into `buffer`: its length, 0 when none is waiting, or
  // -errno. Never blocks.
  virtual ssize_t receive(std::span<uint8_t> buffer) = 0;
  // Sends one frame (header included) gathered from `iov`. False if the host dropped it.
  virtual bool send(std::span<const iovec> iov) = 0;
  // Which offloads the host may use in frames it gives us: the guest features the driver
  // accepted (VIRTIO_NET_F_GUEST_CSUM, GUEST_TSO4, GUEST_TSO6).
  virtual void set_offloads(uint64_t guest_features) = 0;

  // Calls `readable` on the loop's thread whenever receive() may have a frame, until paused.
  virtual void start(EventLoop& loop, std::function<void()> readable) = 0;
  // Loop thread only: stop (or restart) calling `readable`. Frames wait in the host meanwhile.
  virtual void pause_receive() = 0;
  virtual void resume_receive() = 0;
  // Loop thread only, while paused: a queue of a multiqueue TAP the driver does not use is
  // detached (the host then steers no frames to it) and attached again when it is used.
  virtual void set_enabled(bool enabled) { static_cast<void>(enabled); }

  // The host side's link: for a TAP, its interface is up (`ip link set NAME up`). A device
  // shows it to the driver (VIRTIO_NET_S_LINK_UP). Backends without a link are always up.
  virtual bool link_up() const { return true; }
  // Calls `changed` on the loop's thread whenever link_up() changes, from now on.
  virtual void watch_link(EventLoop& loop, std::function<void()> changed) {
    static_cast<void>(loop);
    static_cast<void>(changed);
  }

  virtual std::string describe() const = 0;  // for log lines: "tap tap0"
};

}  // namespace libvmm
