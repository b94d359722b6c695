// The vhost-user front-end device (see vhost_user.hpp).
#include "libvmm/virtio/vhost_user.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/net_control.hpp"

namespace libvmm {
namespace {

using vhost::Message;
using vhost::Request;

// What this front-end asks for among the back-end's protocol features.
constexpr uint64_t kWantedProtocol = feature_bit(vhost::kProtocolReplyAck) |
                                     feature_bit(vhost::kProtocolConfig) |
                                     feature_bit(vhost::kProtocolMq);
// struct virtio_net_config: max_virtqueue_pairs (le16) after the MAC and the status.
constexpr uint32_t kNetPairsOffset = 8;
// struct virtio_console_config: max_nr_ports (le32) after cols and rows.
constexpr uint32_t kConsolePortsOffset = 4;

Message vring_enable(uint32_t index, bool enabled) {
  return Message::with_state(Request::set_vring_enable, {index, enabled ? 1u : 0u});
}

}  // namespace

VhostUserDevice::VhostUserDevice(VhostUserOptions options, const GuestMemory& memory)
    : options_(std::move(options)),
      memory_(memory),
      peer_(fmt::format("{} backend at {}", options_.name, options_.socket)),
      queue_sizes_(options_.queue_sizes),
      started_(queue_sizes_.size(), false) {
  UniqueFd connected;
  try {
    connected = vhost::connect_unix(options_.socket);
  } catch (const vhost::VhostError& e) {
    throw UserError(fmt::format("{}: {}", peer_, e.what()));
  }
  negotiate(std::move(connected));
}

VhostUserDevice::VhostUserDevice(VhostUserOptions options, const GuestMemory& memory,
                                 UniqueFd connected)
    : options_(std::move(options)),
      memory_(memory),
      peer_(fmt::format("{} backend at {}", options_.name, options_.socket)),
      queue_sizes_(options_.queue_sizes),
      started_(queue_sizes_.size(), false) {
  negotiate(std::move(connected));
}

void VhostUserDevice::negotiate(UniqueFd connected) {
  try {
    channel_ = std::make_unique<vhost::Channel>(std::move(connected), peer_);
    send(Message::make(Request::set_owner), {}, false);
    backend_features_ = vhost::decode_reply_u64(request_reply(Message::make(Request::get_features)),
                                                Request::get_features);
    if (!(backend_features_ & feature_bit(VIRTIO_F_VERSION_1))) {
      throw vhost::VhostError("it does not offer VIRTIO_F_VERSION_1 (a legacy-only device)");
    }
    if (backend_features_ & vhost::kFeatureProtocolFeatures) {
      const uint64_t offered =
          vhost::decode_reply_u64(request_reply(Message::make(Request::get_protocol_features)),
                                  Request::get_protocol_features);
      // The back-end's channel carries only config changes: asked for where its config is.
      const bool config_from_backend = options_.config.empty() && options_.config_size > 0;
      const uint64_t wanted =
          kWantedProtocol | (config_from_backend ? feature_bit(vhost::kProtocolBackendReq) : 0);
      protocol_features_ = offered & wanted;
      // REPLY_ACK applies from the next message on, so this one goes without.
      send(Message::with_u64(Request::set_protocol_features, protocol_features_), {}, false);
      if (protocol_features_ & feature_bit(vhost::kProtocolBackendReq)) open_backend_channel();
    }
    // A network back-end counts queue pairs (as QEMU's front-end and DPDK's back-end do).
    const bool net = options_.net_queue_pairs > 0;
    std::optional<uint64_t> served;  // GET_QUEUE_NUM's answer
    if (protocol_features_ & feature_bit(vhost::kProtocolMq)) {
      served = vhost::decode_reply_u64(request_reply(Message::make(Request::get_queue_num)),
                                       Request::get_queue_num);
    }
    auto check_queues = [&] {
      const uint64_t needed = net ? options_.net_queue_pairs : queue_sizes_.size();
      if (served && *served < needed) {
        throw vhost::VhostError(fmt::format("it serves {} queue{}; the device needs {}", *served,
                                            net ? " pair(s)" : "(s)", needed));
      }
      if (!served && net && needed > 1) {
        throw vhost::VhostError(fmt::format(
            "it does not offer VHOST_USER_PROTOCOL_F_MQ, which {} queue pairs need", needed));
      }
    };
    check_queues();
    if (!options_.config.empty()) {
      config_ = options_.config;
    } else if (options_.config_size > 0) {
      if (!(protocol_features_ & feature_bit(vhost::kProtocolConfig))) {
        throw vhost::VhostError(
            "it does not offer VHOST_USER_PROTOCOL_F_CONFIG; the device needs its config space");
      }
      config_ = fetch_config(options_.config_size);
    }
    if (options_.queues_from_config) {
      queue_sizes_ =
          options_.queues_from_config(backend_features_ & options_.device_feature_mask, config_);
      started_.assign(queue_sizes_.size(), false);
      check_queues();
    }
  } catch (const vhost::VhostError& e) {
    throw UserError(located(e.what()));
  }
  apply_own_config();
  if (options_.net_queue_pairs > 1) {
    control_ = std::make_unique<NetControlServer>(options_.name, options_.net_queue_pairs,
                                                  [this](uint16_t n) { set_active_pairs(n); });
  }
  // Guest RAM the back-end cannot map (no file descriptor) would make every request fail.
  for (const GuestMapping& m : memory_.mappings()) {
    if (m.region->fd() < 0) {
      throw UserError(fmt::format("{}: guest memory region '{}' has no file descriptor to share",
                                  peer_, m.region->name()));
    }
  }
  log::debug("{}: features {:#x}, protocol features {:#x}", peer_, backend_features_,
             protocol_features_);
}

VhostUserDevice::~VhostUserDevice() {
  if (loop_ == nullptr) return;
  for (const vhost::Channel* watched : {channel_.get(), backend_channel_.get()}) {
    if (watched == nullptr) continue;
    try {
      loop_->remove(watched->fd());
    } catch (const std::exception&) {
      // The loop is going away too.
    }
  }
}

void VhostUserDevice::apply_own_config() {
  // The pairs are this side's to offer (the back-end may serve more).
  if (options_.net_queue_pairs > 1 && config_.size() >= kNetPairsOffset + 2) {
    config_[kNetPairsOffset] = static_cast<uint8_t>(options_.net_queue_pairs);
    config_[kNetPairsOffset + 1] = static_cast<uint8_t>(options_.net_queue_pairs >> 8);
  }
  // A console's ports are the ones its queues were made for when it connected (two per port and
  // the two control queues): a back-end announcing another count later would have the driver
  // look for queues this transport does not have.
  if (options_.device_id == VIRTIO_ID_CONSOLE && options_.queues_from_config &&
      queue_sizes_.size() > 2 && config_.size() >= kConsolePortsOffset + 4) {
    const auto ports = static_cast<uint32_t>((queue_sizes_.size() - 2) / 2);
    for (uint32_t i = 0; i < 4; ++i) {
      config_[kConsolePortsOffset + i] = static_cast<uint8_t>(ports >> (8 * i));
    }
  }
}

void VhostUserDevice::open_backend_channel() {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    throw vhost::VhostError(fmt::format("socketpair: {}", std::strerror(errno)));
  }
  UniqueFd ours(pair[0]);
  const UniqueFd theirs(pair[1]);
  // This end never blocks the loop: an acknowledgement the back-end does not read fails.
  if (::fcntl(ours.get(), F_SETFL, O_NONBLOCK) != 0) {
    throw vhost::VhostError(fmt::format("fcntl: {}", std::strerror(errno)));
  }
  const int fd = theirs.get();
  try {
    send(Message::make(Request::set_backend_req_fd), std::span(&fd, 1));
  } catch (const vhost::VhostError& e) {
    // A back-end that offered the channel and then refuses it only loses config changes.
    log::warn("{}; changes to its config space will not reach the guest", located(e.what()));
    return;
  }
  backend_channel_ =
      std::make_unique<vhost::Channel>(std::move(ours), peer_ + " (its requests)", true);
}

