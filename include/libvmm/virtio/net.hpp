// The virtIO network device (virtIO 1.2 §5.1): one receive and one transmit queue, a MAC and
// link status in config space, a configurable MTU, checksum and TSO offloads passed through to
// the host (NetBackend, usually a TAP) in the 12-byte virtio_net_hdr_v1 every frame carries,
// and mergeable receive buffers. Given on the command line as
// --net tap=NAME[,mac=52:54:00:12:34:56][,mtu=N][,num_queues=N].
//
// Multiqueue (VIRTIO_NET_F_MQ, with num_queues=N > 1): N receive/transmit queue pairs (queues
// 2k and 2k+1) and a control queue (2N) on which the driver says how many pairs it uses
// (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; one until it does). Each pair has its own backend (one
// queue of a multiqueue TAP): the host spreads incoming flows over the backends of the pairs in
// use, and the device detaches the others (NetBackend::set_enabled) so no frame waits on a
// queue the driver does not read. The pairs still share the transport's lock and the event
// loop: multiqueue spares the guest's vCPUs contention on one ring, not host CPU.
//
// Receive: frames are read from the backend one at a time into a host buffer and copied into
// the guest's receive buffers. When the guest has none left, the frame waits (one frame, never
// a queue) and the backend is paused until the driver adds buffers and notifies: the host keeps
// the rest. Transmit: every available chain is sent straight from guest memory (the validated
// header is sent from a copy), then the used ring is signalled once per batch.
//
// Transmit thread (--net ...,iothread=on; NetThreading): the transmit queues are served by the
// device's own thread, woken straight by each transmit queue's notify eventfd
// (watch_queue_notify()), instead of inside the notification on the event loop or a vCPU.
// Once the rings are empty it keeps looking for up to an adaptive budget (poll_us=N, default
// 32 µs; core/adaptive_poll.hpp) before it turns notifications back on, so frames the guest
// queues meanwhile cost no notification (no VM exit). It sends under the transport's lock, as
// the notification does, a bounded batch per ring per pass, and pauses around a reset
// (pause_io()). Receive stays on the event loop.
//
// The guest is untrusted: malformed frames are dropped and counted (NetCounters), with a
// rate-limited log line, and a broken chain breaks only its queue (the transport reports it).
//
// Threads and locking (see virtio_device.hpp): queue_notify() runs under the transport's lock;
// so does every pass of the transmit thread (inside VirtioTransport::with_queues());
// backend_readable() runs on the event loop thread and reaches the queues through
// VirtioTransport::with_queues(). All receive state is only touched under that lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/core/adaptive_poll.hpp"
#include "libvmm/core/io_thread.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/net_control.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class EventLoop;
class NetBackend;

using MacAddress = std::array<uint8_t, 6>;

// What one --net flag asks for.
struct NetConfig {
  std::string tap;                // host TAP device name
  std::optional<MacAddress> mac;  // default: default_mac(VM name, index)
  uint16_t mtu = 1500;
  uint16_t num_queues = 1;     // queue pairs (and TAP queues); more than one: VIRTIO_NET_F_MQ
  bool iothread = false;       // the transmit queues on the device's own thread (iothread=on)
  uint32_t poll_us = 32;       // that thread's polling budget at most (poll_us=N; 0: no polling)
  bool vhost = false;          // the data path in the host kernel (vhost=on; VhostNet)
  uint32_t vhost_poll_us = 0;  // vhost=on: the kernel worker's polling (poll_us=N; 0: none)
};

// How the transmit queues are served: inside each notification (the default), or by the
// device's own thread, which may poll its emptied rings.
struct NetThreading {
  bool tx_thread = false;
  std::string name = "net-tx";
  IoThread::StartHook on_thread_start;     // runs first on the thread (IoThread)
  uint32_t poll_max_us = 0;                // adaptive polling of the emptied rings (0: none)
  AdaptivePoll::Now poll_clock = nullptr;  // that polling's clock (tests; default steady_clock)
};

// Parses "tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,mtu=N][,num_queues=N][,iothread=on|off][,poll_us=N]"
// (the --net flag, through the device registry's virtio_net kind). Throws UserError naming
// --net: unknown options, a malformed, multicast or all-zero MAC, an MTU outside 68..65535, a
// TAP name longer than 15 characters, num_queues outside 1..VirtioNet::kMaxQueuePairs, poll_us
// over VirtioNet::kMaxPollUs.
NetConfig parse_net_spec(std::string_view spec);
// num_queues=N: a number of queue pairs from 1 to VirtioNet::kMaxQueuePairs; nullopt otherwise.
std::optional<uint16_t> parse_queue_pairs(std::string_view text);
// "52:54:00:12:34:56" (either case); nullopt if malformed.
std::optional<MacAddress> parse_mac(std::string_view text);
// A stable, locally administered unicast MAC for interface `index` of VM `vm_name`.
MacAddress default_mac(std::string_view vm_name, size_t index);
std::string format_mac(const MacAddress& mac);

