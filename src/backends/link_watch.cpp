#include "libvmm/backends/link_watch.hpp"

#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

std::optional<bool> link_state_in(std::span<const uint8_t> messages, int index) {
  std::optional<bool> state;
  size_t at = 0;
  while (messages.size() - at >= sizeof(nlmsghdr)) {
    // Through copies: a datagram buffer promises no alignment.
    nlmsghdr header;
    std::memcpy(&header, messages.data() + at, sizeof header);
    const size_t length = header.nlmsg_len;
    if (length < sizeof(nlmsghdr) || length > messages.size() - at) break;
    const bool link = header.nlmsg_type == RTM_NEWLINK || header.nlmsg_type == RTM_DELLINK;
    if (link && length >= NLMSG_LENGTH(sizeof(ifinfomsg))) {
      ifinfomsg info;
      std::memcpy(&info, messages.data() + at + NLMSG_HDRLEN, sizeof info);
      if (info.ifi_index == index) {
        state = header.nlmsg_type == RTM_NEWLINK && (info.ifi_flags & IFF_UP) != 0;
      }
    }
    const size_t next = NLMSG_ALIGN(length);
    if (next >= messages.size() - at) break;
    at += next;
  }
  return state;
}

LinkWatch::LinkWatch(std::string interface) : interface_(std::move(interface)) {
  socket_.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
  if (!socket_) throw_errno(interface_ + ": rtnetlink socket");
  sockaddr_nl address{};
  address.nl_family = AF_NETLINK;
  address.nl_groups = RTMGRP_LINK;
  if (::bind(socket_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    throw_errno(interface_ + ": rtnetlink link messages");
  }
  // Asked after subscribing: a change from here on comes as a message too.
  const UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!probe) throw_errno(interface_ + ": socket");
  ifreq request{};
  std::memcpy(request.ifr_name, interface_.data(),
              std::min(interface_.size(), sizeof request.ifr_name - 1));
  if (::ioctl(probe.get(), SIOCGIFINDEX, &request) != 0) throw_errno(interface_ + ": SIOCGIFINDEX");
  index_ = request.ifr_ifindex;
  if (::ioctl(probe.get(), SIOCGIFFLAGS, &request) != 0) throw_errno(interface_ + ": SIOCGIFFLAGS");
  up_.store((request.ifr_flags & IFF_UP) != 0);
}

void LinkWatch::start(EventLoop& loop, std::function<void()> changed) {
  changed_ = std::move(changed);
  loop.add(socket_.get(), EPOLLIN, [this](uint32_t /*events*/) { read_messages(); });
}

void LinkWatch::read_messages() {
  const bool before = up_.load();
  bool now = before;
  // Every link change of the host (or namespace) arrives here; most are about other interfaces.
  alignas(nlmsghdr) std::array<uint8_t, 8192> buffer;
  for (;;) {
    const ssize_t n = ::read(socket_.get(), buffer.data(), buffer.size());
    if (n > 0) {
      now = link_state_in(std::span(buffer.data(), static_cast<size_t>(n)), index_).value_or(now);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ENOBUFS) {  // messages were lost while the loop was busy
      ask_again();
      continue;
    }
    break;  // EAGAIN: all read
  }
  if (now == before) return;
  up_.store(now);
  if (changed_) changed_();
}

void LinkWatch::ask_again() {
  struct {
    nlmsghdr header;
    ifinfomsg info;
  } request{};
  request.header.nlmsg_len = sizeof request;
  request.header.nlmsg_type = RTM_GETLINK;
  request.header.nlmsg_flags = NLM_F_REQUEST;
  request.info.ifi_family = AF_UNSPEC;
  request.info.ifi_index = index_;
  // write(): every thread's seccomp filter allows it.
  if (::write(socket_.get(), &request, sizeof request) != static_cast<ssize_t>(sizeof request)) {
    log::debug("{}: asking for its link state again: {}", interface_, std::strerror(errno));
  }
}

}  // namespace libvmm