void VhostUserDevice::serve_backend_request(uint32_t events) {
  if (!backend_channel_) return;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    close_backend_channel(fmt::format("{} closed its request channel", peer_), true);
    return;
  }
  try {
    // Whole messages only (no waiting for the rest of one): the loop never waits on it.
    const Message request = backend_channel_->receive(0, false);
    const vhost::BackendRequest what = vhost::decode_backend_request(request);
    // Answered first: a back-end waiting for it may be what a vCPU's GET_CONFIG waits on.
    if ((request.flags & vhost::kFlagNeedReply) &&
        (protocol_features_ & feature_bit(vhost::kProtocolReplyAck))) {
      backend_channel_->send_without_waiting(Message::backend_ack(what, 0));
    }
  } catch (const vhost::VhostError& e) {
    close_backend_channel(e.what(), false);
    return;
  }
  config_stale_.store(true);
  // Without mutex_: a vCPU may hold it through a whole exchange with this back-end.
  VirtioTransport* transport = failed_.load() ? nullptr : transport_.load();
  log::debug("{}: its config space changed", peer_);
  // Before DRIVER_OK there is no driver to tell: its first read fetches the new one.
  if (transport != nullptr) transport->signal_config_change();
}

void VhostUserDevice::close_backend_channel(const std::string& why, bool quiet) {
  loop_->remove(backend_channel_->fd());
  backend_channel_.reset();
  if (quiet) {
    log::debug("{}", why);
  } else {
    log::error("{}; its config changes no longer reach the guest", located(why));
  }
}

