#include "libvmm/virtio/net.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "iovec_edit.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/net_control.hpp"

namespace libvmm {
namespace {

// The ABI structures are little-endian (VERSION_1), like every host we build for.
static_assert(sizeof(virtio_net_hdr_v1) == VirtioNet::kHeaderSize);
constexpr uint64_t kFramesLogged = 8;  // with -v, the first frames each way (bring-up problems)

}  // namespace

MacAddress default_mac(std::string_view vm_name, size_t index) {
  // FNV-1a over the name and index: stable across runs and hosts, distinct per interface.
  uint64_t hash = 0xcbf29ce484222325ull;
  auto mix = [&](uint8_t byte) { hash = (hash ^ byte) * 0x100000001b3ull; };
  for (const char c : vm_name) mix(static_cast<uint8_t>(c));
  mix(0);
  for (size_t i = 0; i < sizeof(index); ++i) mix(static_cast<uint8_t>(index >> (8 * i)));
  MacAddress mac{};
  for (size_t i = 0; i < mac.size(); ++i) mac[i] = static_cast<uint8_t>(hash >> (8 * i));
  mac[0] = static_cast<uint8_t>((mac[0] & 0xfc) | 0x02);  // unicast, locally administered
  return mac;
}

std::string format_mac(const MacAddress& mac) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3],
                     mac[4], mac[5]);
}

// ---------------------------------------------------------------------------------------------
// Device

VirtioNet::VirtioNet(std::shared_ptr<NetBackend> backend, const MacAddress& mac, uint16_t mtu)
    : VirtioNet(std::vector<std::shared_ptr<NetBackend>>{std::move(backend)}, mac, mtu) {}

VirtioNet::VirtioNet(std::vector<std::shared_ptr<NetBackend>> backends, const MacAddress& mac,
                     uint16_t mtu, NetThreading threading)
    : mac_(mac),
      mtu_(std::max(mtu, kMinMtu)),
      tx_poll_(threading.tx_thread ? std::min(threading.poll_max_us, kMaxPollUs) : 0,
               threading.poll_clock) {
  if (backends.empty() || backends.size() > kMaxQueuePairs) {
    throw std::invalid_argument(
        fmt::format("virtio-net: {} queue pairs (1 to {})", backends.size(), kMaxQueuePairs));
  }
  pairs_.reserve(backends.size());
  for (auto& backend : backends) {
    if (!backend) throw std::invalid_argument("virtio-net: a backend is needed");
    pairs_.emplace_back(std::move(backend));
  }
  if (threading.tx_thread) {
    tx_thread_ = std::make_unique<IoThread>(
        std::move(threading.name), [this] { return serve_transmit(); },
        std::move(threading.on_thread_start));
  }
}

VirtioNet::~VirtioNet() = default;

void VirtioNet::start(EventLoop& loop) {
  loop_ = &loop;
  for (size_t i = 0; i < pairs_.size(); ++i) {
    pairs_[i].backend->start(loop, [this, i] { backend_readable(i); });
  }
  // Until the driver asks for more, only the first pair is used.
  for (size_t i = 1; i < pairs_.size(); ++i) {
    pairs_[i].backend->pause_receive();
    pairs_[i].backend->set_enabled(false);
  }
  // One link for all pairs (a multiqueue TAP's queues are one interface). A running driver
  // reads the status again on the config interrupt.
  pairs_.front().backend->watch_link(loop, [this] {
    if (VirtioTransport* transport = transport_.load()) transport->signal_config_change();
  });
}

std::vector<uint16_t> VirtioNet::queue_max_sizes() const {
  std::vector<uint16_t> sizes(2 * pairs_.size(), kQueueSize);
  if (pairs_.size() > 1) sizes.push_back(kControlQueueSize);
  return sizes;
}

