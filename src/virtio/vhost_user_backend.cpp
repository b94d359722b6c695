// The vhost-user back-end (see vhost_user_backend.hpp).
#include "libvmm/virtio/vhost_user_backend.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/virtio_ids.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "device_status.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

using vhost::DecodedRequest;
using vhost::Message;
using vhost::Request;

constexpr uint32_t kVringFlagLog = 0x1;  // VHOST_VRING_F_LOG: dirty logging, not offered
// Regions are mapped in whole 2 MiB units where the descriptor holds them (hugetlb memfds can
// only be mapped so).
constexpr uint64_t kMapUnit = 2 * MiB;
// Ring sizes every queue takes, whatever the device's own maximum (QEMU's VIRTQUEUE_MAX_SIZE).
constexpr uint16_t kMinRingMax = 1024;

bool has_own_reply(Request request) {
  switch (request) {
    case Request::get_features:
    case Request::get_protocol_features:
    case Request::get_queue_num:
    case Request::get_max_mem_slots:
    case Request::get_vring_base:
    case Request::get_config:
      return true;
    default:
      return false;
  }
}

void make_nonblocking(int fd, const char* what) {
  // A hostile front-end could pass a descriptor on which a read or write would block (a pipe):
  // neither the loop nor the device's I/O thread may wait on it.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw vhost::VhostError(
        fmt::format("the {} descriptor is unusable: {}", what, std::strerror(errno)));
  }
}

}  // namespace

uint64_t VhostUserBackend::offered_protocol_features() {
  return feature_bit(vhost::kProtocolMq) | feature_bit(vhost::kProtocolReplyAck) |
         feature_bit(vhost::kProtocolBackendReq) | feature_bit(vhost::kProtocolConfig) |
         feature_bit(vhost::kProtocolResetDevice);
}

VhostUserBackend::VhostUserBackend(VirtioDevice& device, EventLoop& loop, UniqueFd connected,
                                   std::string peer, OnClose on_close, int shrink_notice)
    : device_(device),
      loop_(loop),
      channel_(std::move(connected), peer),
      peer_(std::move(peer)),
      on_close_(std::move(on_close)),
      // What a transport offers for the device (its bits, the rings' features), and the
      // vhost-user protocol's.
      offered_(libvmm::offered_features(device) | vhost::kFeatureProtocolFeatures) {
  const std::vector<uint16_t> sizes = device_.queue_max_sizes();
  queues_.reserve(sizes.size());
  // The front-end chooses the ring size (its driver's), which may exceed the device's own
  // QueueNumMax: QEMU's virtio-mmio offers drivers 1024 entries. Chains stay limited to the
  // ring's size, and each device checks its requests against what it advertises.
  for (const uint16_t size : sizes) {
    queues_.emplace_back(memory_, std::max(size, kMinRingMax));
  }
  rings_.resize(sizes.size());
  if (shrink_notice < 0) {
    own_shrunk_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!own_shrunk_) throw_errno("eventfd");
    shrink_notice = own_shrunk_.get();
  }
  shrunk_ = shrink_notice;
  uint64_t n = 0;
  [[maybe_unused]] const ssize_t stale = ::read(shrunk_, &n, sizeof n);  // an earlier peer's
  loop_.add(channel_.fd(), EPOLLIN | EPOLLRDHUP, [this](uint32_t) { on_readable(); });
  loop_.add(shrunk_, EPOLLIN, [this](uint32_t) {
    uint64_t count = 0;
    [[maybe_unused]] const ssize_t got = ::read(shrunk_, &count, sizeof count);
    close(
        "the front-end shrank the guest memory it shared (a SIGBUS in a mapped region, caught: "
        "the region reads as zeros now)");
  });
}

VhostUserBackend::~VhostUserBackend() {
  // Rings stop and their kicks leave the loop whether or not the connection was closed first:
  // nothing of this object may stay with the device or the loop.
  try {
    stop_all();
    if (!closed_) {
      loop_.remove(channel_.fd());
      loop_.remove(shrunk_);
    }
  } catch (const std::exception& e) {
    log::debug("{}: at teardown: {}", peer_, e.what());
  }
  closed_ = true;
}

