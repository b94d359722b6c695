// The control queue of a virtio-net device with more than one queue pair (virtIO 1.2 §5.1.6.5),
// shared by the device that moves frames here (VirtioNet) and those whose frames something else
// moves (VhostNet: the host kernel; VhostUserDevice: another process): all serve it in this
// process. Only VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET is offered (VIRTIO_NET_F_MQ); every other command
// is answered VIRTIO_NET_ERR.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "libvmm/core/log.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class EventLoop;
class Virtqueue;
class VirtioTransport;

// What a device gives answer_net_control_queue(): the pairs it has, whether the driver
// negotiated MQ, what to do with a pair count it accepted, and where a refusal goes (a
// rate-limited log line, a counter).
struct NetControlTarget {
  bool mq_negotiated = false;
  size_t max_pairs = 1;
  std::function<void(uint16_t pairs)> set_pairs;
  std::function<void(const std::string& why)> refuse;
};

// Answers each command waiting in `queue` in its last writable byte: VIRTIO_NET_OK for a
// VQ_PAIRS_SET of 1 to max_pairs with MQ negotiated (after set_pairs()), VIRTIO_NET_ERR for a
// malformed chain, another command or a count out of range (after refuse()). Bounded by the
// queue size. True if it returned any chain (the caller then signals the queue).
bool answer_net_control_queue(Virtqueue& queue, const NetControlTarget& target);

// The configuration space both network devices offer (virtIO 1.2 §5.1.4): mac, status (the
// link up while the host's TAP is up: NetBackend::link_up()), max_virtqueue_pairs and mtu.
uint32_t net_config_size();
// Reads `data.size()` bytes of it at `offset`, a range the transport checked against
// net_config_size().
void read_net_config(std::span<const uint8_t, 6> mac, size_t pairs, uint16_t mtu, bool link_up,
                     uint32_t offset, std::span<uint8_t> data);

// What virtio-net's feature bits require of each other (virtIO 1.2 §5.1.3.1): the offloads their
// checksum feature, the control commands (and MQ) the control queue. Every network device's
// VirtioDevice::feature_requirements().
std::span<const FeatureRequirement> net_feature_requirements();

// The control queue's index in a device with `pairs` queue pairs (more than one: MQ offered)
// whose driver accepted `features`: 2 * pairs with VIRTIO_NET_F_MQ, else 2 (the driver sees one
// pair); 0xffff (none) with one pair or without VIRTIO_NET_F_CTRL_VQ.
uint16_t net_control_queue_index(size_t pairs, uint64_t features);

// The control queue of a device whose data rings something else serves (ExternalQueueDevice):
// only the control queue stays in this process. It is served on the event loop, woken by the
// queue's notify eventfd (the KVM ioeventfd) from start() until stop(); a notify that came as a
// register write (no ioeventfd caught it) is answered at once through notify().
// Threads: start(), stop() and notify() run with the transport's lock held (a vCPU's register
// write); the loop thread takes that lock (with_queues) to answer. set_pairs is called with the
// transport's lock held, on either thread.
class NetControlServer {
 public:
  static constexpr uint16_t kNoQueue = 0xffff;

  NetControlServer(std::string name, size_t max_pairs, std::function<void(uint16_t)> set_pairs);
  ~NetControlServer();  // stops watching (on the loop thread, or after it ended)
  NetControlServer(const NetControlServer&) = delete;
  NetControlServer& operator=(const NetControlServer&) = delete;

  // Before the guest runs: the loop that watches the notify eventfd.
  void set_loop(EventLoop& loop);
  // Serves queue `index`, whose notify eventfd is `kick`, for a driver that did (`mq`) or did not
  // negotiate VIRTIO_NET_F_MQ.
  void start(VirtioTransport& transport, uint16_t index, int kick, bool mq);
  void stop();
  // The index of the control queue while it is served, else kNoQueue.
  uint16_t served() const;
  // True if `index` is the served control queue: its commands were answered now.
  bool notify(uint16_t index, Virtqueue& queue);

 private:
  void watch(int kick);  // loop thread; -1 stops watching
  void notified();       // loop thread
  void serve(uint16_t index, Virtqueue& queue);
  void guest_error(const std::string& message);

  const std::string name_;
  const size_t max_pairs_;
  const std::function<void(uint16_t)> set_pairs_;

  mutable std::mutex mutex_;  // what follows, between the vCPU threads and the loop thread
  EventLoop* loop_ = nullptr;
  VirtioTransport* transport_ = nullptr;
  uint16_t index_ = kNoQueue;
  bool mq_ = false;

  int watched_ = -1;  // loop thread: the notify eventfd it watches
  log::RateLimited guest_errors_{"guest errors"};
};

}  // namespace libvmm