NetCounters VirtioNet::counters() const {
  NetCounters c;
  c.rx_frames = rx_frames_.get();
  c.tx_frames = tx_frames_.get();
  c.rx_bad_chain = rx_bad_chain_.get();
  c.rx_too_big = rx_too_big_.get();
  c.rx_not_ready = rx_not_ready_.get();
  c.rx_host_error = rx_host_error_.get();
  c.rx_not_agreed = rx_not_agreed_.get();
  c.tx_bad_chain = tx_bad_chain_.get();
  c.tx_short_header = tx_short_header_.get();
  c.tx_bad_header = tx_bad_header_.get();
  c.tx_bad_length = tx_bad_length_.get();
  c.tx_linearized = tx_linearized_.get();
  c.tx_host_dropped = tx_host_dropped_.get();
  c.ctrl_bad = ctrl_bad_.get();
  return c;
}

uint32_t VirtioNet::device_id() const {
  return VIRTIO_ID_NET;
}

uint64_t VirtioNet::device_features() const {
  const uint64_t multiqueue =
      pairs_.size() > 1 ? feature_bit(VIRTIO_NET_F_CTRL_VQ) | feature_bit(VIRTIO_NET_F_MQ) : 0;
  return multiqueue | feature_bit(VIRTIO_NET_F_MAC) | feature_bit(VIRTIO_NET_F_STATUS) |
         feature_bit(VIRTIO_NET_F_MTU) | feature_bit(VIRTIO_NET_F_MRG_RXBUF) |
         feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_GUEST_CSUM) |
         feature_bit(VIRTIO_NET_F_HOST_TSO4) | feature_bit(VIRTIO_NET_F_HOST_TSO6) |
         feature_bit(VIRTIO_NET_F_GUEST_TSO4) | feature_bit(VIRTIO_NET_F_GUEST_TSO6);
}

uint32_t VirtioNet::config_size() const {
  return net_config_size();
}

void VirtioNet::read_config(uint32_t offset, std::span<uint8_t> data) {
  read_net_config(mac_, pairs_.size(), mtu_, pairs_.front().backend->link_up(), offset, data);
}

void VirtioNet::guest_error(Counter& counter, const std::string& message) {
  counter.add();
  guest_errors_.warn(name(), message);
}

void VirtioNet::activate(VirtioTransport& transport, uint64_t features) {
  features_ = features;
  for (Pair& p : pairs_) p.backend->set_offloads(features);
  transport_.store(&transport);
  // Frames may have waited in the host while no driver ran the device.
  request_resume(0);
}

void VirtioNet::reset() {
  transport_.store(nullptr);
  for (Pair& p : pairs_) {
    p.forget_held();  // the queues are reset right after: these buffers are the driver's again
    if (p.pending != 0) rx_not_ready_.add();
    p.pending = 0;
    p.backend->set_offloads(0);
  }
  features_ = 0;
  rx_enabled_.clear();
  set_active_pairs(1);
  request_resume(0);  // without a driver, frames are read and dropped
}

void VirtioNet::queue_reset(uint16_t index) {
  // Transmit holds nothing between notifications, nor does the control queue.
  if (index % 2 != 0 || index / 2u >= pairs_.size()) return;
  if (index == control_queue()) return;
  pairs_[index / 2u].forget_held();
}

void VirtioNet::return_held(uint16_t index, Virtqueue& queue) {
  // Receive buffers collected for a frame still waiting for more: given back empty (the
  // driver counts them as errors and refills), the frame dropped.
  if (index % 2 != 0 || index / 2u >= pairs_.size() || index == control_queue()) return;
  Pair& p = pairs_[index / 2u];
  if (p.held.empty()) return;
  for (const DescriptorChain& chain : p.held) queue.push(chain.head(), 0);
  if (VirtioTransport* transport = transport_.load()) transport->signal_used(index);
  p.forget_held();
  if (p.pending != 0) rx_not_ready_.add();
  p.pending = 0;
}

void VirtioNet::request_resume(size_t pair) {
  Pair& p = pairs_[pair];
  if (!p.paused || pair >= active_pairs_) return;
  p.paused = false;
  log::debug("{}: {} resumed", name(), p.backend->describe());
  if (loop_ == nullptr) return p.backend->resume_receive();
  loop_->post([this, pair] {
    pairs_[pair].backend->resume_receive();
    backend_readable(pair);  // frames that are already waiting raise no new event on resume
  });
}