// What the device dropped or worked around, per cause. Snapshots of running counters.
struct NetCounters {
  uint64_t rx_frames = 0;
  uint64_t tx_frames = 0;
  uint64_t rx_bad_chain = 0;   // receive chain with readable parts or no room: returned empty
  uint64_t rx_too_big = 0;     // frame larger than the buffers the driver gives: dropped
  uint64_t rx_not_ready = 0;   // frame arrived while no driver runs the device: dropped
  uint64_t rx_host_error = 0;  // the backend failed a read, or gave a runt frame
  // A frame the driver did not agree to take (a segmentation type it did not negotiate, over
  // the MTU it was given): dropped.
  uint64_t rx_not_agreed = 0;
  uint64_t tx_bad_chain = 0;     // transmit chain with device-writable parts: dropped
  uint64_t tx_short_header = 0;  // shorter than the 12-byte header: dropped
  uint64_t tx_bad_header = 0;    // offload the driver did not negotiate, bad csum fields
  uint64_t tx_bad_length = 0;    // frame shorter than an Ethernet header or over the limit
  uint64_t tx_linearized = 0;    // spread over too many descriptors: copied, then sent
  uint64_t tx_host_dropped = 0;  // the backend refused it
  uint64_t ctrl_bad = 0;         // control queue: malformed or unsupported command (VIRTIO_NET_ERR)
};

