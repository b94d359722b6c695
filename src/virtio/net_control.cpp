#include "libvmm/virtio/net_control.hpp"

#include <fmt/format.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <optional>
#include <span>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/virtio_device.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {
namespace {

// The pair count a VQ_PAIRS_SET command in `chain` asks for, or nullopt with `why` when the
// chain is malformed, the command is another one, or the count is out of range or MQ was not
// negotiated.
std::optional<uint16_t> parse_vq_pairs_set(const DescriptorChain& chain, bool mq_negotiated,
                                           size_t max_pairs, std::string& why) {
  virtio_net_ctrl_hdr header{};
  if (chain.writable_bytes() < 1 || chain.readable_bytes() < sizeof(header) ||
      !chain.read_at(0, std::span(reinterpret_cast<uint8_t*>(&header), sizeof(header)))) {
    why = fmt::format(
        "control command {} has {} readable and {} writable bytes (needs a 2-byte header and "
        "a status byte)",
        chain.head(), chain.readable_bytes(), chain.writable_bytes());
    return std::nullopt;
  }
  if (header.class_ != VIRTIO_NET_CTRL_MQ || header.cmd != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) {
    // Not offered (CTRL_RX, CTRL_VLAN, ...): answered with an error, as the spec asks.
    why = fmt::format("control command class {} command {} is not supported", header.class_,
                      header.cmd);
    return std::nullopt;
  }
  virtio_net_ctrl_mq mq{};
  if (chain.readable_bytes() < sizeof(header) + sizeof(mq) ||
      !chain.read_at(sizeof(header), std::span(reinterpret_cast<uint8_t*>(&mq), sizeof(mq)))) {
    why = "VQ_PAIRS_SET without its 2-byte count";
    return std::nullopt;
  }
  if (!mq_negotiated || mq.virtqueue_pairs < 1 || mq.virtqueue_pairs > max_pairs) {
    why = fmt::format("VQ_PAIRS_SET {} (the device has {} pairs{})", mq.virtqueue_pairs, max_pairs,
                      mq_negotiated ? "" : ", MQ not negotiated");
    return std::nullopt;
  }
  return mq.virtqueue_pairs;
}

}  // namespace

bool answer_net_control_queue(Virtqueue& queue, const NetControlTarget& target) {
  bool pushed = false;
  // Each chain is taken once (commands are tiny, the driver waits for each one's answer).
  for (uint32_t i = 0; i < queue.size(); ++i) {
    auto chain = queue.pop();
    if (!chain) break;
    std::string why;
    const auto pairs = parse_vq_pairs_set(*chain, target.mq_negotiated, target.max_pairs, why);
    if (pairs) {
      target.set_pairs(*pairs);
    } else {
      target.refuse(why);
    }
    const uint8_t status = pairs ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
    // The status byte is the last writable byte (the driver's `in` buffer).
    const bool ok = chain->writable_bytes() >= 1 &&
                    chain->write_at(chain->writable_bytes() - 1, std::span(&status, 1));
    queue.push(chain->head(), ok ? 1 : 0);
    pushed = true;
  }
  return pushed;
}

uint32_t net_config_size() {
  return offsetof(virtio_net_config, mtu) + sizeof(uint16_t);
}

void read_net_config(std::span<const uint8_t, 6> mac, size_t pairs, uint16_t mtu, bool link_up,
                     uint32_t offset, std::span<uint8_t> data) {
  virtio_net_config config{};
  std::memcpy(config.mac, mac.data(), mac.size());
  config.status = link_up ? VIRTIO_NET_S_LINK_UP : 0;
  config.max_virtqueue_pairs = static_cast<uint16_t>(pairs);
  config.mtu = mtu;
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config) + offset, data.size());
}