void VirtioNet::queue_enabled(uint16_t index, bool enabled) {
  if (index % 2 != 0 || index / 2u >= pairs_.size() || index == control_queue()) return;
  rx_enabled_.resize(pairs_.size(), false);
  rx_enabled_[index / 2u] = enabled;
  size_t n = 0;
  while (n < pairs_.size() && rx_enabled_[n]) ++n;
  set_active_pairs(std::max<size_t>(n, 1));
}

uint16_t VirtioNet::control_queue() const {
  if (pairs_.size() == 1) return 0xffff;  // none
  return negotiated(VIRTIO_NET_F_MQ) ? static_cast<uint16_t>(2 * pairs_.size()) : 2;
}

void VirtioNet::queue_notify(uint16_t index, Virtqueue& queue) {
  if (index == control_queue()) return control(queue);
  const size_t pair = index / 2u;
  if (pair >= active_pairs_) return;  // a pair the driver does not use (yet)
  if (index % 2 != 0) return tx_thread_ ? tx_thread_->kick() : transmit(index, queue);
  // New receive buffers: the waiting frame (if any) goes first, then the host's.
  if (receive(pair, queue) != RxState::no_buffers) request_resume(pair);
}

// ---------------------------------------------------------------------------------------------
// Control queue (with more than one queue pair): only VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET

void VirtioNet::control(Virtqueue& queue) {
  const NetControlTarget target{negotiated(VIRTIO_NET_F_MQ), pairs_.size(),
                                [this](uint16_t pairs) { set_active_pairs(pairs); },
                                [this](const std::string& why) { guest_error(ctrl_bad_, why); }};
  if (answer_net_control_queue(queue, target)) {
    if (VirtioTransport* t = transport_.load()) t->signal_used(control_queue());
  }
}

void VirtioNet::set_active_pairs(size_t n) {
  const size_t old = active_pairs_;
  if (n == old) return;
  log::debug("{}: {} of {} queue pairs in use", name(), n, pairs_.size());
  active_pairs_ = n;
  // A pair no longer used keeps the buffers it holds for its waiting frame: its queues are not
  // reset, so those buffers are the driver's only through the used ring, once the pair is
  // used again (a queue reset or a device reset forgets them).
  if (n < old) enable_pairs(n, old, false);
  if (n > old) enable_pairs(old, n, true);
}

void VirtioNet::enable_pairs(size_t first, size_t last, bool enabled) {
  auto apply = [this, first, last, enabled] {
    for (size_t i = first; i < last; ++i) {
      NetBackend& backend = *pairs_[i].backend;
      if (enabled) {
        backend.set_enabled(true);
        backend.resume_receive();
      } else {
        backend.pause_receive();
        backend.set_enabled(false);
      }
    }
    if (!enabled) return;
    // Frames already waiting raise no new event once watched again.
    for (size_t i = first; i < last; ++i) backend_readable(i);
    // Nor do chains the driver left on the transmit queues while unused, and the transmit
    // thread may have left a queue with notifications off when its pair went: serve them now.
    if (tx_thread_) return tx_thread_->kick();
    if (VirtioTransport* t = transport_.load()) {
      t->with_queues([&](std::span<Virtqueue> queues) {
        for (size_t i = first; i < last && i < active_pairs_ && 2 * i + 1 < queues.size(); ++i) {
          Virtqueue& queue = queues[2 * i + 1];
          if (queue.ready() && !queue.broken()) transmit(static_cast<uint16_t>(2 * i + 1), queue);
        }
      });
    }
  };
  if (enabled) {
    for (size_t i = first; i < last; ++i) pairs_[i].paused = false;
  }
  if (loop_ == nullptr) return apply();
  loop_->post(apply);
}

// ---------------------------------------------------------------------------------------------
// Receive

