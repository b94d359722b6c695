// A virtIO device served by another process over vhost-user (the front-end side of QEMU's
// docs/interop/vhost-user.rst): virtio-fs through virtiofsd, virtio-blk through
// qemu-storage-daemon or vmm-device. This process keeps the register window and config space;
// the back-end gets the guest RAM's file descriptors and each queue's layout, kick eventfd (the
// KVM ioeventfd of the queue's notify) and call eventfd (a KVM irqfd: on the device's line, or
// over virtio-pci the queue's MSI-X vector's), so no data-path event passes through this
// process.
//
// virtio-net with several queue pairs (as QEMU's front-end does it): this side offers
// VIRTIO_NET_F_MQ and CTRL_VQ and serves the control queue itself, on the event loop; every
// pair's rings go to the back-end at DRIVER_OK, only those of the pairs the driver uses enabled
// (SET_VRING_ENABLE), and its VQ_PAIRS_SET enables or disables the others'.
//
// A config space read from the back-end can change (a disk resized under qemu-storage-daemon):
// with VHOST_USER_PROTOCOL_F_BACKEND_REQ the back-end gets a channel of its own, and its
// CONFIG_CHANGE_MSG is acknowledged, marks the config space stale and raises the driver's
// config interrupt; the driver's next config read fetches the new one (GET_CONFIG).
//
// Threads: the set-up exchange runs in the constructor (before the guest); start and stop
// exchanges, and a stale config space's GET_CONFIG, run in the calls the transport makes with
// its lock held (a vCPU's register access), each bounded by a timeout. The event loop watches
// the socket for the back-end hanging up, which sets DEVICE_NEEDS_RESET (the VM goes on), and
// the back-end's channel, whose messages it takes only whole and answers without waiting: it
// never waits on the back-end.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "libvmm/backends/vhost_user.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/external_queue_device.hpp"

namespace libvmm {

class EventLoop;
class GuestMemory;
class NetControlServer;

struct VhostUserOptions {
  std::string name;  // for log lines and errors: "virtio-fs"
  uint32_t device_id = 0;
  std::string socket;  // the back-end's Unix socket
  std::vector<uint16_t> queue_sizes;
  // The config space, when this side defines it (virtio-fs: the tag); empty to read
  // config_size bytes from the back-end (VHOST_USER_PROTOCOL_F_CONFIG).
  std::vector<uint8_t> config;
  uint32_t config_size = 0;
  // The config fields the driver may write (virtio-console's emerg_wr): a write inside one
  // goes to the back-end (SET_CONFIG), a write elsewhere is dropped, since a back-end may
  // refuse it or hang up over it (libvhost-user's do).
  struct ConfigField {
    uint32_t offset = 0;
    uint32_t size = 0;
  };
  std::vector<ConfigField> writable_config;
  // Device feature bits offered to the driver when the back-end has them (others are hidden:
  // the layout of queues and config is this side's).
  uint64_t device_feature_mask = 0;
  // What those bits require of each other (net_feature_requirements()): storage that outlives
  // the device.
  std::span<const FeatureRequirement> feature_requirements;
  // virtio-net: its receive/transmit queue pairs (queue_sizes has two per pair, then with more
  // than one pair the control queue); the back-end's GET_QUEUE_NUM counts pairs then. 0: not a
  // network device.
  uint16_t net_queue_pairs = 0;
  // Where the back-end's config decides how many queues the device has (virtio-console: two
  // per port, and the control queues with MULTIPORT): called once the config is read, with the
  // back-end's device features; its queue sizes replace queue_sizes. Throws vhost::VhostError
  // for a config this side refuses.
  std::function<std::vector<uint16_t>(uint64_t features, std::span<const uint8_t> config)>
      queues_from_config;
  // How long the back-end may take to read each message sent to it, and to send each reply
  // whole; and for all of an exchange of many (DRIVER_OK's queue setup, a reset's GET_VRING_BASEs),
  // which runs under the transport's lock.
  int timeout_ms = 5000;
};

// `--vhost-user console`'s queues_from_config: with MULTIPORT, two queues for each of the
// back-end's ports (its config's max_nr_ports, 1 to kMaxVhostUserConsolePorts) and the two
// control queues; without, port 0's two. Throws vhost::VhostError for another port count.
constexpr uint32_t kMaxVhostUserConsolePorts = 32;  // what a back-end may make this side set up
std::vector<uint16_t> vhost_user_console_queues(uint64_t features, std::span<const uint8_t> config);

class VhostUserDevice final : public ExternalQueueDevice {
 public:
  // Connects and negotiates (owner, features, protocol features, config). Throws UserError
  // naming the device and the socket ("virtio-fs backend at /run/fs.sock: ...").
  VhostUserDevice(VhostUserOptions options, const GuestMemory& memory);
  // The same over a socket already connected (tests, fuzzers); options.socket only names it.
  VhostUserDevice(VhostUserOptions options, const GuestMemory& memory, UniqueFd connected);
  ~VhostUserDevice() override;

