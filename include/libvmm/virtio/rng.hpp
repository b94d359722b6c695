// The virtIO entropy device (virtIO 1.2 §5.4, device ID 4): one requestq whose buffers the
// device fills with random bytes from the host (getrandom(2)). No feature bits of its own, no
// config space.
//
// The guest is untrusted. A chain must be device-writable only; one with a device-readable part,
// or with no room, is returned with nothing written and a rate-limited log line. At most
// kMaxBytesPerChain bytes go into one chain (the spec lets the device use less than the whole
// buffer; the used length says how much), and one notification serves at most
// kChainsPerNotify chains or kBytesPerNotify bytes when the transport can call it again later,
// so a guest that keeps its queue full cannot starve other devices.
//
// Threads and locking (see virtio_device.hpp): everything happens inside queue_notify(), under
// the transport's lock; nothing is ever in flight when it returns.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "libvmm/core/log.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class VirtioRng final : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 64;
  static constexpr uint16_t kRequestQueue = 0;
  static constexpr uint32_t kMaxBytesPerChain = 64 * 1024;
  static constexpr uint32_t kChainsPerNotify = 256;
  static constexpr uint64_t kBytesPerNotify = 1024 * 1024;

  // Fills all of `out` with random bytes; returns 0, or an errno value (then `out` is
  // unspecified and the chain is returned with nothing written).
  using EntropySource = std::function<int(std::span<uint8_t> out)>;

  // Random bytes from the host's getrandom(2).
  VirtioRng();
  // Random bytes from `source` instead (tests; a host policy other than getrandom).
  explicit VirtioRng(EntropySource source);

  // VirtioDevice.
  std::string name() const override { return "virtio-rng"; }
  uint32_t device_id() const override;
  uint64_t device_features() const override { return 0; }  // VERSION_1 comes from the transport
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  uint32_t config_size() const override { return 0; }
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  void activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;

  // Random bytes handed to the guest since construction (any thread).
  uint64_t bytes_served() const { return bytes_served_.load(std::memory_order_relaxed); }

 private:
  // Fills the writable part of `chain` (up to kMaxBytesPerChain); returns the bytes written.
  uint32_t serve(const DescriptorChain& chain);
  void guest_error(const std::string& message);  // rate-limited warning
  void host_error(int err);                      // rate-limited warning

  const EntropySource source_;
  VirtioTransport* transport_ = nullptr;  // between activate() and reset(), under the lock
  std::vector<iovec> iov_;                // reused for every chain
  std::atomic<uint64_t> bytes_served_{0};
  log::RateLimited guest_errors_{"guest errors"};
  log::RateLimited source_errors_{"entropy source errors"};
};

}  // namespace libvmm
