// The virtIO sound device (virtIO 1.2 §5.14, device ID 25): control, event, tx and rx queues;
// the card of sound_request.hpp (two jacks, one output and one input stream, four channel
// maps); audio to and from a SoundBackend (backends/sound_backend.hpp).
//
// Real-time pacing: a started stream's frames are played (tx) or captured (rx) at its rate by
// the host's monotonic clock, a timer on the event loop waking the device every kTickNs; an
// I/O message is returned to the guest when its last frame has been played (or its buffer has
// been filled), with the status and the latency (bytes the device holds ahead of it). A stream
// the guest stops feeding plays silence: the clock restarts when data comes again, and that gap
// counts as one underrun (capture: frames with no buffer to go to, one overrun). The counters
// are logged when the device goes away (the end of the run).
//
// The guest is untrusted: every control request and I/O message is checked (sound_request.hpp)
// and a malformed one is answered with the specification's status code and a rate-limited log
// line; buffers the device holds are bounded by the queue sizes.
//
// Threads and locking (see virtio_device.hpp): control requests and I/O messages are taken in
// queue_notify(); the timer's tick() runs on the event loop inside VirtioTransport::with_queues().
// Both under the transport's lock, which guards all of the device's state.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "libvmm/backends/sound_backend.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/unique_fd.hpp"
#include "libvmm/virtio/sound_request.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class EventLoop;

class VirtioSound final : public VirtioDevice {
 public:
  static constexpr uint16_t kControlQueue = 0;
  static constexpr uint16_t kEventQueue = 1;
  static constexpr uint16_t kTxQueue = 2;
  static constexpr uint16_t kRxQueue = 3;
  static constexpr uint16_t kControlQueueSize = 64;
  static constexpr uint16_t kIoQueueSize = 256;
  static constexpr int64_t kTickNs = 5'000'000;  // 5 ms
  static constexpr uint32_t kChainsPerNotify = 256;

  // Nanoseconds of a monotonic clock (tests pass their own).
  using Clock = std::function<int64_t()>;

  explicit VirtioSound(std::unique_ptr<SoundBackend> backend, Clock clock = {});
  ~VirtioSound() override;
  VirtioSound(const VirtioSound&) = delete;
  VirtioSound& operator=(const VirtioSound&) = delete;

  // Creates the pacing timer on `loop` (a timerfd, armed while a stream is started). Without
  // start() (tests), nothing is paced unless tick() is called.
  void start(EventLoop& loop);
  // Plays and captures what the clock says is due, and returns the buffers that are done. With
  // the transport's lock held (the timer calls it inside with_queues()); tests call it directly.
  void tick();

  struct Counters {
    uint64_t frames_played = 0;
    uint64_t frames_captured = 0;
    uint64_t underruns = 0;
    uint64_t overruns = 0;
    uint64_t bad_requests = 0;
    // Playback messages returned, and the sum of the latencies they carried, in microseconds.
    uint64_t tx_completed = 0;
    uint64_t tx_latency_us = 0;
  };
  Counters counters() const;  // any thread
  const SoundCard& card() const { return card_; }
  SoundBackend& backend() { return *backend_; }

  // VirtioDevice.
  std::string name() const override { return "virtio-snd"; }
  uint32_t device_id() const override;
  uint64_t device_features() const override { return 0; }
  std::vector<uint16_t> queue_max_sizes() const override {
    return {kControlQueueSize, kControlQueueSize, kIoQueueSize, kIoQueueSize};
  }
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  void activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;
  void queue_reset(uint16_t index) override;
  void return_held(uint16_t index, Virtqueue& queue) override;

 private:
  struct Pending {
    DescriptorChain chain;
    uint32_t data_bytes;
    uint32_t done = 0;  // bytes played or captured
  };
  struct Run {
    std::deque<Pending> pending;
    uint64_t pending_bytes = 0;  // data bytes of `pending` not yet played or captured
    int64_t base_ns = 0;         // the clock's start for frames_since_base
    uint64_t frames_since_base = 0;
    bool starved = false;  // the clock ran with no data (tx) or no buffer (rx)
  };

  void control(Virtqueue& queue);
  void io(uint16_t index, Virtqueue& queue);
  void carry_out(SoundControlReply& reply);
  void start_stream(uint32_t id);
  void advance(uint32_t id);
  // Returns every pending message of stream `id` (RELEASE, new parameters).
  void flush(uint32_t id);
  void complete(uint32_t id, Pending& p, SoundStatus status);
  void update_timer();
  void signal(uint16_t index);
  void signal_done();  // the tx and rx queues that had messages completed
  void guest_error(const std::string& message);
  Virtqueue* queue_of(uint32_t id) const;

  std::unique_ptr<SoundBackend> backend_;
  const Clock clock_;
  SoundCard card_;
  Run runs_[kSoundStreams];
  VirtioTransport* transport_ = nullptr;  // between activate() and reset(), under the lock
  std::atomic<VirtioTransport*> timer_transport_{nullptr};
  Virtqueue* tx_ = nullptr;  // the queues the device holds messages of (set by queue_notify)
  Virtqueue* rx_ = nullptr;
  bool signal_tx_ = false;
  bool signal_rx_ = false;
  // The pacing timer, shared with its callback on the loop: the loop may outlive the device
  // (or destroy it, dropping the callback that held its transport), so the callback reaches
  // the device only through `device`, cleared by the destructor under `mutex`.
  struct TimerLink {
    std::mutex mutex;
    VirtioSound* device = nullptr;
    UniqueFd fd;
  };
  std::shared_ptr<TimerLink> timer_;
  bool timer_armed_ = false;
  std::vector<uint8_t> scratch_;
  std::atomic<uint64_t> frames_played_{0};
  std::atomic<uint64_t> frames_captured_{0};
  std::atomic<uint64_t> underruns_{0};
  std::atomic<uint64_t> overruns_{0};
  std::atomic<uint64_t> backend_xruns_[kSoundStreams] = {0, 0};  // its own clock's, by stream
  std::atomic<uint64_t> bad_requests_{0};
  std::atomic<uint64_t> tx_completed_{0};
  std::atomic<uint64_t> tx_latency_us_{0};
  log::RateLimited guest_errors_{"guest errors"};
};

}  // namespace libvmm