void VhostUserDevice::refresh_config() {
  std::lock_guard lock(mutex_);
  if (failed_) return;
  const Exchange exchange(*this);
  try {
    config_ = fetch_config(static_cast<uint32_t>(config_.size()));
    apply_own_config();
  } catch (const vhost::VhostError& e) {
    fail_locked(located(fmt::format("reading its changed config space: {}", e.what())));
  }
}

void VhostUserDevice::watch(EventLoop& loop) {
  loop_ = &loop;
  if (control_) control_->set_loop(loop);
  const int fd = channel_->fd();
  // Only a hang-up: replies are read by the thread that asked (EPOLLIN is not watched).
  loop.add(fd, EPOLLRDHUP, [this, &loop, fd](uint32_t) {
    loop.remove(fd);
    VirtioTransport* transport = nullptr;
    {
      std::lock_guard lock(mutex_);
      if (failed_) return;
      failed_ = true;
      transport = transport_;
    }
    const std::string why = fmt::format("{} closed the connection", peer_);
    if (transport != nullptr) {
      transport->device_failed(for_transport(why));
    } else {
      log::error("{}; the device needs a reset", why);
    }
  });
  if (backend_channel_) {
    loop.add(backend_channel_->fd(), EPOLLIN | EPOLLRDHUP,
             [this](uint32_t events) { serve_backend_request(events); });
  }
}

uint64_t VhostUserDevice::device_features() const {
  const uint64_t own =
      control_ ? feature_bit(VIRTIO_NET_F_MQ) | feature_bit(VIRTIO_NET_F_CTRL_VQ) : 0;
  return (backend_features_ & options_.device_feature_mask) | own;
}

uint16_t VhostUserDevice::control_queue(uint64_t features) const {
  return net_control_queue_index(options_.net_queue_pairs, features);
}

void VhostUserDevice::queue_notify(uint16_t index, Virtqueue& queue) {
  // A notify that came as a register write (no ioeventfd caught it): the control queue is
  // answered here at once, the back-end's queues are kicked.
  if (control_ && control_->notify(index, queue)) return;
  kick(index);
}