void VirtioNet::backend_readable(size_t pair) {
  Pair& p = pairs_.at(pair);
  VirtioTransport* transport = transport_.load();
  RxState state = RxState::drained;
  const bool live =
      transport != nullptr && transport->with_queues([&](std::span<Virtqueue> queues) {
        if (transport_.load() == nullptr) return drop_unreachable_frames(p);
        if (pair >= active_pairs_ || 2 * pair >= queues.size()) {
          // Detached meanwhile: what it still had waits until the pair is used again.
          state = RxState::no_buffers;
          return;
        }
        state = receive(pair, queues[2 * pair]);
      });
  if (!live) return drop_unreachable_frames(p);
  // No busy loop: with no buffers, stop watching the backend until the driver adds some.
  if (state == RxState::no_buffers) {
    log::debug("{}: no receive buffers; {} paused", name(), p.backend->describe());
    p.backend->pause_receive();
  }
  // With more, the level-triggered loop calls us again after serving the others.
}

void VirtioNet::drop_unreachable_frames(Pair& p) {
  // Not into p.frame: this runs without the transport's lock when no transport is live, while
  // a vCPU activating the device may already be receiving into it.
  if (discard_.empty()) discard_.resize(kHeaderSize + kMaxGsoFrame);
  for (int i = 0; i < kBatch; ++i) {
    if (p.backend->receive(discard_) <= 0) return;
    if (rx_not_ready_.get() == 0) log::debug("{}: no driver yet; dropping frames", name());
    rx_not_ready_.add();
  }
}

VirtioNet::RxState VirtioNet::receive(size_t pair, Virtqueue& queue) {
  Pair& p = pairs_[pair];
  if (!queue.ready()) {
    p.paused = true;
    return RxState::no_buffers;
  }
  if (p.frame.empty()) p.frame.resize(kHeaderSize + kMaxGsoFrame);
  RxState state = RxState::more;
  p.pushed = false;
  p.refused = 0;
  for (int i = 0; i < kBatch; ++i) {
    if (p.pending == 0) {
      const ssize_t n = p.backend->receive(p.frame);
      if (n == 0) {
        state = RxState::drained;
        break;
      }
      if (n < static_cast<ssize_t>(kHeaderSize + kEthernetHeader)) {
        rx_host_error_.add();
        if (n < 0) {
          if (rx_host_error_.get() == 1) {
            log::warn("{}: reading from {}: {}", name(), p.backend->describe(),
                      std::strerror(static_cast<int>(-n)));
          }
          // Paused like a lack of buffers (the next receive notify retries): a failing
          // backend that stays readable must not make the loop spin.
          state = RxState::no_buffers;
          break;
        }
        continue;
      }
      if (static_cast<size_t>(n) > p.frame.size()) {  // a read never says more than it took
        rx_host_error_.add();
        continue;
      }
      if (!frame_agreed(p, static_cast<size_t>(n))) {
        rx_not_agreed_.add();
        continue;
      }
      p.pending = static_cast<size_t>(n);
    }
    if (!deliver_pending(pair, queue)) {
      state = RxState::no_buffers;
      break;
    }
  }
  // Cleared by request_resume() once buffers come back.
  if (state == RxState::no_buffers) p.paused = true;
  if (p.pushed) {
    if (VirtioTransport* t = transport_.load()) t->signal_used(static_cast<uint16_t>(2 * pair));
  }
  return state;
}

// Validates a receive chain: the driver's buffers must be all device-writable, with room for
// the header. A bad one goes back unused (length 0), as the driver will then discard it.
bool VirtioNet::take_receive_chain(DescriptorChain& chain) {
  if (chain.readable_bytes() == 0 && chain.writable_bytes() >= kHeaderSize) return true;
  guest_error(
      rx_bad_chain_,
      fmt::format("receive buffer {} has {} device-readable and {} device-writable bytes "
                  "(needs only writable ones, at least {}); returned unused",
                  chain.head(), chain.readable_bytes(), chain.writable_bytes(), kHeaderSize));
  return false;
}

