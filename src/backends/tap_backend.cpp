#include "libvmm/backends/tap_backend.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

static_assert(sizeof(virtio_net_hdr_v1) == TapBackend::kVnetHeaderSize);

// Asks the kernel, not /sys: /sys may show another network namespace (a process that joined
// one with setns) or be absent (in vmm --jail).
bool interface_exists(const std::string& name) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min(name.size(), sizeof ifr.ifr_name - 1));
  return probe && ::ioctl(probe.get(), SIOCGIFINDEX, &ifr) == 0;
}

}  // namespace

std::unique_ptr<TapBackend> TapBackend::open(const std::string& name) {
  return std::move(open_queues(name, 1).front());
}

std::vector<std::unique_ptr<TapBackend>> TapBackend::open_queues(const std::string& name,
                                                                 size_t queues) {
  auto fail = [&](std::string_view why) {
    return UserError(fmt::format("TAP device '{}': {}", name, why));
  };
  if (name.empty()) throw fail("missing TAP name");
  if (name.size() >= IFNAMSIZ) throw fail(fmt::format("longer than {} characters", IFNAMSIZ - 1));
  const bool multiqueue = queues > 1;
  const bool existed = interface_exists(name);
  std::vector<std::unique_ptr<TapBackend>> backends;
  for (size_t q = 0; q < queues; ++q) {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd) {
      const int err = errno;
      if (err == ENOENT || err == ENODEV) {
        throw fail("/dev/net/tun is missing (load the tun module)");
      }
      if (err == EACCES || err == EPERM) throw fail("no permission to open /dev/net/tun");
      throw fail(fmt::format("cannot open /dev/net/tun: {}", std::strerror(err)));
    }
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (multiqueue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
    int rc = ::ioctl(fd.get(), TUNSETIFF, &ifr);
    if (rc != 0 && errno == EINVAL && existed && !multiqueue) {
      // A multiqueue TAP only takes queues that say so: one queue of it.
      ifr.ifr_flags |= IFF_MULTI_QUEUE;
      rc = ::ioctl(fd.get(), TUNSETIFF, &ifr);
    }
    if (rc != 0) {
      const int err = errno;
      if (err == EPERM && !existed) {
        throw fail("no such TAP device, and creating one needs CAP_NET_ADMIN");
      }
      if (err == EPERM) throw fail("no permission to attach to this TAP (check its owner)");
      if (err == EBUSY) throw fail("in use by another process");
      if (err == EINVAL && existed && multiqueue) {
        throw fail(
            fmt::format("num_queues={} needs a multiqueue TAP, and this one is not (or "
                        "is no TAP): create it with `ip tuntap add {} mode tap "
                        "multi_queue`",
                        queues, name));
      }
      if (err == EINVAL && existed) throw fail("exists but is not a TAP device");
      throw fail(std::strerror(err));
    }
    int header_size = static_cast<int>(kVnetHeaderSize);
    if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &header_size) != 0) {
      throw fail(fmt::format("TUNSETVNETHDRSZ: {}", std::strerror(errno)));
    }
    // No offloads until a driver accepts them (activate() sets them).
    if (::ioctl(fd.get(), TUNSETOFFLOAD, 0ul) != 0) {
      throw fail(fmt::format("TUNSETOFFLOAD: {}", std::strerror(errno)));
    }
    std::string description = "tap " + name;
    if (multiqueue) description.append(fmt::format(" queue {}", q));
    backends.push_back(std::make_unique<TapBackend>(std::move(fd), std::move(description), true));
    backends.back()->multiqueue_ = multiqueue;
  }
  try {
    backends.front()->link_ = std::make_unique<LinkWatch>(name);
  } catch (const SystemError& e) {
    log::warn("TAP device '{}': its link state is not followed (the guest's stays up): {}", name,
              e.what());
  }
  log::debug("{} TAP {} ({} queue{})", existed ? "attached to" : "created", name, queues,
             queues == 1 ? "" : "s");
  return backends;
}