uint64_t VhostUserDevice::transport_features() const {
  return backend_features_;
}

void VhostUserDevice::read_config(uint32_t offset, std::span<uint8_t> data) {
  // The transport checked the range against config_size().
  if (data.empty()) return;
  // The back-end said its config space changed: the driver reads the new one.
  if (config_stale_.exchange(false)) refresh_config();
  std::memcpy(data.data(), config_.data() + offset, data.size());
}

void VhostUserDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
  const bool writable =
      std::any_of(options_.writable_config.begin(), options_.writable_config.end(),
                  [&](const VhostUserOptions::ConfigField& field) {
                    return offset >= field.offset && data.size() <= field.size &&
                           offset - field.offset <= field.size - data.size();
                  });
  if (data.empty() || !writable) {
    dropped_config_writes_.warn(
        options_.name, fmt::format("{}-byte config write at offset {:#x} is not a field the "
                                   "driver may write; ignored",
                                   data.size(), offset));
    return;
  }
  if (!(protocol_features_ & feature_bit(vhost::kProtocolConfig))) {
    dropped_config_writes_.warn(
        options_.name, fmt::format("{}-byte config write at offset {:#x}: the back-end takes "
                                   "no config writes (no CONFIG protocol feature); ignored",
                                   data.size(), offset));
    return;
  }
  std::lock_guard lock(mutex_);
  if (failed_) return;
  const Exchange exchange(*this);
  try {
    vhost::ConfigSpace change;
    change.offset = offset;
    change.flags = 0;  // VHOST_SET_CONFIG_TYPE_FRONTEND: the driver's write, not a migration's
    change.data.assign(data.begin(), data.end());
    send(Message::with_config(Request::set_config, change));
  } catch (const vhost::VhostError& e) {
    fail_locked(located(fmt::format("writing its config space: {}", e.what())));
    return;
  }
  // What the driver reads back is the back-end's (it may take the write, or not).
  config_stale_.store(true);
}

void VhostUserDevice::send(Message message, std::span<const int> fds, bool ack) {
  const bool want_ack = ack && (protocol_features_ & feature_bit(vhost::kProtocolReplyAck));
  if (want_ack) message.flags |= vhost::kFlagNeedReply;
  const auto request = static_cast<Request>(message.request);
  try {
    channel_->send(message, fds, wait_ms());
    if (want_ack) vhost::decode_reply_ack(channel_->receive(wait_ms(), true), request);
  } catch (const vhost::VhostError& e) {
    throw_spent_exchange(e);
  }
}

VhostUserDevice::Exchange::Exchange(VhostUserDevice& device) : device_(device) {
  // Without a timeout (a negative one), no deadline either.
  if (device_.options_.timeout_ms >= 0) {
    device_.deadline_ =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(device_.options_.timeout_ms);
  }
}

VhostUserDevice::Exchange::~Exchange() {
  device_.deadline_.reset();
}

int VhostUserDevice::wait_ms() const {
  if (!deadline_) return options_.timeout_ms;
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(*deadline_ - std::chrono::steady_clock::now());
  // Spent: what needs no waiting still goes (room in the socket, a reply already there); the
  // rest fails at once, and throw_spent_exchange() says why.
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, options_.timeout_ms));
}

void VhostUserDevice::throw_spent_exchange(const vhost::VhostError& e) const {
  // The channel names the time it was given: what was left of the exchange's, not the timeout.
  if (deadline_ && std::chrono::steady_clock::now() >= *deadline_) {
    throw vhost::VhostError(
        fmt::format("{} (the whole exchange may take {} ms)", e.what(), options_.timeout_ms));
  }
  throw e;
}

std::vector<uint8_t> VhostUserDevice::fetch_config(uint32_t size) {
  vhost::ConfigSpace ask;
  ask.data.assign(size, 0);
  return vhost::decode_reply_config(request_reply(Message::with_config(Request::get_config, ask)),
                                    0, size)
      .data;
}