bool VirtioNet::deliver_pending(size_t pair, Virtqueue& queue) {
  Pair& p = pairs_[pair];
  const bool mergeable = negotiated(VIRTIO_NET_F_MRG_RXBUF);
  // Collect buffers until the frame fits: one without mergeable buffers, as many as needed
  // with them (each chain holds at most what it offers; num_buffers says how many).
  while (p.held_bytes < p.pending) {
    if (!mergeable && !p.held.empty()) {
      guest_error(rx_too_big_, fmt::format("a {}-byte frame does not fit a {}-byte receive buffer; "
                                           "dropped",
                                           p.pending, p.held_bytes));
      p.pending = 0;
      return true;  // the buffer stays for the next frame
    }
    if (p.held.size() >= queue.size()) {
      // Every descriptor is ours and the frame still does not fit: the driver cannot add more.
      guest_error(rx_too_big_, fmt::format("a {}-byte frame does not fit all {} receive buffers; "
                                           "dropped",
                                           p.pending, p.held.size()));
      p.pending = 0;
      return true;
    }
    auto chain = queue.pop();
    if (!chain && queue.enable_notifications()) chain = queue.pop();
    if (!chain) return false;  // wait for the driver (or the queue broke: the transport says)
    queue.disable_notifications();
    if (!take_receive_chain(*chain)) {
      queue.push(chain->head(), 0);
      p.pushed = true;
      // Paused like a lack of buffers; the renotified pass resumes the backend.
      if (++p.refused >= kRefusedPerPass) {
        VirtioTransport* transport = transport_.load();
        if (transport != nullptr && transport->renotify(static_cast<uint16_t>(2 * pair))) {
          return false;
        }
      }
      continue;
    }
    p.held_bytes += chain->writable_bytes();
    p.held.push_back(std::move(*chain));
  }

  // Spread header + frame over the held buffers; num_buffers counts those used.
  size_t used = 0;
  for (size_t offset = 0; offset < p.pending; ++used) {
    offset += std::min<uint64_t>(p.held[used].writable_bytes(), p.pending - offset);
  }
  // Through a copy: the byte buffer has no alignment the header's type may rely on (riscv64's
  // -Wcast-align).
  virtio_net_hdr_v1 header;
  std::memcpy(&header, p.frame.data(), sizeof(header));
  header.num_buffers = static_cast<uint16_t>(used);
  if (!negotiated(VIRTIO_NET_F_GUEST_CSUM)) header.flags = 0;  // no offload was agreed
  std::memcpy(p.frame.data(), &header, sizeof(header));
  size_t offset = 0;
  for (size_t i = 0; i < used; ++i) {
    const DescriptorChain& chain = p.held[i];
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(chain.writable_bytes(), p.pending - offset));
    // pop() checked that every writable buffer lies in writable guest RAM.
    const bool ok = chain.write_at(0, std::span(p.frame.data() + offset, n));
    queue.push(chain.head(), ok ? static_cast<uint32_t>(n) : 0);
    p.pushed = true;
    offset += n;
  }
  p.held.erase(p.held.begin(), p.held.begin() + static_cast<ptrdiff_t>(used));
  p.held_bytes = 0;
  for (const DescriptorChain& chain : p.held) p.held_bytes += chain.writable_bytes();
  if (rx_frames_.get() < kFramesLogged) {
    log::debug("{}: received {} bytes into {} buffer(s)", name(), p.pending, used);
  }
  p.pending = 0;
  rx_frames_.add();
  return true;
}

// ---------------------------------------------------------------------------------------------
// Transmit

void VirtioNet::transmit(uint16_t index, Virtqueue& queue) {
  // Drain what is there with notifications off, then look once more after turning them on.
  // A guest that keeps the queue full yields to the event loop's other work after
  // kTransmitPerNotify chains: the queue's notification is signalled again and we resume then.
  // The budget counts every chain since the notification, whatever size each batch was.
  VirtioTransport* transport = transport_.load();
  uint32_t taken = 0;
  do {
    queue.disable_notifications();
    while (true) {
      if (taken >= kTransmitPerNotify && transport != nullptr && transport->renotify(index)) {
        return;
      }
      const uint32_t sent = transmit_batch(index, queue);
      taken += sent;
      if (sent < static_cast<uint32_t>(kBatch)) break;  // the ring is empty
    }
  } while (queue.ready() && !queue.broken() && queue.enable_notifications());
}

uint32_t VirtioNet::transmit_batch(uint16_t index, Virtqueue& queue) {
  Pair& p = pairs_[index / 2u];
  uint32_t sent = 0;
  while (sent < static_cast<uint32_t>(kBatch)) {
    auto chain = queue.pop();
    if (!chain) break;
    transmit_one(p, *chain);
    queue.push(chain->head(), 0);
    ++sent;
  }
  if (sent != 0) {
    if (VirtioTransport* t = transport_.load()) t->signal_used(index);
  }
  return sent;
}

