// The back-end side of vhost-user (QEMU's docs/interop/vhost-user.rst): one of libvmm's own
// virtIO devices (VirtioBlock, ...) served to a front-end in another process, a VMM such as
// `vmm` or QEMU. The front-end keeps the device's registers; this side gets the guest RAM's
// file descriptors (SET_MEM_TABLE), each queue's layout in the front-end's addresses, and a
// kick and a call eventfd per queue, and runs the device's queues exactly as the in-process
// transports do: the same VirtioDevice and Virtqueue code over a GuestMemory built from the
// mapped descriptors, with every guest address bounds-checked.
//
// The front-end is hostile: every message goes through vhost::decode_request() (sizes, counts,
// indices, descriptors, overlapping regions), then the checks of its meaning here (features
// offered, rings inside the memory table, descriptors the kernel can map and that are large
// enough for the regions). A front-end that shrinks a region's file afterwards would make the
// next touch of it a SIGBUS: the regions are guarded (core/sigbus_guard.hpp), the fault turns
// them into zero pages, and the connection is closed like any other misbehaviour. The first bad
// message is one log line naming the front-end and what was wrong, and the connection is closed
// (the device is reset, the descriptors released).
//
// Threads: messages and kicks are handled on `loop` (the caller's event loop thread). This
// object is the device's VirtioTransport; its lock serializes the loop thread and the device's
// own I/O thread (VirtioBlock's blk-io) exactly as virtio_device.hpp describes, and before it
// changes what that thread depends on (a ring stopped, the memory table replaced, a reset) it
// pauses the device's I/O (pause_io()) without the lock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "libvmm/backends/vhost_user.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/unique_fd.hpp"
#include "libvmm/virtio/virtio_device.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {

class EventLoop;

class VhostUserBackend final : private VirtioTransport {
 public:
  // Called on the loop thread once the connection is over (`why`: the front-end hung up, or
  // what it did wrong). The object may be destroyed from a task posted to the loop then, not
  // from inside the call.
  using OnClose = std::function<void(const std::string& why)>;

  // Serves `device` (not active: never activated, or reset) to the front-end on `connected`.
  // `peer` names it in log lines ("front-end on /run/blk.sock"). Watches the socket on `loop`,
  // which must outlive this object; call from the loop's thread or before it runs.
  // `shrink_notice`: an eventfd (non-blocking) the caller keeps, through which a SIGBUS in the
  // shared memory is reported (a sandboxed process makes it before its filter forbids
  // eventfd2); -1: this object makes its own.
  VhostUserBackend(VirtioDevice& device, EventLoop& loop, UniqueFd connected, std::string peer,
                   OnClose on_close = {}, int shrink_notice = -1);
  // Resets the device and releases the loop's watches (on the loop thread, or after it ended).
  ~VhostUserBackend();
  VhostUserBackend(const VhostUserBackend&) = delete;
  VhostUserBackend& operator=(const VhostUserBackend&) = delete;

  bool closed() const { return closed_; }
  // Whether the front-end sent any message (a connection that closes without one is a probe).
  bool heard_from() const { return heard_from_; }
  // The virtIO features offered to the front-end: the device's, the ring features the queues
  // implement (VERSION_1, INDIRECT_DESC, EVENT_IDX) and VHOST_USER_F_PROTOCOL_FEATURES.
  uint64_t offered_features() const { return offered_; }
  // The protocol features offered: REPLY_ACK, CONFIG, MQ, RESET_DEVICE and BACKEND_REQ (a
  // channel for the back-end's own requests, on which it sends CONFIG_CHANGE_MSG).
  static uint64_t offered_protocol_features();
  // On the loop's thread: tells the front-end that the device's config space changed (a disk
  // grown: VirtioDevice::rescan()), with a CONFIG_CHANGE_MSG on the channel it gave
  // (SET_BACKEND_REQ_FD). Without that channel it is only logged. One that comes before the
  // device runs is sent again when its first ring starts.
  void notify_config_change();
  // A message that does not arrive whole within this, or a reply the front-end does not read
  // within it, is a protocol error.
  static constexpr int kTimeoutMs = 5000;

 private:
  struct Ring {
    uint16_t num = 0;
    bool has_num = false;
    vhost::VringAddr addr;  // the front-end's addresses
    bool has_addr = false;
    uint16_t base = 0;
    UniqueFd kick;  // set: the ring is started
    UniqueFd call;
    UniqueFd err;
    bool enabled = false;  // SET_VRING_ENABLE (or started without protocol features)
    bool running = false;  // being served: started, enabled, rings inside the memory table
    bool error_reported = false;
  };

  // VirtioTransport, for the device.
  void signal_used(uint16_t index) override;
  void signal_config_change() override;
  bool with_queues(const std::function<void(std::span<Virtqueue>)>& fn) override;
  void device_failed(const std::string& why) override;
  bool renotify(uint16_t index) override;

  void on_readable();
  void handle(const vhost::Message& message);
  void reply(vhost::Message message);
  void set_mem_table(const vhost::DecodedRequest& request, const vhost::Message& message);
  void set_features(uint64_t features);
  void set_vring_fd(const vhost::DecodedRequest& request, const vhost::Message& message);
  // Starts ring `index` when it is started, enabled and has what it needs; stops it otherwise.
  void update_ring(uint32_t index);
  void start_ring(uint32_t index);  // lock held
  void stop_ring(uint32_t index);   // without the lock: pauses the device's I/O
  void stop_all();
  void on_kick(uint32_t index);
  void serve_ring(uint32_t index);  // the device's queue_notify, if the ring still runs
  // Lock held: a warning (and the err eventfd) for each queue that broke since, once per start.
  void report_broken_locked();
  void close(const std::string& why);
  [[noreturn]] void refuse(const std::string& why);

  VirtioDevice& device_;
  EventLoop& loop_;
  vhost::Channel channel_;
  std::unique_ptr<vhost::Channel> requests_;  // SET_BACKEND_REQ_FD's: ours to send on
  bool requests_lost_ = false;                // it broke (said once)
  bool resend_at_start_ = false;              // a change came before the device ran
  const std::string peer_;
  OnClose on_close_;
  const uint64_t offered_;

  GuestMemory memory_;  // replaced in place by SET_MEM_TABLE: the queues keep its address
  vhost::RegionTable regions_;
  bool has_memory_ = false;
  std::vector<Virtqueue> queues_;
  std::vector<Ring> rings_;
  uint64_t features_ = 0;  // acked by SET_FEATURES
  bool has_features_ = false;
  uint64_t protocol_ = 0;  // acked by SET_PROTOCOL_FEATURES

  // Written by the SIGBUS handler when the front-end shrank a region's file (sigbus_guard.hpp):
  // the caller's eventfd, or own_shrunk_.
  UniqueFd own_shrunk_;
  int shrunk_ = -1;

  std::mutex mutex_;     // the transport lock: queues_, rings' call fds, active_
  bool active_ = false;  // the device was activated (a ring runs) and not reset since
  bool closed_ = false;
  bool heard_from_ = false;
  // Tasks that renotify() posts to the loop hold it weakly: they do nothing once this is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace libvmm