Message VhostUserDevice::request_reply(Message message) {
  try {
    channel_->send(message, {}, wait_ms());
    return channel_->receive(wait_ms(), true);
  } catch (const vhost::VhostError& e) {
    throw_spent_exchange(e);
  }
}

std::string VhostUserDevice::for_transport(const std::string& why) const {
  const std::string named = options_.name + " ";
  return why.starts_with(named) ? why.substr(named.size()) : why;
}

std::string VhostUserDevice::located(const std::string& message) const {
  // Errors of the socket itself already name the back-end.
  if (message.find(peer_) != std::string::npos) return message;
  return fmt::format("{}: {}", peer_, message);
}

void VhostUserDevice::disconnect_locked() {
  // The device is dead for good: the back-end learns it from the connection's end, on which it
  // stops serving the rings it was given (some may have started before a start failed, and no
  // GET_VRING_BASE will come) and lets go of guest memory.
  ::shutdown(channel_->fd(), SHUT_RDWR);
}

void VhostUserDevice::fail_locked(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  disconnect_locked();
  // The caller holds the transport's lock (a vCPU's register access), which device_failed()
  // takes: the loop tells it.
  if (transport_ != nullptr && loop_ != nullptr) {
    loop_->post([transport = transport_.load(), why = for_transport(why)] {
      transport->device_failed(why);
    });
  } else {
    log::error("{}", why);
  }
}

bool VhostUserDevice::start_queues(VirtioTransport& transport, uint64_t features,
                                   std::span<const Virtqueue> queues, std::string& why) {
  std::lock_guard lock(mutex_);
  const Exchange exchange(*this);
  transport_ = &transport;
  if (failed_) {
    why = for_transport(fmt::format("{} is gone; the device cannot start", peer_));
    return false;
  }
  if (eventfds_.size() != queues.size()) {
    why = "the queues have no eventfds (the machine did not wire them)";
    return false;
  }
  try {
    // The back-end learns what it offered (MQ and CTRL_VQ may be this side's alone).
    uint64_t acked = features & backend_features_;
    if (backend_features_ & vhost::kFeatureProtocolFeatures) {
      acked |= vhost::kFeatureProtocolFeatures;
    }
    send(Message::with_u64(Request::set_features, acked));

    // Guest memory the back-end may write: read-only maps stay out (it maps what it gets
    // writable), so a buffer there is a malformed request to it, not a write into the map.
    std::vector<vhost::MemRegion> regions;
    std::vector<int> fds;
    for (const GuestMapping& m : memory_.mappings()) {
      if (m.readonly) continue;
      if (regions.size() == vhost::kMaxRegions) {
        throw vhost::VhostError(
            fmt::format("guest memory has more than {} regions to share", vhost::kMaxRegions));
      }
      regions.push_back({m.gpa, m.size, reinterpret_cast<uint64_t>(m.host()), m.region_offset});
      fds.push_back(m.region->fd());
    }
    send(Message::with_mem_table(regions), fds);

    const uint16_t control = control_queue(features);
    active_pairs_ = 1;  // the driver starts with the first pair (virtIO 1.2 §5.1.6.5.5)
    // Without MQ a network device has one pair (and the control queue): nothing past them
    // goes to the back-end, whatever the driver set up. With MQ its pairs, never the control
    // queue's index, even where a driver took MQ without CTRL_VQ (which MQ requires): the
    // back-end serves only the pairs it said.
    const size_t layout = !control_ ? queues.size()
                          : !(features & feature_bit(VIRTIO_NET_F_MQ))
                              ? 2
                              : 2 * options_.net_queue_pairs;
    for (uint32_t i = 0; i < layout; ++i) {
      const Virtqueue& q = queues[i];
      if (!q.ready() || i == control) continue;
      // Host addresses of the rings, as the memory table's user addresses give them.
      const auto rings = ring_addresses(memory_, q);
      if (!rings) {
        throw vhost::VhostError(
            fmt::format("queue {}: a ring lies outside writable guest memory or spans regions", i));
      }
      send(Message::with_state(Request::set_vring_num, {i, q.size()}));
      send(Message::with_state(Request::set_vring_base, {i, 0}));
      vhost::VringAddr addr;
      addr.index = i;
      addr.desc = rings->desc;
      addr.avail = rings->avail;
      addr.used = rings->used;
      send(Message::with_addr(addr));
      const int kick = eventfds_[i].kick;
      const int call = eventfds_[i].call;
      send(Message::with_u64(Request::set_vring_call, i), std::span(&call, 1));
      send(Message::with_u64(Request::set_vring_kick, i), std::span(&kick, 1));
      started_[i] = true;
      if (backend_features_ & vhost::kFeatureProtocolFeatures) {
        // A network device's other pairs wait, disabled, for the driver's VQ_PAIRS_SET.
        send_enable(i, !control_ || i / 2 < active_pairs_);
      }
    }
    if (control < queues.size() && queues[control].ready()) {
      control_->start(transport, control, eventfds_[control].kick,
                      (features & feature_bit(VIRTIO_NET_F_MQ)) != 0);
      kick(control);
    }
    // Buffers the driver made available before the back-end watched the kick: one kick
    // each, so none waits for the driver's next notify.
    for (uint32_t i = 0; i < queues.size(); ++i) {
      if (started_[i]) kick(static_cast<uint16_t>(i));
    }
    log::debug("{}: started, features {:#x}", peer_, acked);
    return true;
  } catch (const vhost::VhostError& e) {
    why = for_transport(located(e.what()));
    failed_ = true;  // the transport logs why
    disconnect_locked();
    return false;
  }
}

