#include "libvmm/virtio/console.hpp"

#include <fmt/format.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/input_flow_control.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

constexpr uint32_t kConfigSize = sizeof(virtio_console_config);
constexpr uint32_t kEmergWrOffset = offsetof(virtio_console_config, emerg_wr);
constexpr uint32_t kMaxGuestErrorLogs = 32;  // the guest must not be able to flood the log

static_assert(kConfigSize == 12 && kEmergWrOffset == 8, "virtIO 1.2 §5.3.4 layout");

void put_le(std::array<uint8_t, kConfigSize>& bytes, size_t offset, uint32_t value, size_t size) {
  for (size_t i = 0; i < size; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace

VirtioConsole::VirtioConsole(std::shared_ptr<CharBackend> backend, size_t pending_limit)
    : backend_(std::move(backend)),
      pending_limit_(std::max<size_t>(pending_limit, 1)),
      input_flow_(InputFlowControl::create(backend_, pending_limit_)) {
  backend_->set_output_listener([this] { on_output_room(); });
}

VirtioConsole::~VirtioConsole() {
  backend_->set_output_listener(nullptr);
}

void VirtioConsole::on_output_room() {
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    transport = transport_;
  }
  // The transport's lock first, as in receive(); the held chain goes on, then the queue.
  if (transport == nullptr) return;
  transport->with_queues([this](std::span<Virtqueue> queues) {
    if (tx_held_) transmit(queues[kTransmitQueue]);
  });
}

void VirtioConsole::start(EventLoop& loop) {
  {
    std::lock_guard lock(mutex_);
    loop_ = &loop;
  }
  backend_->start(loop, [this](std::span<const uint8_t> bytes) { receive(bytes); });
}

size_t VirtioConsole::pending_bytes() const {
  std::lock_guard lock(mutex_);
  return pending_.size();
}

uint64_t VirtioConsole::dropped_bytes() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

uint32_t VirtioConsole::device_id() const {
  return VIRTIO_ID_CONSOLE;
}

uint64_t VirtioConsole::device_features() const {
  return 1ull << VIRTIO_CONSOLE_F_EMERG_WRITE;
}

void VirtioConsole::guest_error(const std::string& message) {
  const uint32_t n = guest_errors_logged_.fetch_add(1, std::memory_order_relaxed);
  if (n < kMaxGuestErrorLogs) log::warn("{}: {}", name(), message);
  if (n + 1 == kMaxGuestErrorLogs) log::warn("{}: further guest errors are not logged", name());
}

// ---------------------------------------------------------------------------------------------
// Config space: no VIRTIO_CONSOLE_F_SIZE (cols, rows read 0), no MULTIPORT (one port).

uint32_t VirtioConsole::config_size() const {
  return kConfigSize;
}

void VirtioConsole::read_config(uint32_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, kConfigSize> config{};
  put_le(config, offsetof(virtio_console_config, max_nr_ports), 1, 4);
  // emerg_wr is write-only and reads as 0. The transport checked the range.
  std::memcpy(data.data(), config.data() + offset, data.size());
}

void VirtioConsole::write_config(uint32_t offset, std::span<const uint8_t> data) {
  if (offset == kEmergWrOffset && !data.empty()) {
    // The character is the low byte of the 32-bit field. An emergency write does not wait:
    // without room in the backend it is dropped.
    static_cast<void>(backend_->write(data.first(1)));
    return;
  }
  guest_error(fmt::format("{}-byte write at config offset {:#x}, which is read-only; ignored",
                          data.size(), offset));
}

// ---------------------------------------------------------------------------------------------
// Driver lifecycle and queues

void VirtioConsole::activate(VirtioTransport& transport, uint64_t /*features*/) {
  EventLoop* loop = nullptr;
  {
    std::lock_guard lock(mutex_);
    transport_ = &transport;
    if (!pending_.empty()) loop = loop_;
  }
  // Input that waited for a driver: its receive buffers may already be there, but the queues
  // are out of reach inside this call. Without a loop, the next notify or input delivers it.
  if (loop != nullptr) loop->post([this] { receive({}); });
}

void VirtioConsole::reset() {
  tx_held_.reset();  // the queues are reset next: the chain's head means nothing any more
  std::lock_guard lock(mutex_);
  transport_ = nullptr;  // pending input stays: it is the host's, for the next driver
}

void VirtioConsole::queue_reset(uint16_t index) {
  if (index == kTransmitQueue) tx_held_.reset();
}

void VirtioConsole::queue_notify(uint16_t index, Virtqueue& queue) {
  if (index == kTransmitQueue) return transmit(queue);
  if (index != kReceiveQueue) return;  // the transport only notifies queues that exist
  EventLoop* loop = nullptr;
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    fill_receive_buffers(queue);
    changed = update_input_pause();
    loop = loop_;
  }
  // Flow control runs on the loop thread; without a loop (tests) the call is direct.
  if (changed) input_flow_->request_apply(loop);
}