// ---------------------------------------------------------------------------------------------
// The device's transport

void VhostUserBackend::signal_used(uint16_t index) {
  // Lock held.
  if (index >= queues_.size() || !queues_[index].needs_notification()) return;
  const int call = rings_[index].call.get();
  if (call < 0) return;  // the front-end polls (or gave no call descriptor yet)
  const uint64_t one = 1;
  if (::write(call, &one, sizeof one) != sizeof one) {
    log::debug("{}: queue {}: the call descriptor did not take the interrupt", peer_, index);
  }
}

void VhostUserBackend::signal_config_change() {
  // Any thread: the channel is the loop's.
  std::weak_ptr<bool> alive = alive_;
  loop_.post([this, alive] {
    if (!alive.expired()) notify_config_change();
  });
}

void VhostUserBackend::notify_config_change() {
  if (closed_) return;
  if (!requests_) {
    if (!requests_lost_) {
      log::warn("{}: {} changed its config space; the front-end gave no channel to be told on",
                peer_, device_.name());
    }
    return;
  }
  // A front-end may look at a change only once its device runs (QEMU's vhost-user-blk ignores
  // one before): a change before that is sent again when the first ring starts.
  if (!active_) resend_at_start_ = true;
  Message change;
  change.request = static_cast<uint32_t>(vhost::BackendRequest::config_change_msg);
  try {
    // No reply asked for, and no waiting: a front-end that stopped reading loses the message
    // (and later ones), not the loop.
    requests_->send_without_waiting(change);
    log::debug("{}: told it {}'s config space changed (CONFIG_CHANGE_MSG)", peer_, device_.name());
  } catch (const vhost::VhostError& e) {
    log::warn("{}; its config changes are no longer sent", e.what());  // names the channel
    requests_.reset();
    requests_lost_ = true;
  }
}

bool VhostUserBackend::with_queues(const std::function<void(std::span<Virtqueue>)>& fn) {
  std::lock_guard lock(mutex_);
  if (!active_) return false;
  fn(queues_);
  report_broken_locked();  // a device's I/O thread found a malformed chain
  return true;
}

void VhostUserBackend::report_broken_locked() {
  for (size_t i = 0; i < queues_.size(); ++i) {
    Ring& ring = rings_[i];
    if (!queues_[i].broken() || ring.error_reported) continue;
    ring.error_reported = true;
    log::warn("{}: {} queue {}: {}", peer_, device_.name(), i, queues_[i].error());
    if (ring.err) {
      const uint64_t one = 1;
      static_cast<void>(::write(ring.err.get(), &one, sizeof one));
    }
  }
}

void VhostUserBackend::device_failed(const std::string& why) {
  log::error("{}: {}: {}", peer_, device_.name(), why);
}

// ---------------------------------------------------------------------------------------------
// Messages

void VhostUserBackend::on_readable() {
  if (closed_) return;
  try {
    char byte;
    const ssize_t n = ::recv(channel_.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) {
      close("");  // an orderly end
      return;
    }
    heard_from_ = true;
    handle(channel_.receive(kTimeoutMs, false));
  } catch (const std::exception& e) {
    close(e.what());
  }
}

void VhostUserBackend::reply(Message message) {
  message.flags = vhost::kVersion | vhost::kFlagReply;
  channel_.send(message, {}, kTimeoutMs);
}

void VhostUserBackend::refuse(const std::string& why) {
  throw vhost::VhostError(why);
}