TapBackend::TapBackend(UniqueFd fd, std::string description, bool is_tap)
    : fd_(std::move(fd)), description_(std::move(description)), is_tap_(is_tap) {
  ::fcntl(fd_.get(), F_SETFL, ::fcntl(fd_.get(), F_GETFL) | O_NONBLOCK);
}

ssize_t TapBackend::receive(std::span<uint8_t> buffer) {
  for (;;) {
    const ssize_t n = ::read(fd_.get(), buffer.data(), buffer.size());
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -errno;
  }
}

bool TapBackend::send(std::span<const iovec> iov) {
  if (iov.size() > IOV_MAX) return false;
  for (;;) {
    const ssize_t n = ::writev(fd_.get(), iov.data(), static_cast<int>(iov.size()));
    if (n >= 0) return true;  // a TAP takes a frame whole or not at all
    if (errno == EINTR) continue;
    send_errors_.warn(description_, fmt::format("a frame from the guest was refused: {}; dropped",
                                                std::strerror(errno)));
    return false;
  }
}

void TapBackend::set_offloads(uint64_t guest_features) {
  if (!is_tap_) return;
  auto has = [&](unsigned bit) { return (guest_features >> bit) & 1; };
  unsigned long offloads = 0;
  if (has(VIRTIO_NET_F_GUEST_CSUM)) {
    offloads |= TUN_F_CSUM;
    if (has(VIRTIO_NET_F_GUEST_TSO4)) offloads |= TUN_F_TSO4;
    if (has(VIRTIO_NET_F_GUEST_TSO6)) offloads |= TUN_F_TSO6;
  }
  if (::ioctl(fd_.get(), TUNSETOFFLOAD, offloads) != 0) {
    log::warn("{}: TUNSETOFFLOAD {:#x}: {}", description_, offloads, std::strerror(errno));
  }
}

void TapBackend::start(EventLoop& loop, std::function<void()> readable) {
  loop_ = &loop;
  loop.add(fd_.get(), EPOLLIN, [this, readable = std::move(readable)](uint32_t events) {
    // epoll reports these even while paused: the TAP was deleted (or the peer closed). Stop
    // watching, or the loop would spin; sends fail from now on and are counted.
    if (events & (EPOLLERR | EPOLLHUP)) {
      log::error("{}: the device went away; no more frames from it", description_);
      loop_->remove(fd_.get());
      loop_ = nullptr;
      return;
    }
    readable();
  });
}

void TapBackend::watch_link(EventLoop& loop, std::function<void()> changed) {
  if (!link_) return;
  // Said once the VM is about to run (not at open: a later error is the only line then). A TAP
  // made here always starts down: the user's next step.
  if (!link_->up()) {
    log::info(
        "TAP device '{0}' is down, and so is the guest's link until it is up: ip link set "
        "{0} up",
        link_->interface());
  }
  link_->start(loop, [this, changed = std::move(changed)] {
    log::info("TAP device '{}' is {}, and so is the guest's link", link_->interface(),
              link_->up() ? "up" : "down");
    changed();
  });
}

void TapBackend::pause_receive() {
  if (loop_ == nullptr || paused_) return;
  paused_ = true;
  loop_->modify(fd_.get(), 0);
}

void TapBackend::set_enabled(bool enabled) {
  if (!multiqueue_) return;
  ifreq ifr{};
  ifr.ifr_flags = enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
  if (::ioctl(fd_.get(), TUNSETQUEUE, &ifr) != 0) {
    log::warn("{}: {} the queue: {}", description_, enabled ? "attaching" : "detaching",
              std::strerror(errno));
  }
}

void TapBackend::resume_receive() {
  if (loop_ == nullptr || !paused_) return;
  paused_ = false;
  loop_->modify(fd_.get(), EPOLLIN);
}

}  // namespace libvmm