  // Watches the socket for the back-end hanging up, and the back-end's channel for its
  // requests (on the loop thread).
  void watch(EventLoop& loop);

  std::string name() const override { return options_.name; }
  uint32_t device_id() const override { return options_.device_id; }
  uint64_t device_features() const override;
  std::span<const FeatureRequirement> feature_requirements() const override {
    return options_.feature_requirements;
  }
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  std::vector<uint16_t> queue_max_sizes() const override { return queue_sizes_; }
  uint32_t config_size() const override { return static_cast<uint32_t>(config_.size()); }
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  void reset() override;
  void queue_reset(uint16_t index) override;

  uint64_t transport_features() const override;
  bool start_queues(VirtioTransport& transport, uint64_t features,
                    std::span<const Virtqueue> queues, std::string& why) override;

  // The back-end, as errors name it: "virtio-fs backend at PATH".
  const std::string& peer() const { return peer_; }

 private:
  // One request; with `ack`, waits for the back-end's REPLY_ACK when negotiated.
  void negotiate(UniqueFd connected);
  void send(vhost::Message message, std::span<const int> fds = {}, bool ack = true);
  vhost::Message request_reply(vhost::Message message);
  std::vector<uint8_t> fetch_config(uint32_t size);  // GET_CONFIG of `size` bytes at 0
  void stop_queue(uint16_t index);
  // Lock held (so never one inside another): one deadline over every message of an exchange,
  // so a back-end pacing each reply just inside the timeout cannot hold the locks for minutes.
  class Exchange {
   public:
    explicit Exchange(VhostUserDevice& device);
    ~Exchange();
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;

   private:
    VhostUserDevice& device_;
  };
  // What the next message may wait: the timeout, or what is left of the exchange's (0 once it
  // is spent).
  int wait_ms() const;
  // Rethrows `e`, saying the exchange's time was spent where it was (the channel's message
  // names only what was left of it).
  [[noreturn]] void throw_spent_exchange(const vhost::VhostError& e) const;
  // Lock held: the control queue's index for `features` (net with several pairs and CTRL_VQ),
  // else kNoQueue.
  uint16_t control_queue(uint64_t features) const;
  // Transport lock held (the control queue's VQ_PAIRS_SET): enables the rings of pairs [0, n) in
  // the back-end, disables the others'.
  void set_active_pairs(uint16_t n);
  void send_enable(uint32_t index, bool enabled);  // lock held; waits for REPLY_ACK
  // Negotiation: gives the back-end a channel for its own requests (SET_BACKEND_REQ_FD).
  void open_backend_channel();
  // Loop thread: one request from the back-end's channel; on a bad one, or the channel's end,
  // stops watching it (`quiet`: it closed, the main socket's hang-up says the rest).
  void serve_backend_request(uint32_t events);
  void close_backend_channel(const std::string& why, bool quiet);
  // Transport lock held (a config read after CONFIG_CHANGE_MSG): GET_CONFIG again.
  void refresh_config();
  void apply_own_config();  // net with several pairs: the pairs in config_ are this side's
  // Lock held: marks the connection dead and ends it; the transport (on the loop thread) sets
  // DEVICE_NEEDS_RESET and logs why, once.
  void fail_locked(const std::string& why);
  void disconnect_locked();  // lock held: shuts the connection down (the back-end stops)
  std::string located(const std::string& message) const;  // prefixed with peer_ unless named
  // The transport's line names the device ("vhost-user-blk0: ...; the device needs a reset"):
  // what it is given says "backend at SOCKET ..." without the name a second time.
  std::string for_transport(const std::string& why) const;

  const VhostUserOptions options_;
  const GuestMemory& memory_;
  const std::string peer_;
  std::vector<uint16_t> queue_sizes_;  // options_.queue_sizes, or queues_from_config's
  std::unique_ptr<vhost::Channel> channel_;
  uint64_t backend_features_ = 0;
  uint64_t protocol_features_ = 0;  // negotiated
  std::vector<uint8_t> config_;     // read and refreshed under the transport's lock
  // Set by the loop thread at CONFIG_CHANGE_MSG, and after a driver's write (SET_CONFIG).
  std::atomic<bool> config_stale_{false};
  log::RateLimited dropped_config_writes_{"dropped config writes"};
  std::unique_ptr<vhost::Channel> backend_channel_;  // the back-end's requests; loop thread
  std::vector<bool> started_;
  std::unique_ptr<NetControlServer> control_;  // net with more than one pair

  std::mutex mutex_;  // the channel, started_, active_pairs_, deadline_ (loop thread vs the rest)
  // Written under mutex_; atomic so that the loop reads them without it (a back-end's config
  // change must not wait for an exchange a vCPU holds the lock for).
  std::atomic<bool> failed_{false};
  std::atomic<VirtioTransport*> transport_{nullptr};
  std::optional<std::chrono::steady_clock::time_point> deadline_;  // the exchange's, if any
  uint16_t active_pairs_ = 1;  // net: the pairs whose rings are enabled in the back-end
  EventLoop* loop_ = nullptr;
};

}  // namespace libvmm
