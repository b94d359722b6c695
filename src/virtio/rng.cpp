#include "libvmm/virtio/rng.hpp"

#include <fmt/format.h>
#include <linux/virtio_ids.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

static_assert(VIRTIO_ID_RNG == 4, "virtIO 1.2 §5.4.1");

// getrandom(2) on the host's CSPRNG, which blocks only until the host's pool is first
// initialized (long done once the host has booted). Large requests may come back short.
int host_getrandom(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;  // never expected; do not spin on it
    done += static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

VirtioRng::VirtioRng() : VirtioRng(host_getrandom) {}

VirtioRng::VirtioRng(EntropySource source)
    : source_(source ? std::move(source) : EntropySource(host_getrandom)) {}

uint32_t VirtioRng::device_id() const {
  return VIRTIO_ID_RNG;
}

void VirtioRng::read_config(uint32_t /*offset*/, std::span<uint8_t> data) {
  // No config space (config_size() is 0): the transport refuses every access before this.
  std::fill(data.begin(), data.end(), 0);
}

void VirtioRng::activate(VirtioTransport& transport, uint64_t /*features*/) {
  transport_ = &transport;
}

void VirtioRng::reset() {
  transport_ = nullptr;  // requests complete inside queue_notify(): nothing is in flight
}

void VirtioRng::guest_error(const std::string& message) {
  guest_errors_.warn(name(), message);
}

void VirtioRng::host_error(int err) {
  source_errors_.warn(name(),
                      fmt::format("the host's entropy source failed: {}; request returned short",
                                  std::strerror(err)));
}

// ---------------------------------------------------------------------------------------------
// Requests

void VirtioRng::queue_notify(uint16_t index, Virtqueue& queue) {
  if (index != kRequestQueue || transport_ == nullptr) return;
  uint32_t chains = 0;
  uint64_t bytes = 0;
  bool asked_to_yield = false;
  do {
    queue.disable_notifications();  // no kicks while we drain the queue anyway
    bool pushed = false;
    while (true) {
      // A guest that keeps the queue full yields to the event loop's other work now and then.
      // Asked once per call: if the transport cannot arrange it, we drain as block does.
      if (!asked_to_yield && (chains >= kChainsPerNotify || bytes >= kBytesPerNotify)) {
        asked_to_yield = true;
        if (transport_->renotify(kRequestQueue)) {
          // Notifications stay off until the renotified call turns them on again.
          if (pushed) transport_->signal_used(kRequestQueue);
          return;
        }
      }
      auto chain = queue.pop();
      if (!chain) break;  // empty, or the driver broke the queue (the transport reports it)
      ++chains;
      const uint32_t written = serve(*chain);
      bytes += written;
      queue.push(chain->head(), written);
      pushed = true;
    }
    if (pushed) transport_->signal_used(kRequestQueue);
  } while (queue.ready() && !queue.broken() && queue.enable_notifications());
}

uint32_t VirtioRng::serve(const DescriptorChain& chain) {
  if (chain.readable_bytes() != 0 || chain.writable_bytes() == 0) {
    guest_error(
        fmt::format("request {} has {} device-readable and {} device-writable bytes "
                    "(needs only writable ones); returned unused",
                    chain.head(), chain.readable_bytes(), chain.writable_bytes()));
    return 0;
  }
  iov_.clear();
  if (!chain.iovecs(true, iov_)) {
    guest_error(fmt::format("request {} is not in guest RAM; returned unused", chain.head()));
    return 0;
  }
  // The guest chooses the lengths: serve at most kMaxBytesPerChain, straight into its buffers.
  uint32_t written = 0;
  for (const iovec& v : iov_) {
    const uint32_t n =
        static_cast<uint32_t>(std::min<uint64_t>(v.iov_len, kMaxBytesPerChain - written));
    if (n == 0) {
      if (written == kMaxBytesPerChain) break;
      continue;
    }
    if (const int err = source_(std::span(static_cast<uint8_t*>(v.iov_base), n)); err != 0) {
      host_error(err);
      break;  // what is written so far is random; the rest is not counted
    }
    written += n;
  }
  bytes_served_.fetch_add(written, std::memory_order_relaxed);
  return written;
}

}  // namespace libvmm