bool VirtioConsole::write_buffers(const std::vector<iovec>& iov, size_t& index, size_t& offset) {
  while (index < iov.size()) {
    const iovec& v = iov[index];
    const std::span<const uint8_t> rest =
        std::span(static_cast<const uint8_t*>(v.iov_base), v.iov_len).subspan(offset);
    offset += backend_->write(rest);
    if (offset < v.iov_len) return false;  // no room: the output listener calls us again
    ++index;
    offset = 0;
  }
  return true;
}

// Every readable byte goes to the backend; the chain returns with nothing written. A chain the
// backend cannot take all of is held, and the queue waits behind it.
void VirtioConsole::transmit(Virtqueue& queue) {
  std::vector<iovec> iov;
  bool used = false;
  uint32_t taken = 0;
  bool blocked = false;
  if (tx_held_) {
    if (write_buffers(tx_held_->iov, tx_held_->index, tx_held_->offset)) {
      queue.push(tx_held_->head, 0);
      tx_held_.reset();
      used = true;
    } else {
      blocked = true;
    }
  }
  while (!blocked) {
    // A guest that keeps the queue full yields to the event loop's other work now and then.
    if (taken == kTransmitPerNotify && transport_ != nullptr &&
        transport_->renotify(kTransmitQueue)) {
      break;
    }
    auto chain = queue.pop();
    if (!chain) break;
    ++taken;
    iov.clear();
    if (chain->writable_bytes() != 0) {
      guest_error(fmt::format("transmitq buffer {} has device-writable descriptors; dropped",
                              chain->head()));
    } else if (!chain->iovecs(false, iov)) {
      guest_error(fmt::format("transmitq buffer {} is not in guest RAM; dropped", chain->head()));
    } else {
      size_t index = 0;
      size_t offset = 0;
      if (!write_buffers(iov, index, offset)) {
        tx_held_ = HeldChain{chain->head(), std::move(iov), index, offset};
        break;  // held until the backend has room; the queue waits behind it
      }
    }
    queue.push(chain->head(), 0);
    used = true;
  }
  // transport_ is stable here: activate() and reset() run under the same transport lock.
  if (used && transport_ != nullptr) transport_->signal_used(kTransmitQueue);
}

void VirtioConsole::fill_receive_buffers(Virtqueue& queue) {
  if (!queue.ready()) return;
  bool used = false;
  while (!pending_.empty()) {
    auto chain = queue.pop();
    if (!chain) break;  // no buffers, or the driver broke the queue (the transport reports it)
    uint32_t written = 0;
    if (chain->readable_bytes() != 0 || chain->writable_bytes() == 0) {
      guest_error(fmt::format(
          "receiveq buffer {} has device-readable descriptors or no room; returned unused",
          chain->head()));
    } else {
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(pending_.size(), chain->writable_bytes()));
      if (chain->write_at(0, std::span(pending_.data(), n))) {
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(n));
        written = static_cast<uint32_t>(n);
      } else {
        guest_error(
            fmt::format("receiveq buffer {} cannot be written; returned unused", chain->head()));
      }
    }
    queue.push(chain->head(), written);
    used = true;
  }
  if (used && transport_ != nullptr) transport_->signal_used(kReceiveQueue);
}

// ---------------------------------------------------------------------------------------------
// Host input

void VirtioConsole::receive(std::span<const uint8_t> bytes) {
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    const size_t cap = pending_limit_ + kMaxBackendRead;
    const size_t take = std::min(bytes.size(), cap - std::min(cap, pending_.size()));
    pending_.insert(pending_.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(take));
    if (take < bytes.size()) {
      dropped_ += bytes.size() - take;
      if (!overflow_warned_) {
        overflow_warned_ = true;
        log::warn("{}: {} keeps sending input while paused; dropping what does not fit", name(),
                  backend_->describe());
      }
    }
    if (!pending_.empty()) transport = transport_;
  }
  // The transport's lock comes first, then ours: take it from outside, never inside, mutex_.
  if (transport != nullptr) {
    transport->with_queues([this](std::span<Virtqueue> queues) {
      std::lock_guard lock(mutex_);
      if (transport_ != nullptr) fill_receive_buffers(queues[kReceiveQueue]);
    });
  }
  {
    std::lock_guard lock(mutex_);
    update_input_pause();
  }
  input_flow_->apply();  // we are on the loop thread (or a test's), where flow control runs
}

bool VirtioConsole::update_input_pause() {
  if (!input_flow_->update(pending_.size())) return false;
  if (!input_flow_->wants_paused()) overflow_warned_ = false;  // warn again after the next pause
  return true;
}

}  // namespace libvmm