void VhostUserDevice::stop_queue(uint16_t index) {
  // Lock held. GET_VRING_BASE stops the ring; its reply says the back-end is done with it.
  if (index >= started_.size() || !started_[index] || failed_) return;
  started_[index] = false;
  try {
    vhost::decode_reply_state(
        request_reply(Message::with_state(Request::get_vring_base, {index, 0})),
        Request::get_vring_base, index);
  } catch (const vhost::VhostError& e) {
    fail_locked(located(fmt::format("stopping queue {}: {}", index, e.what())));
  }
}

void VhostUserDevice::reset() {
  std::lock_guard lock(mutex_);
  const Exchange exchange(*this);
  if (control_) control_->stop();
  for (uint16_t i = 0; i < started_.size(); ++i) stop_queue(i);
  active_pairs_ = 1;
  transport_ = nullptr;
}

void VhostUserDevice::queue_reset(uint16_t index) {
  std::lock_guard lock(mutex_);
  const Exchange exchange(*this);
  if (control_ && index == control_->served()) control_->stop();
  stop_queue(index);
}

void VhostUserDevice::send_enable(uint32_t index, bool enabled) {
  send(vring_enable(index, enabled));
}

void VhostUserDevice::set_active_pairs(uint16_t n) {
  std::lock_guard lock(mutex_);
  const uint16_t old = active_pairs_;
  if (n == old || failed_) return;
  active_pairs_ = n;
  log::debug("{}: {} of {} queue pairs in use", options_.name, n, options_.net_queue_pairs);
  // Without waiting, for acknowledgements or for room in the socket: this runs on the event
  // loop (or a vCPU), which must not wait on another process. A back-end that refuses one
  // breaks its own rings; one that stops reading its socket fails the device.
  try {
    for (uint32_t i = 2u * std::min(n, old); i < 2u * std::max(n, old); ++i) {
      if (i < started_.size() && started_[i]) {
        channel_->send_without_waiting(vring_enable(i, n > old));
      }
    }
  } catch (const vhost::VhostError& e) {
    fail_locked(located(fmt::format("enabling queue pairs: {}", e.what())));
  }
}

}  // namespace libvmm