void VhostUserBackend::handle(const Message& message) {
  DecodedRequest d = vhost::decode_request(message, static_cast<uint32_t>(queues_.size()));
  const std::string name = vhost::request_name(message.request);
  log::debug("{}: {}", peer_, name);
  auto ring_of = [&](uint32_t index) -> Ring& { return rings_[index]; };
  switch (d.request) {
    case Request::get_features:
      reply(Message::with_u64(d.request, offered_));
      break;
    case Request::set_features:
      set_features(d.u64);
      break;
    case Request::set_owner:
      break;
    case Request::reset_owner:
    case Request::reset_device:
      stop_all();
      for (Ring& ring : rings_) ring = Ring{};
      features_ = 0;
      has_features_ = false;
      break;
    case Request::get_protocol_features:
      reply(Message::with_u64(d.request, offered_protocol_features()));
      break;
    case Request::set_protocol_features:
      if (d.u64 & ~offered_protocol_features()) {
        refuse(fmt::format("SET_PROTOCOL_FEATURES with {:#x}, which was not offered ({:#x})", d.u64,
                           offered_protocol_features()));
      }
      protocol_ = d.u64;
      break;
    case Request::get_queue_num: {
      // A network device counts its queue pairs (QEMU's front-end compares its queues=N with
      // it); the control queue is the front-end's.
      const bool net = device_.device_id() == VIRTIO_ID_NET;
      reply(Message::with_u64(d.request, net ? queues_.size() / 2 : queues_.size()));
      break;
    }
    case Request::get_max_mem_slots:
      reply(Message::with_u64(d.request, vhost::kMaxRegions));
      break;
    case Request::set_mem_table:
      set_mem_table(d, message);
      break;
    case Request::set_vring_num: {
      Ring& ring = ring_of(d.state.index);
      const uint16_t max = queues_[d.state.index].max_size();
      if (ring.running)
        refuse(fmt::format("SET_VRING_NUM for queue {} while it runs", d.state.index));
      if (d.state.num == 0 || d.state.num > max || !std::has_single_bit(d.state.num)) {
        refuse(fmt::format("SET_VRING_NUM {} for queue {} (a power of two up to {})", d.state.num,
                           d.state.index, max));
      }
      ring.num = static_cast<uint16_t>(d.state.num);
      ring.has_num = true;
      break;
    }
    case Request::set_vring_addr: {
      Ring& ring = ring_of(d.addr.index);
      if (ring.running)
        refuse(fmt::format("SET_VRING_ADDR for queue {} while it runs", d.addr.index));
      if (d.addr.flags & kVringFlagLog) {
        refuse(fmt::format("SET_VRING_ADDR for queue {} asks for dirty logging (not offered)",
                           d.addr.index));
      }
      if (d.addr.flags & ~kVringFlagLog) {
        refuse(fmt::format("SET_VRING_ADDR with unknown flags {:#x}", d.addr.flags));
      }
      ring.addr = d.addr;
      ring.has_addr = true;
      break;
    }
    case Request::set_vring_base: {
      Ring& ring = ring_of(d.state.index);
      if (ring.running)
        refuse(fmt::format("SET_VRING_BASE for queue {} while it runs", d.state.index));
      if (d.state.num > UINT16_MAX) {
        refuse(fmt::format("SET_VRING_BASE {} for queue {} (a split ring's index is 16 bits)",
                           d.state.num, d.state.index));
      }
      ring.base = static_cast<uint16_t>(d.state.num);
      break;
    }
    case Request::get_vring_base: {
      const uint32_t index = d.state.index;
      Ring& ring = ring_of(index);
      stop_ring(index);   // keeps where it stopped in ring.base
      ring.kick.reset();  // stopped: a new SET_VRING_KICK starts it again
      reply(Message::with_state(d.request, {index, ring.base}));
      break;
    }
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err:
      set_vring_fd(d, message);
      break;
    case Request::set_vring_enable: {
      if (d.state.num > 1) {
        refuse(
            fmt::format("SET_VRING_ENABLE {} for queue {} (0 or 1)", d.state.num, d.state.index));
      }
      ring_of(d.state.index).enabled = d.state.num == 1;
      update_ring(d.state.index);
      break;
    }
    case Request::get_config:
    case Request::set_config: {
      if (!(protocol_ & feature_bit(vhost::kProtocolConfig))) {
        refuse(fmt::format("{} without VHOST_USER_PROTOCOL_F_CONFIG negotiated", name));
      }
      // The part inside the device's config space; the rest reads as zeroes, writes go nowhere.
      const uint32_t size = static_cast<uint32_t>(d.config.data.size());
      const uint32_t have = device_.config_size();
      const uint32_t inside = d.config.offset >= have ? 0 : std::min(size, have - d.config.offset);
      std::lock_guard lock(mutex_);
      if (d.request == Request::get_config) {
        vhost::ConfigSpace answer = d.config;
        std::fill(answer.data.begin(), answer.data.end(), 0);
        if (inside > 0) device_.read_config(d.config.offset, std::span(answer.data).first(inside));
        reply(Message::with_config(d.request, answer));
      } else if (inside > 0) {
        device_.write_config(d.config.offset, std::span(d.config.data).first(inside));
      }
      break;
    }
    case Request::set_backend_req_fd: {
      if (!(protocol_ & feature_bit(vhost::kProtocolBackendReq))) {
        refuse(fmt::format("{} without VHOST_USER_PROTOCOL_F_BACKEND_REQ negotiated", name));
      }
      UniqueFd fd(::fcntl(message.fds[0].get(), F_DUPFD_CLOEXEC, 0));
      if (!fd) refuse(fmt::format("{}: {}", name, std::strerror(errno)));
      make_nonblocking(fd.get(), "back-end request channel");
      requests_ = std::make_unique<vhost::Channel>(std::move(fd), peer_ + " (our requests)", true);
      requests_lost_ = false;
      break;
    }
    case Request::set_log_base:  // decode_request() refused these two already
    case Request::set_log_fd:
      refuse(fmt::format("unsupported request {}", name));
  }
  if (d.need_reply && (protocol_ & feature_bit(vhost::kProtocolReplyAck)) &&
      !has_own_reply(d.request)) {
    reply(Message::with_u64(d.request, 0));
  }
}