class VirtioNet final : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kReceiveQueue = 0;
  static constexpr uint16_t kTransmitQueue = 1;
  static constexpr uint16_t kMaxQueuePairs = 16;  // num_queues; the TAP driver allows far more
  static constexpr uint16_t kMinMtu = 68;         // IPv4's minimum (RFC 791)
  static constexpr uint16_t kControlQueueSize = 64;
  static constexpr uint32_t kHeaderSize = 12;  // virtio_net_hdr_v1 (VERSION_1 layout)
  static constexpr uint32_t kEthernetHeader = 14;
  static constexpr uint32_t kVlanTag = 4;
  // A TSO frame: at most 64 KiB of IP packet plus its Ethernet and VLAN headers.
  static constexpr uint32_t kMaxGsoFrame = 65536 + kEthernetHeader + kVlanTag;
  // More buffers than this in one transmit chain are copied into one before sending.
  static constexpr size_t kMaxTxSegments = 64;
  // Frames moved per wakeup before letting the event loop serve others.
  static constexpr int kBatch = 64;
  // Transmit chains served per queue notification before yielding to the event loop.
  static constexpr uint32_t kTransmitPerNotify = 128;
  // Unusable receive chains returned per pass before yielding to the event loop (a guest that
  // refills the ring with them as fast as they come back must not hold it).
  static constexpr uint32_t kRefusedPerPass = 128;
  static constexpr uint32_t kMaxPollUs = AdaptivePoll::kMaxUs;  // poll_us=N at most

  VirtioNet(std::shared_ptr<NetBackend> backend, const MacAddress& mac, uint16_t mtu = 1500);
  // One backend per queue pair (1..kMaxQueuePairs); more than one offers VIRTIO_NET_F_MQ.
  VirtioNet(std::vector<std::shared_ptr<NetBackend>> backends, const MacAddress& mac,
            uint16_t mtu = 1500, NetThreading threading = {});
  ~VirtioNet() override;

  // Starts host receive on `loop`. Without start() (tests), call backend_readable() directly.
  void start(EventLoop& loop);
  // Pair `pair`'s backend may have frames: moves them into receive buffers, or pauses it.
  void backend_readable(size_t pair = 0);

  size_t queue_pairs() const { return pairs_.size(); }
  // Pairs the driver uses (1 until it says otherwise on the control queue). Lock held, or tests.
  size_t active_queue_pairs() const { return active_pairs_; }

  bool has_tx_thread() const { return tx_thread_ != nullptr; }
  // Waits until the transmit thread has nothing to do (at once without one). For tests.
  void wait_idle();
  // Passes in which the transmit thread found frames by polling (no notification). For tests.
  uint64_t poll_hits() const { return tx_poll_.hits(); }

  NetCounters counters() const;
  const MacAddress& mac() const { return mac_; }

  // VirtioDevice.
  std::string name() const override { return "virtio-net"; }
  uint32_t device_id() const override;
  uint64_t device_features() const override;
  std::span<const FeatureRequirement> feature_requirements() const override {
    return net_feature_requirements();
  }
  // rx0, tx0, rx1, tx1, ..., and with more than one pair the control queue.
  std::vector<uint16_t> queue_max_sizes() const override;
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  void activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;
  // Receive: the buffers held for a waiting frame go back to being the driver's; the frame
  // waits for buffers of the new ring.
  void queue_reset(uint16_t index) override;
  void return_held(uint16_t index, Virtqueue& queue) override;
  // Served by a vhost-user back-end: the pairs in use are those whose receive queues the
  // front-end enabled, from the first on (it serves the control queue).
  void queue_enabled(uint16_t index, bool enabled) override;
  void pause_io() override;
  void resume_io() override;
  bool watch_queue_notify(uint16_t index, int eventfd) override;

 private:
  enum class RxState { drained, no_buffers, more };
  struct Counter {
    std::atomic<uint64_t> value{0};
    void add() { value.fetch_add(1, std::memory_order_relaxed); }
    uint64_t get() const { return value.load(std::memory_order_relaxed); }
  };

  // One receive/transmit queue pair and its backend. Receive state: under the transport's lock.
  struct Pair {
    explicit Pair(std::shared_ptr<NetBackend> b) : backend(std::move(b)) {}
    std::shared_ptr<NetBackend> backend;
    std::vector<uint8_t> frame;         // header + frame, read from the backend (on first use)
    size_t pending = 0;                 // bytes of `frame` waiting for buffers; 0: none
    std::vector<DescriptorChain> held;  // buffers collected for the pending frame
    uint64_t held_bytes = 0;
    bool paused = false;   // the backend is (or is about to be) paused for want of buffers
    bool pushed = false;   // receive() returned buffers: signal the driver
    uint32_t refused = 0;  // unusable chains returned in this receive() pass
    void forget_held() {
      held.clear();
      held_bytes = 0;
    }
  };

  // Under the transport's lock.
  RxState receive(size_t pair, Virtqueue& queue);
  // false: not enough receive buffers yet, or the pass's budget of unusable ones is spent (the
  // queue is renotified: the next pass comes after the loop's other work).
  bool deliver_pending(size_t pair, Virtqueue& queue);
  bool take_receive_chain(DescriptorChain& chain);  // false: unusable, returned empty
  // Whether the `n` bytes the backend gave (header included) are a frame the driver agreed to.
  bool frame_agreed(const Pair& p, size_t n) const;
  void transmit(uint16_t index, Virtqueue& queue);
  // Sends up to kBatch chains of transmit queue `index` and signals once; returns how many.
  uint32_t transmit_batch(uint16_t index, Virtqueue& queue);
  // On the transmit thread: passes over the transmit rings until they stay empty. True if it
  // yielded (a pause) with work left.
  bool serve_transmit();
  bool is_transmit_queue(uint16_t index) const {
    return index % 2 == 1 && index / 2u < pairs_.size();
  }
  void transmit_one(Pair& p, const DescriptorChain& chain);
  bool header_acceptable(const virtio_net_hdr_v1& header, uint64_t frame_len);
  void control(Virtqueue& queue);
  void set_active_pairs(size_t n);
  uint16_t control_queue() const;         // its index: 2N with MQ negotiated, else 2
  void drop_unreachable_frames(Pair& p);  // no driver: reads and drops what the host sent
  void request_resume(size_t pair);
  // On the loop thread (or now, without a loop): attach or detach pairs [first, last)'s backends.
  void enable_pairs(size_t first, size_t last, bool enabled);
  bool negotiated(unsigned bit) const { return (features_ >> bit) & 1; }
  // The longest frame without segmentation: the MTU, its Ethernet header and a VLAN tag.
  uint64_t max_unsegmented_frame() const { return uint64_t{mtu_} + kEthernetHeader + kVlanTag; }
  void guest_error(Counter& counter, const std::string& message);

  std::vector<Pair> pairs_;
  std::vector<uint8_t> discard_;  // the loop thread's, for frames no driver can take
  const MacAddress mac_;
  const uint16_t mtu_;
  EventLoop* loop_ = nullptr;
  std::atomic<VirtioTransport*> transport_{nullptr};  // between activate() and reset()

  // Under the transport's lock.
  uint64_t features_ = 0;
  size_t active_pairs_ = 1;
  std::vector<bool> rx_enabled_;  // queue_enabled(): per pair, its receive queue
  std::vector<iovec> tx_iov_;
  std::vector<uint8_t> tx_copy_;

  Counter rx_frames_, tx_frames_, rx_bad_chain_, rx_too_big_, rx_not_ready_, rx_host_error_,
      rx_not_agreed_, tx_bad_chain_, tx_short_header_, tx_bad_header_, tx_bad_length_,
      tx_linearized_, tx_host_dropped_, ctrl_bad_;
  log::RateLimited guest_errors_{"guest errors"};

  AdaptivePoll tx_poll_;                 // the transmit thread's
  std::unique_ptr<IoThread> tx_thread_;  // last: stopped before the rest goes
};

}  // namespace libvmm