bool VirtioNet::serve_transmit() {
  VirtioTransport* transport = transport_.load();
  if (transport == nullptr) return false;
  tx_poll_.woke();
  while (!tx_thread_->yield_requested()) {
    bool sent = false;
    bool gone = false;
    // One batch of each ring per pass, so no pair waits for another's backlog.
    const bool live = transport->with_queues([&](std::span<Virtqueue> queues) {
      if (transport_.load() != transport) {
        gone = true;
        return;
      }
      for (size_t pair = 0; pair < active_pairs_ && 2 * pair + 1 < queues.size(); ++pair) {
        const auto index = static_cast<uint16_t>(2 * pair + 1);
        Virtqueue& queue = queues[index];
        if (!queue.ready() || queue.broken()) continue;
        if (!tx_poll_.polling()) queue.disable_notifications();
        sent = transmit_batch(index, queue) != 0 || sent;
      }
    });
    if (gone || !live) return false;
    if (sent) {
      tx_poll_.found();
      continue;
    }
    if (tx_poll_.keep_polling()) continue;  // notifications stay off meanwhile
    bool more = false;                      // frames came while notifications were being turned on
    const bool still = transport->with_queues([&](std::span<Virtqueue> queues) {
      if (transport_.load() != transport) return;
      for (size_t pair = 0; pair < active_pairs_ && 2 * pair + 1 < queues.size(); ++pair) {
        Virtqueue& queue = queues[2 * pair + 1];
        if (queue.ready() && !queue.broken()) more = queue.enable_notifications() || more;
      }
    });
    if (!still) return false;
    if (!more) {
      tx_poll_.sleeping();
      return false;
    }
  }
  // Paused or ending: the next pass after resume_io() (notifications may still be off: that
  // pass looks at the rings first and turns them on when empty).
  return true;
}

void VirtioNet::pause_io() {
  if (tx_thread_) tx_thread_->pause();
}

void VirtioNet::resume_io() {
  if (tx_thread_) tx_thread_->resume();
}

bool VirtioNet::watch_queue_notify(uint16_t index, int eventfd) {
  if (!tx_thread_ || !is_transmit_queue(index)) return false;
  UniqueFd own(::fcntl(eventfd, F_DUPFD_CLOEXEC, 0));
  if (!own) throw_errno("virtio-net: dup of a transmit queue's notify eventfd");
  tx_thread_->watch(std::move(own));
  return true;
}

void VirtioNet::wait_idle() {
  if (tx_thread_) tx_thread_->wait_idle();
}

bool VirtioNet::frame_agreed(const Pair& p, size_t n) const {
  virtio_net_hdr_v1 header;
  std::memcpy(&header, p.frame.data(), sizeof(header));
  // A TAP may still hold frames segmented for a driver from before a reset turned its offloads
  // off; the driver now running takes only the GSO types it negotiated (virtIO 1.2 §5.1.6.4).
  const uint8_t gso = header.gso_type;
  const bool gso_ok = gso == VIRTIO_NET_HDR_GSO_NONE ||
                      (gso == VIRTIO_NET_HDR_GSO_TCPV4 && negotiated(VIRTIO_NET_F_GUEST_TSO4)) ||
                      (gso == VIRTIO_NET_HDR_GSO_TCPV6 && negotiated(VIRTIO_NET_F_GUEST_TSO6));
  // With VIRTIO_NET_F_MTU the driver gets no unsegmented frame over the MTU (§5.1.6.3.2):
  // the host's interface may have a larger one.
  const bool length_ok = gso != VIRTIO_NET_HDR_GSO_NONE || !negotiated(VIRTIO_NET_F_MTU) ||
                         n - kHeaderSize <= max_unsegmented_frame();
  if ((!gso_ok || !length_ok) && rx_not_agreed_.get() < kFramesLogged) {
    log::debug(
        "{}: a {}-byte frame from {} with segmentation type {:#x} is not for this driver "
        "(MTU {}, features {:#x}); dropped",
        name(), n - kHeaderSize, p.backend->describe(), gso, mtu_, features_);
  }
  return gso_ok && length_ok;
}