void VhostUserBackend::set_features(uint64_t features) {
  if (features & ~offered_) {
    refuse(fmt::format("SET_FEATURES with {:#x}, which was not offered (offered {:#x})", features,
                       offered_));
  }
  const bool running =
      std::any_of(rings_.begin(), rings_.end(), [](const Ring& ring) { return ring.running; });
  if (running && features != features_) {
    refuse(fmt::format("SET_FEATURES {:#x} while queues run with {:#x}", features, features_));
  }
  features_ = features;
  has_features_ = true;
}

void VhostUserBackend::set_mem_table(const DecodedRequest& request, const Message& message) {
  // decode_request() checked the count, the descriptors and that no two regions overlap.
  vhost::RegionTable table(request.regions);
  GuestMemory fresh;
  for (size_t i = 0; i < request.regions.size(); ++i) {
    const vhost::MemRegion& r = request.regions[i];
    const int fd = message.fds[i].get();
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      refuse(fmt::format("memory region {}: its descriptor: {}", i, std::strerror(errno)));
    }
    // The region must lie inside what the descriptor holds: a mapping past its end would fault
    // (SIGBUS) on first touch. RegionTable checked that offset + size does not wrap.
    const uint64_t end = r.mmap_offset + r.size;
    const uint64_t held = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (!S_ISREG(st.st_mode) || held < end) {
      refuse(fmt::format(
          "memory region {} ({:#x} bytes at offset {:#x} of its descriptor) is not inside the "
          "descriptor, a {} of {:#x} bytes",
          i, r.size, r.mmap_offset, S_ISREG(st.st_mode) ? "file" : "non-file", held));
    }
    const uint64_t length = std::min(held, (end + kMapUnit - 1) / kMapUnit * kMapUnit);
    const int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) refuse(fmt::format("memory region {}: {}", i, std::strerror(errno)));
    std::shared_ptr<MemoryRegion> region;
    try {
      region = MemoryRegion::from_fd(fmt::format("front-end region {}", i), UniqueFd(own), length);
      // The front-end may shrink the file later: then a SIGBUS, caught, closes the connection.
      region->guard_against_shrinking(shrunk_);
      fresh.map(r.gpa, region, r.mmap_offset, r.size);
    } catch (const std::exception& e) {
      refuse(fmt::format("memory region {}: {}", i, e.what()));
    }
  }
  // Rings that run keep running on the new table, at the same guest-physical addresses.
  for (size_t i = 0; i < rings_.size(); ++i) {
    const Ring& ring = rings_[i];
    if (!ring.running) continue;
    const Virtqueue& q = queues_[i];
    const vhost::VringAddr now = table.rings_to_gpa(ring.addr, ring.num);
    if (now.desc != q.desc_addr() || now.avail != q.avail_addr() || now.used != q.used_addr()) {
      refuse(fmt::format("SET_MEM_TABLE moves the rings of queue {}, which runs", i));
    }
  }
  device_.pause_io();
  {
    std::lock_guard lock(mutex_);
    memory_ = std::move(fresh);
    regions_ = std::move(table);
    has_memory_ = true;
  }
  device_.resume_io();
  log::debug("{}: memory table of {} region(s)", peer_, request.regions.size());
  for (uint32_t i = 0; i < rings_.size(); ++i) update_ring(i);
}