std::span<const FeatureRequirement> net_feature_requirements() {
  constexpr uint64_t kCsum = feature_bit(VIRTIO_NET_F_CSUM);
  constexpr uint64_t kGuestCsum = feature_bit(VIRTIO_NET_F_GUEST_CSUM);
  constexpr uint64_t kHostTso =
      feature_bit(VIRTIO_NET_F_HOST_TSO4) | feature_bit(VIRTIO_NET_F_HOST_TSO6);
  constexpr uint64_t kGuestTso =
      feature_bit(VIRTIO_NET_F_GUEST_TSO4) | feature_bit(VIRTIO_NET_F_GUEST_TSO6);
  constexpr uint64_t kCtrlVq = feature_bit(VIRTIO_NET_F_CTRL_VQ);
  static constexpr FeatureRequirement kRequirements[] = {
      {VIRTIO_NET_F_GUEST_TSO4, kGuestCsum},
      {VIRTIO_NET_F_GUEST_TSO6, kGuestCsum},
      {VIRTIO_NET_F_GUEST_ECN, kGuestTso},
      {VIRTIO_NET_F_GUEST_UFO, kGuestCsum},
      {VIRTIO_NET_F_HOST_TSO4, kCsum},
      {VIRTIO_NET_F_HOST_TSO6, kCsum},
      {VIRTIO_NET_F_HOST_ECN, kHostTso},
      {VIRTIO_NET_F_HOST_UFO, kCsum},
      {VIRTIO_NET_F_CTRL_RX, kCtrlVq},
      {VIRTIO_NET_F_CTRL_VLAN, kCtrlVq},
      {VIRTIO_NET_F_GUEST_ANNOUNCE, kCtrlVq},
      {VIRTIO_NET_F_MQ, kCtrlVq},
      {VIRTIO_NET_F_CTRL_MAC_ADDR, kCtrlVq},
      {VIRTIO_NET_F_RSC_EXT, kHostTso},
      {VIRTIO_NET_F_RSS, kCtrlVq},
  };
  return kRequirements;
}

uint16_t net_control_queue_index(size_t pairs, uint64_t features) {
  const auto has = [features](unsigned bit) { return ((features >> bit) & 1) != 0; };
  if (pairs <= 1 || !has(VIRTIO_NET_F_CTRL_VQ)) return NetControlServer::kNoQueue;
  return has(VIRTIO_NET_F_MQ) ? static_cast<uint16_t>(2 * pairs) : 2;
}

// ---------------------------------------------------------------------------------------------
// NetControlServer

NetControlServer::NetControlServer(std::string name, size_t max_pairs,
                                   std::function<void(uint16_t)> set_pairs)
    : name_(std::move(name)), max_pairs_(max_pairs), set_pairs_(std::move(set_pairs)) {}

NetControlServer::~NetControlServer() {
  if (loop_ == nullptr || watched_ < 0) return;
  try {
    loop_->remove(watched_);
  } catch (const std::exception&) {
    // The loop is going away too.
  }
}

void NetControlServer::set_loop(EventLoop& loop) {
  std::lock_guard lock(mutex_);
  loop_ = &loop;
}

void NetControlServer::start(VirtioTransport& transport, uint16_t index, int kick, bool mq) {
  std::lock_guard lock(mutex_);
  transport_ = &transport;
  index_ = index;
  mq_ = mq;
  if (loop_ != nullptr) loop_->post([this, kick] { watch(kick); });
}

void NetControlServer::stop() {
  std::lock_guard lock(mutex_);
  if (index_ == kNoQueue) return;
  index_ = kNoQueue;
  transport_ = nullptr;
  if (loop_ != nullptr) loop_->post([this] { watch(-1); });
}

uint16_t NetControlServer::served() const {
  std::lock_guard lock(mutex_);
  return index_;
}

bool NetControlServer::notify(uint16_t index, Virtqueue& queue) {
  if (index == kNoQueue || index != served()) return false;
  serve(index, queue);
  return true;
}

void NetControlServer::watch(int kick) {
  if (watched_ == kick) return;
  if (watched_ >= 0) loop_->remove(watched_);
  watched_ = kick;
  if (kick >= 0) loop_->add(kick, EPOLLIN, [this](uint32_t) { notified(); });
}

void NetControlServer::notified() {
  uint64_t count = 0;
  if (::read(watched_, &count, sizeof count) != sizeof count) return;
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    transport = transport_;
  }
  if (transport == nullptr) return;
  transport->with_queues([this](std::span<Virtqueue> queues) {
    // Under the transport's lock nothing starts or stops: the layout is the current one.
    const uint16_t index = served();
    if (index < queues.size()) serve(index, queues[index]);
  });
}

void NetControlServer::serve(uint16_t index, Virtqueue& queue) {
  VirtioTransport* transport = nullptr;
  bool mq = false;
  {
    std::lock_guard lock(mutex_);
    transport = transport_;
    mq = mq_;
  }
  const NetControlTarget target{mq, max_pairs_, set_pairs_,
                                [this](const std::string& why) { guest_error(why); }};
  if (answer_net_control_queue(queue, target) && transport != nullptr) {
    transport->signal_used(index);
  }
}

void NetControlServer::guest_error(const std::string& message) {
  guest_errors_.warn(name_, message);
}

}  // namespace libvmm