bool VirtioNet::header_acceptable(const virtio_net_hdr_v1& header, uint64_t frame_len) {
  const uint8_t gso = header.gso_type;
  const bool tso4 = gso == VIRTIO_NET_HDR_GSO_TCPV4 && negotiated(VIRTIO_NET_F_HOST_TSO4);
  const bool tso6 = gso == VIRTIO_NET_HDR_GSO_TCPV6 && negotiated(VIRTIO_NET_F_HOST_TSO6);
  if (gso != VIRTIO_NET_HDR_GSO_NONE && !tso4 && !tso6) {
    guest_error(tx_bad_header_, fmt::format("transmit header asks for segmentation type {:#x}, "
                                            "which was not negotiated; dropped",
                                            gso));
    return false;
  }
  if (gso != VIRTIO_NET_HDR_GSO_NONE &&
      (header.gso_size == 0 || !(header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))) {
    guest_error(tx_bad_header_, "segmentation without a segment size or checksum offload; dropped");
    return false;
  }
  if (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
    if (!negotiated(VIRTIO_NET_F_CSUM)) {
      guest_error(tx_bad_header_, "checksum offload requested but not negotiated; dropped");
      return false;
    }
    if (uint64_t{header.csum_start} + header.csum_offset + 2 > frame_len) {
      guest_error(tx_bad_header_,
                  fmt::format("checksum at {}+{} lies outside the {}-byte frame; dropped",
                              header.csum_start, header.csum_offset, frame_len));
      return false;
    }
  }
  const uint64_t limit = gso != VIRTIO_NET_HDR_GSO_NONE ? kMaxGsoFrame : max_unsegmented_frame();
  if (frame_len < kEthernetHeader || frame_len > limit) {
    guest_error(tx_bad_length_, fmt::format("{}-byte frame (allowed: {} to {}); dropped", frame_len,
                                            kEthernetHeader, limit));
    return false;
  }
  return true;
}

void VirtioNet::transmit_one(Pair& p, const DescriptorChain& chain) {
  if (chain.writable_bytes() != 0) {
    guest_error(tx_bad_chain_,
                fmt::format("transmit buffer {} has device-writable parts; dropped", chain.head()));
    return;
  }
  virtio_net_hdr_v1 header{};
  if (chain.readable_bytes() < kHeaderSize ||
      !chain.read_at(0, std::span(reinterpret_cast<uint8_t*>(&header), kHeaderSize))) {
    guest_error(
        tx_short_header_,
        fmt::format("transmit buffer {} holds {} bytes, less than the {}-byte header; dropped",
                    chain.head(), chain.readable_bytes(), kHeaderSize));
    return;
  }
  const uint64_t frame_len = chain.readable_bytes() - kHeaderSize;
  if (!header_acceptable(header, frame_len)) return;
  // What we checked is what the host gets: the header goes from our copy, and only the flag
  // the host acts on is kept.
  header.flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
  header.num_buffers = 0;

  tx_iov_.clear();
  if (!chain.iovecs(false, tx_iov_)) {
    guest_error(tx_bad_chain_, "transmit buffer is not in guest RAM; dropped");
    return;
  }
  iov_drop_front(tx_iov_, kHeaderSize);
  if (tx_iov_.size() > kMaxTxSegments) {
    // Legal, but slow for the host: gather it once (bounded by the checked frame length).
    tx_linearized_.add();
    tx_copy_.resize(frame_len);
    if (!chain.read_at(kHeaderSize, tx_copy_)) {
      tx_bad_chain_.add();
      return;
    }
    tx_iov_.assign(1, iovec{tx_copy_.data(), tx_copy_.size()});
  }
  tx_iov_.insert(tx_iov_.begin(), iovec{&header, kHeaderSize});
  if (!p.backend->send(tx_iov_)) {
    tx_host_dropped_.add();
    return;
  }
  if (tx_frames_.get() < kFramesLogged) log::debug("{}: sent {} bytes", name(), frame_len);
  tx_frames_.add();
}

}  // namespace libvmm