void VhostUserBackend::set_vring_fd(const DecodedRequest& request, const Message& message) {
  const uint32_t index = request.queue_index();
  Ring& ring = rings_[index];
  UniqueFd fd;
  if (request.has_fd()) {
    fd = UniqueFd(::fcntl(message.fds[0].get(), F_DUPFD_CLOEXEC, 0));
    if (!fd) refuse(fmt::format("queue {}: {}", index, std::strerror(errno)));
  }
  switch (request.request) {
    case Request::set_vring_kick:
      if (!fd) {
        refuse(
            fmt::format("SET_VRING_KICK for queue {} without a descriptor (polling is not "
                        "supported)",
                        index));
      }
      make_nonblocking(fd.get(), "kick");
      stop_ring(index);  // a new kick descriptor replaces the old one
      ring.kick = std::move(fd);
      // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled once started.
      if (!(features_ & vhost::kFeatureProtocolFeatures)) ring.enabled = true;
      update_ring(index);
      break;
    case Request::set_vring_call: {
      if (fd) make_nonblocking(fd.get(), "call");
      std::lock_guard lock(mutex_);
      ring.call = std::move(fd);
      break;
    }
    default: {
      if (fd) make_nonblocking(fd.get(), "err");
      std::lock_guard lock(mutex_);
      ring.err = std::move(fd);
      break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rings

void VhostUserBackend::update_ring(uint32_t index) {
  // Closed while this message was handled (an earlier ring's kick found hung up): nothing may
  // start again, since the destructor of a closed connection has nothing left to stop.
  if (closed_) return;
  Ring& ring = rings_[index];
  const bool ready = ring.kick && ring.enabled && has_memory_ && ring.has_num && ring.has_addr;
  if (ready && !ring.running) {
    {
      std::lock_guard lock(mutex_);
      start_ring(index);
    }
    loop_.add(ring.kick.get(), EPOLLIN, [this, index](uint32_t) { on_kick(index); });
    on_kick(index);  // buffers made available before the ring started
  } else if (!ready && ring.running) {
    stop_ring(index);
  }
}

void VhostUserBackend::start_ring(uint32_t index) {
  Ring& ring = rings_[index];
  Virtqueue& q = queues_[index];
  const vhost::VringAddr gpa = regions_.rings_to_gpa(ring.addr, ring.num);
  q.reset();
  q.set_size(ring.num);
  q.set_desc_addr(gpa.desc);
  q.set_avail_addr(gpa.avail);
  q.set_used_addr(gpa.used);
  std::string error;
  if (!q.enable(features_, error)) refuse(fmt::format("queue {}: {}", index, error));
  if (ring.base != 0 && !q.resume_at(ring.base)) {
    refuse(fmt::format("queue {}: its used ring cannot be read: {}", index, q.error()));
  }
  ring.running = true;
  ring.error_reported = false;
  if (!active_) {
    device_.activate(*this, features_ & ~vhost::kFeatureProtocolFeatures);
    active_ = true;
    if (resend_at_start_) {
      resend_at_start_ = false;
      signal_config_change();  // after this message, on the loop
    }
  }
  device_.queue_enabled(static_cast<uint16_t>(index), true);
  log::debug("{}: queue {} runs ({} entries, from available index {})", peer_, index, ring.num,
             ring.base);
}

void VhostUserBackend::stop_ring(uint32_t index) {
  Ring& ring = rings_[index];
  if (!ring.running) return;
  loop_.remove(ring.kick.get());
  device_.pause_io();
  {
    std::lock_guard lock(mutex_);
    ring.running = false;
    // Where the ring stopped, once the device's I/O is paused (nothing in flight): GET_VRING_BASE
    // answers it, and the ring resumes from it if started again without a new SET_VRING_BASE.
    // Past every chain taken: those the device still holds go back to the driver first.
    device_.return_held(static_cast<uint16_t>(index), queues_[index]);
    ring.base = queues_[index].next_avail();
    device_.queue_enabled(static_cast<uint16_t>(index), false);
    device_.queue_reset(static_cast<uint16_t>(index));
    queues_[index].reset();
    const bool any =
        std::any_of(rings_.begin(), rings_.end(), [](const Ring& r) { return r.running; });
    if (!any && active_) {
      device_.reset();
      active_ = false;
    }
  }
  device_.resume_io();
}

void VhostUserBackend::stop_all() {
  for (uint32_t i = 0; i < rings_.size(); ++i) stop_ring(i);
}

void VhostUserBackend::on_kick(uint32_t index) {
  Ring& ring = rings_[index];
  uint64_t count = 0;
  const ssize_t n = ::read(ring.kick.get(), &count, sizeof count);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    close(fmt::format("queue {}: the kick descriptor {}", index,
                      n == 0 ? "was closed" : std::strerror(errno)));
    return;
  }
  serve_ring(index);
}

void VhostUserBackend::serve_ring(uint32_t index) {
  std::lock_guard lock(mutex_);
  if (!rings_[index].running) return;
  device_.queue_notify(static_cast<uint16_t>(index), queues_[index]);
  report_broken_locked();
}

bool VhostUserBackend::renotify(uint16_t index) {
  // Lock held. The ring's next round is a task on the loop, after the work already waiting
  // there (the other rings, the front-end's messages): the front-end's kick does not come
  // again while the device keeps notifications off. Without this a device drained the ring
  // to the end, which never came when the guest (or a used ring laid over the available
  // index) kept it full: the loop, and the connection with it, hung.
  if (index >= rings_.size()) return false;
  std::weak_ptr<bool> alive = alive_;
  loop_.post([this, alive, index] {
    if (!alive.expired()) serve_ring(index);
  });
  return true;
}

void VhostUserBackend::close(const std::string& why) {
  if (closed_) return;
  closed_ = true;
  if (why.empty()) {
    log::info("{}: the front-end closed the connection", peer_);
  } else if (why.find(peer_) != std::string::npos) {
    log::error("{}; connection closed", why);
  } else {
    log::error("{}: {}; connection closed", peer_, why);
  }
  try {
    stop_all();
  } catch (const std::exception& e) {
    log::debug("{}: stopping: {}", peer_, e.what());
  }
  loop_.remove(channel_.fd());
  loop_.remove(shrunk_);
  ::shutdown(channel_.fd(), SHUT_RDWR);  // the front-end sees the end now, not at destruction
  if (on_close_) on_close_(why);
}

}  // namespace libvmm
