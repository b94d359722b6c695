// The virtIO console (virtIO 1.2 §5.3): one port, no multiport, so two queues. Guest output
// from the transmitq goes to a CharBackend; host input from the backend fills the guest's
// receiveq buffers.
//
// Guest output waits for the backend instead of a host thread waiting for it: a transmitq chain
// the backend takes only part of (its output queue is full: nobody reads) is kept, and no
// further chain is taken, until the backend's output listener says it has room again. The
// driver meanwhile waits for its buffers to come back, which is the flow control the guest
// knows. Nothing is lost and nothing is queued beyond the backend's limit. emerg_wr output that
// finds no room is dropped.
//
// Host input that finds no receive buffer waits in a bounded pending buffer, and the backend is
// paused while that buffer is full (as Uart16550 does); it is resumed once the driver adds
// buffers and the bytes have moved into them. Pending input belongs to the host, not to the
// device: a device reset keeps it for the next driver, like bytes typed before the driver loaded.
//
// Threads and locking (see virtio_device.hpp): the transport serializes the VirtioDevice calls;
// receive() runs on the event loop thread and reaches the queues through
// VirtioTransport::with_queues(). The console's own mutex is taken inside the transport's lock,
// never around it, and never around a backend call.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class CharBackend;
class EventLoop;
class InputFlowControl;

class VirtioConsole final : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kReceiveQueue = 0;         // receiveq, port 0: device to driver
  static constexpr uint16_t kTransmitQueue = 1;        // transmitq, port 0: driver to device
  static constexpr uint32_t kTransmitPerNotify = 256;  // chains per notification, when it can yield
  static constexpr size_t kDefaultPendingLimit = 4096;
  // How far past the limit pending input may grow: the backend's read that reached the limit.
  static constexpr size_t kMaxBackendRead = 64 * 1024;

  // Input pauses once `pending_limit` bytes wait, and resumes when fewer than half of them do.
  // At most pending_limit + kMaxBackendRead bytes are kept: input beyond that (from a backend
  // that ignores pause_input()) is dropped with a warning, never queued without bound.
  explicit VirtioConsole(std::shared_ptr<CharBackend> backend,
                         size_t pending_limit = kDefaultPendingLimit);
  ~VirtioConsole() override;
  VirtioConsole(const VirtioConsole&) = delete;
  VirtioConsole& operator=(const VirtioConsole&) = delete;

  // Starts host input: the backend delivers it to receive() on `loop`'s thread, and flow
  // control decided elsewhere is posted there. Without start() (tests), those calls are direct.
  // The backend and loop must stop delivering before this console is destroyed.
  void start(EventLoop& loop);

  // Host input (the backend's sink). Must not be called from inside a call into the device, nor
  // from the backend's pause_input()/resume_input().
  void receive(std::span<const uint8_t> bytes);

  // Host input waiting for receive buffers, and input dropped because a backend ignored pause.
  size_t pending_bytes() const;
  uint64_t dropped_bytes() const;

  // VirtioDevice.
  std::string name() const override { return "virtio-console"; }
  uint32_t device_id() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  // Writing emerg_wr outputs its first byte; it works at any time, even before the driver
  // negotiated features (spec §5.3.4). The rest of the config space is read-only.
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  void activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;
  void queue_reset(uint16_t index) override;

 private:
  // A transmitq chain the backend has not taken all of: its buffers, and how far it got.
  struct HeldChain {
    uint16_t head = 0;
    std::vector<iovec> iov;
    size_t index = 0;   // the buffer being written
    size_t offset = 0;  // bytes of it already taken
  };

  void transmit(Virtqueue& queue);
  // Transport lock held: offers `iov` from buffer `index`, byte `offset` on to the backend, and
  // advances both by what it took; true once it took everything.
  bool write_buffers(const std::vector<iovec>& iov, size_t& index, size_t& offset);
  // The backend has room again (its output listener, on the loop thread).
  void on_output_room();
  // Under mutex_ and the transport's lock: moves pending input into receive buffers.
  void fill_receive_buffers(Virtqueue& queue);
  // Under mutex_: pauses input at the limit, resumes it below half (the desired state, not yet
  // the backend's). True if that changed.
  bool update_input_pause();
  // A rate-limited warning about something the guest's driver did wrong.
  void guest_error(const std::string& message);

  const std::shared_ptr<CharBackend> backend_;
  const size_t pending_limit_;
  // Pauses the backend while pending_ is full; shared with the tasks posted to the loop.
  const std::shared_ptr<InputFlowControl> input_flow_;

  mutable std::mutex mutex_;
  EventLoop* loop_ = nullptr;
  VirtioTransport* transport_ = nullptr;  // between activate() and reset()
  std::vector<uint8_t> pending_;          // host input not yet in a guest buffer
  uint64_t dropped_ = 0;
  bool overflow_warned_ = false;

  // Transport lock only (queue_notify, with_queues, reset, queue_reset).
  std::optional<HeldChain> tx_held_;

  std::atomic<uint32_t> guest_errors_logged_{0};
};

}  // namespace libvmm
