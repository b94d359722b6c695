// The vhost-user message layer: framing, payloads, the strict decoders of both directions.
// Payload layouts are the protocol's (little-endian hosts only, as the protocol itself).
#include "libvmm/backends/vhost_user.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

namespace libvmm::vhost {
namespace {

template <typename T>
void append(std::vector<uint8_t>& out, const T& value) {
  // resize + memcpy: GCC 12 at -O3 warns falsely (-Wstringop-overflow) on insert() here.
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &value, sizeof(T));
}

template <typename T>
T load(std::span<const uint8_t> bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

constexpr size_t kStateSize = 8;
constexpr size_t kAddrSize = 40;
constexpr size_t kRegionSize = 32;
constexpr size_t kConfigHeader = 12;

[[noreturn]] void fail(const std::string& message) {
  throw VhostError(message);
}

void expect_size(const Message& m, size_t size) {
  if (m.payload.size() != size) {
    fail(fmt::format("{} with a {}-byte payload (expected {})", request_name(m.request),
                     m.payload.size(), size));
  }
}

void expect_fds(const Message& m, size_t count) {
  if (m.fds.size() != count) {
    fail(fmt::format("{} with {} file descriptor(s) (expected {})", request_name(m.request),
                     m.fds.size(), count));
  }
}

void check_index(const Message& m, uint32_t index, uint32_t queue_count) {
  if (index >= queue_count) {
    fail(fmt::format("{} for queue {}, but the device has {} queue(s)", request_name(m.request),
                     index, queue_count));
  }
}

bool overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
  return a < b + b_size && b < a + a_size;
}

// end = start + size without wrapping, else nullopt.
std::optional<uint64_t> end_of(uint64_t start, uint64_t size) {
  if (size > UINT64_MAX - start) return std::nullopt;
  return start + size;
}

std::vector<MemRegion> decode_regions(const Message& m) {
  if (m.payload.size() < 8) expect_size(m, 8);
  const auto count = load<uint32_t>(m.payload, 0);
  if (count == 0) fail("SET_MEM_TABLE with no regions");
  if (count > kMaxRegions) {
    fail(fmt::format("SET_MEM_TABLE with {} regions (at most {})", count, kMaxRegions));
  }
  expect_size(m, 8 + count * kRegionSize);
  expect_fds(m, count);
  std::vector<MemRegion> regions;
  for (uint32_t i = 0; i < count; ++i) {
    const size_t at = 8 + i * kRegionSize;
    regions.push_back({load<uint64_t>(m.payload, at), load<uint64_t>(m.payload, at + 8),
                       load<uint64_t>(m.payload, at + 16), load<uint64_t>(m.payload, at + 24)});
  }
  return regions;
}

}  // namespace

std::string request_name(uint32_t request) {
  switch (static_cast<Request>(request)) {
    case Request::get_features:
      return "GET_FEATURES";
    case Request::set_features:
      return "SET_FEATURES";
    case Request::set_owner:
      return "SET_OWNER";
    case Request::reset_owner:
      return "RESET_OWNER";
    case Request::set_mem_table:
      return "SET_MEM_TABLE";
    case Request::set_log_base:
      return "SET_LOG_BASE";
    case Request::set_log_fd:
      return "SET_LOG_FD";
    case Request::set_vring_num:
      return "SET_VRING_NUM";
    case Request::set_vring_addr:
      return "SET_VRING_ADDR";
    case Request::set_vring_base:
      return "SET_VRING_BASE";
    case Request::get_vring_base:
      return "GET_VRING_BASE";
    case Request::set_vring_kick:
      return "SET_VRING_KICK";
    case Request::set_vring_call:
      return "SET_VRING_CALL";
    case Request::set_vring_err:
      return "SET_VRING_ERR";
    case Request::get_protocol_features:
      return "GET_PROTOCOL_FEATURES";
    case Request::set_protocol_features:
      return "SET_PROTOCOL_FEATURES";
    case Request::get_queue_num:
      return "GET_QUEUE_NUM";
    case Request::set_vring_enable:
      return "SET_VRING_ENABLE";
    case Request::set_backend_req_fd:
      return "SET_BACKEND_REQ_FD";
    case Request::get_config:
      return "GET_CONFIG";
    case Request::set_config:
      return "SET_CONFIG";
    case Request::reset_device:
      return "RESET_DEVICE";
    case Request::get_max_mem_slots:
      return "GET_MAX_MEM_SLOTS";
  }
  return fmt::format("request {}", request);
}

std::string backend_request_name(uint32_t request) {
  switch (static_cast<BackendRequest>(request)) {
    case BackendRequest::iotlb_msg:
      return "IOTLB_MSG";
    case BackendRequest::config_change_msg:
      return "CONFIG_CHANGE_MSG";
    case BackendRequest::vring_host_notifier_msg:
      return "VRING_HOST_NOTIFIER_MSG";
  }
  return fmt::format("back-end request {}", request);
}

Message Message::make(Request request, uint32_t flags) {
  Message m;
  m.request = static_cast<uint32_t>(request);
  m.flags = flags;
  return m;
}

Message Message::with_u64(Request request, uint64_t value) {
  Message m = make(request);
  append(m.payload, value);
  return m;
}

Message Message::with_state(Request request, VringState state) {
  Message m = make(request);
  append(m.payload, state.index);
  append(m.payload, state.num);
  return m;
}

Message Message::with_addr(const VringAddr& addr) {
  Message m = make(Request::set_vring_addr);
  append(m.payload, addr.index);
  append(m.payload, addr.flags);
  append(m.payload, addr.desc);
  append(m.payload, addr.used);
  append(m.payload, addr.avail);
  append(m.payload, addr.log);
  return m;
}

Message Message::with_mem_table(std::span<const MemRegion> regions) {
  Message m = make(Request::set_mem_table);
  append(m.payload, static_cast<uint32_t>(regions.size()));
  append(m.payload, uint32_t{0});
  for (const MemRegion& r : regions) {
    append(m.payload, r.gpa);
    append(m.payload, r.size);
    append(m.payload, r.user_addr);
    append(m.payload, r.mmap_offset);
  }
  return m;
}

Message Message::with_config(Request request, const ConfigSpace& config) {
  Message m = make(request);
  append(m.payload, config.offset);
  append(m.payload, static_cast<uint32_t>(config.data.size()));
  append(m.payload, config.flags);
  m.payload.insert(m.payload.end(), config.data.begin(), config.data.end());
  return m;
}

Message Message::backend_ack(BackendRequest request, uint64_t status) {
  Message m;
  m.request = static_cast<uint32_t>(request);
  m.flags = kVersion | kFlagReply;
  append(m.payload, status);
  return m;
}

std::string check_header(uint32_t request, uint32_t flags, uint32_t size, bool expect_reply,
                         bool from_backend) {
  const std::string name = from_backend ? backend_request_name(request) : request_name(request);
  if ((flags & kVersionMask) != kVersion) {
    return fmt::format("{}: protocol version {} (expected {})", name, flags & kVersionMask,
                       kVersion);
  }
  if (expect_reply && !(flags & kFlagReply)) {
    return fmt::format("{} without the reply flag where a reply was expected", name);
  }
  if (!expect_reply && (flags & kFlagReply)) {
    return fmt::format("{} with the reply flag where a request was expected", name);
  }
  if (size > kMaxPayload) {
    return fmt::format("{} with a {}-byte payload (at most {})", name, size, kMaxPayload);
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Front-end side

namespace {

void expect_reply_to(const Message& reply, Request request) {
  if (reply.request != static_cast<uint32_t>(request)) {
    fail(fmt::format("{} in reply to {}", request_name(reply.request),
                     request_name(static_cast<uint32_t>(request))));
  }
  expect_fds(reply, 0);
}

}  // namespace

uint64_t decode_reply_u64(const Message& reply, Request request) {
  expect_reply_to(reply, request);
  expect_size(reply, 8);
  return load<uint64_t>(reply.payload, 0);
}

VringState decode_reply_state(const Message& reply, Request request, uint32_t queue_index) {
  expect_reply_to(reply, request);
  expect_size(reply, kStateSize);
  const VringState state{load<uint32_t>(reply.payload, 0), load<uint32_t>(reply.payload, 4)};
  if (state.index != queue_index) {
    fail(fmt::format("{} reply for queue {} (asked for queue {})", request_name(reply.request),
                     state.index, queue_index));
  }
  return state;
}

ConfigSpace decode_reply_config(const Message& reply, uint32_t offset, uint32_t size) {
  expect_reply_to(reply, Request::get_config);
  expect_size(reply, kConfigHeader + size);
  ConfigSpace config;
  config.offset = load<uint32_t>(reply.payload, 0);
  const auto got_size = load<uint32_t>(reply.payload, 4);
  config.flags = load<uint32_t>(reply.payload, 8);
  if (config.offset != offset || got_size != size) {
    fail(fmt::format("GET_CONFIG reply for {} bytes at {} (asked for {} at {})", got_size,
                     config.offset, size, offset));
  }
  config.data.assign(reply.payload.begin() + kConfigHeader, reply.payload.end());
  return config;
}

void decode_reply_ack(const Message& reply, Request request) {
  const uint64_t status = decode_reply_u64(reply, request);
  if (status != 0) {
    fail(fmt::format("the back-end refused {} (status {})",
                     request_name(static_cast<uint32_t>(request)), status));
  }
}

BackendRequest decode_backend_request(const Message& request) {
  const std::string name = backend_request_name(request.request);
  if (static_cast<BackendRequest>(request.request) != BackendRequest::config_change_msg) {
    fail(fmt::format("unsupported {} from the back-end", name));
  }
  if (!request.payload.empty()) {
    fail(fmt::format("{} with a {}-byte payload (expected 0)", name, request.payload.size()));
  }
  if (!request.fds.empty()) {
    fail(fmt::format("{} with {} file descriptor(s) (expected 0)", name, request.fds.size()));
  }
  return BackendRequest::config_change_msg;
}

// ---------------------------------------------------------------------------------------------
// Back-end side

DecodedRequest decode_request(const Message& m, uint32_t queue_count) {
  DecodedRequest d;
  d.request = static_cast<Request>(m.request);
  d.need_reply = (m.flags & kFlagNeedReply) != 0;
  switch (d.request) {
    case Request::get_features:
    case Request::get_protocol_features:
    case Request::get_queue_num:
    case Request::get_max_mem_slots:
    case Request::set_owner:
    case Request::reset_owner:
    case Request::reset_device:
      expect_size(m, 0);
      expect_fds(m, 0);
      return d;
    case Request::set_backend_req_fd:  // the descriptor is the channel's end (Message::fds)
      expect_size(m, 0);
      expect_fds(m, 1);
      return d;
    case Request::set_features:
    case Request::set_protocol_features:
      expect_size(m, 8);
      expect_fds(m, 0);
      d.u64 = load<uint64_t>(m.payload, 0);
      return d;
    case Request::set_vring_num:
    case Request::set_vring_base:
    case Request::get_vring_base:
    case Request::set_vring_enable:
      expect_size(m, kStateSize);
      expect_fds(m, 0);
      d.state = {load<uint32_t>(m.payload, 0), load<uint32_t>(m.payload, 4)};
      check_index(m, d.state.index, queue_count);
      return d;
    case Request::set_vring_addr:
      expect_size(m, kAddrSize);
      expect_fds(m, 0);
      d.addr = {load<uint32_t>(m.payload, 0),  load<uint32_t>(m.payload, 4),
                load<uint64_t>(m.payload, 8),  load<uint64_t>(m.payload, 16),
                load<uint64_t>(m.payload, 24), load<uint64_t>(m.payload, 32)};
      check_index(m, d.addr.index, queue_count);
      return d;
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err:
      expect_size(m, 8);
      d.u64 = load<uint64_t>(m.payload, 0);
      if (d.u64 & ~(kVringFdIndexMask | kVringNoFd)) {
        fail(fmt::format("{} with unknown bits {:#x}", request_name(m.request),
                         d.u64 & ~(kVringFdIndexMask | kVringNoFd)));
      }
      expect_fds(m, d.has_fd() ? 1 : 0);
      check_index(m, d.queue_index(), queue_count);
      return d;
    case Request::set_mem_table:
      d.regions = decode_regions(m);
      static_cast<void>(RegionTable(d.regions));  // overlap check
      for (const MemRegion& r : d.regions) {
        if (r.size == 0) fail("SET_MEM_TABLE with an empty region");
      }
      return d;
    case Request::get_config:
    case Request::set_config: {
      if (m.payload.size() < kConfigHeader) expect_size(m, kConfigHeader);
      expect_fds(m, 0);
      d.config.offset = load<uint32_t>(m.payload, 0);
      const auto size = load<uint32_t>(m.payload, 4);
      d.config.flags = load<uint32_t>(m.payload, 8);
      if (size > kMaxConfigSize || d.config.offset > kMaxConfigSize - size) {
        fail(fmt::format("{} for {} bytes at offset {} (the config space has {})",
                         request_name(m.request), size, d.config.offset, kMaxConfigSize));
      }
      expect_size(m, kConfigHeader + size);
      d.config.data.assign(m.payload.begin() + kConfigHeader, m.payload.end());
      return d;
    }
    case Request::set_log_base:
    case Request::set_log_fd:
      break;  // dirty logging (migration) is not offered
  }
  fail(fmt::format("unsupported request {}", request_name(m.request)));
}

RegionTable::RegionTable(std::vector<MemRegion> regions) : regions_(std::move(regions)) {
  for (size_t i = 0; i < regions_.size(); ++i) {
    const MemRegion& a = regions_[i];
    if (!end_of(a.gpa, a.size) || !end_of(a.user_addr, a.size) || !end_of(a.mmap_offset, a.size)) {
      fail(fmt::format("memory region {} wraps around the address space", i));
    }
    for (size_t j = 0; j < i; ++j) {
      const MemRegion& b = regions_[j];
      if (overlaps(a.gpa, a.size, b.gpa, b.size)) {
        fail(fmt::format("memory regions {} and {} overlap in guest-physical memory", j, i));
      }
      if (overlaps(a.user_addr, a.size, b.user_addr, b.size)) {
        fail(fmt::format("memory regions {} and {} overlap in user addresses", j, i));
      }
    }
  }
}

std::optional<uint64_t> RegionTable::user_to_gpa(uint64_t addr, uint64_t len) const {
  for (const MemRegion& r : regions_) {
    if (addr >= r.user_addr && addr - r.user_addr <= r.size &&
        len <= r.size - (addr - r.user_addr)) {
      return r.gpa + (addr - r.user_addr);
    }
  }
  return std::nullopt;
}

VringAddr RegionTable::rings_to_gpa(const VringAddr& addr, uint32_t num) const {
  // Split ring sizes (virtIO 1.2 §2.7): descriptors 16 bytes each; avail flags, idx, ring and
  // used_event; used flags, idx, 8-byte elements and avail_event.
  const uint64_t n = num;
  const struct {
    const char* name;
    uint64_t at;
    uint64_t size;
  } rings[] = {{"descriptor table", addr.desc, 16 * n},
               {"available ring", addr.avail, 6 + 2 * n},
               {"used ring", addr.used, 6 + 8 * n}};
  VringAddr out = addr;
  uint64_t* targets[] = {&out.desc, &out.avail, &out.used};
  for (size_t i = 0; i < 3; ++i) {
    const auto gpa = user_to_gpa(rings[i].at, rings[i].size);
    if (!gpa) {
      fail(fmt::format("queue {}: the {} at {:#x} ({} bytes) is not inside the memory table",
                       addr.index, rings[i].name, rings[i].at, rings[i].size));
    }
    *targets[i] = *gpa;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Channel

Channel::Channel(UniqueFd socket, std::string peer, bool backend_requests)
    : socket_(std::move(socket)), peer_(std::move(peer)), backend_requests_(backend_requests) {}

std::string Channel::name_of(uint32_t request) const {
  return backend_requests_ ? backend_request_name(request) : request_name(request);
}

namespace {

using Clock = std::chrono::steady_clock;

// When an exchange that may take `timeout_ms` must be over (none for a negative timeout).
std::optional<Clock::time_point> deadline_after(int timeout_ms) {
  if (timeout_ms < 0) return std::nullopt;
  return Clock::now() + std::chrono::milliseconds(timeout_ms);
}

// What poll() may wait of what is left until `deadline` (-1: as long as it takes).
int remaining_ms(std::optional<Clock::time_point> deadline) {
  if (!deadline) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(left.count(), 0));
}

}  // namespace

void Channel::send(const Message& message, std::span<const int> fds, int timeout_ms) {
  send_with(message, fds, false, timeout_ms);
}

void Channel::send_without_waiting(const Message& message) {
  send_with(message, {}, true, 0);
}

void Channel::send_with(const Message& message, std::span<const int> fds, bool never_wait,
                        int timeout_ms) {
  if (fds.size() > kMaxFds) fail(fmt::format("{} descriptors in one message", fds.size()));
  std::vector<uint8_t> bytes;
  bytes.reserve(kHeaderSize + message.payload.size());
  append(bytes, message.request);
  append(bytes, message.flags);
  append(bytes, static_cast<uint32_t>(message.payload.size()));
  bytes.insert(bytes.end(), message.payload.begin(), message.payload.end());

  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  // Never a blocking send: waiting for room is poll()'s, and bounded by the deadline.
  const auto deadline = deadline_after(timeout_ms);
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (never_wait) {
        fail(fmt::format("{} is not reading its socket: {} could not be sent whole", peer_,
                         name_of(message.request)));
      }
      pollfd p{socket_.get(), POLLOUT, 0};
      const int ready = ::poll(&p, 1, remaining_ms(deadline));
      if (ready < 0 && errno != EINTR) {
        fail(fmt::format("waiting to send to {}: {}", peer_, std::strerror(errno)));
      }
      if (ready == 0) {
        fail(fmt::format("{} did not read its socket within {} ms: {} could not be sent whole",
                         peer_, timeout_ms, name_of(message.request)));
      }
      continue;
    }
    if (n < 0) {
      fail(fmt::format("sending {} to {}: {}", name_of(message.request), peer_,
                       std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
    iov.iov_base = bytes.data() + sent;
    iov.iov_len = bytes.size() - sent;
    msg.msg_control = nullptr;  // the descriptors went with the first byte
    msg.msg_controllen = 0;
  }
}

namespace {

// Reads exactly `out.size()` bytes by `deadline`, collecting descriptors into `fds`. Throws on
// timeout (`timeout_ms`, what the deadline was set from, names it), end of stream or too many
// descriptors.
void read_exact(int fd, std::span<uint8_t> out, std::optional<Clock::time_point> deadline,
                int timeout_ms, std::vector<UniqueFd>& fds, const std::string& peer) {
  size_t got = 0;
  while (got < out.size()) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) fail(fmt::format("waiting for {}: {}", peer, std::strerror(errno)));
    if (ready == 0) fail(fmt::format("{} did not answer within {} ms", peer, timeout_ms));
    iovec iov{out.data() + got, out.size() - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) fail(fmt::format("reading from {}: {}", peer, std::strerror(errno)));
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(received);  // owned (and closed) even when refused below
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) fail(fmt::format("{} sent too many descriptors", peer));
    if (fds.size() > kMaxFds) fail(fmt::format("{} sent too many descriptors", peer));
    if (n == 0) fail(fmt::format("{} closed the connection", peer));
    got += static_cast<size_t>(n);
  }
}

}  // namespace

Message Channel::receive(int timeout_ms, bool expect_reply) {
  Message m;
  uint8_t header[kHeaderSize];
  // One deadline for the whole message: a peer trickling it byte by byte is not given a new
  // timeout for each.
  const auto deadline = deadline_after(timeout_ms);
  read_exact(socket_.get(), header, deadline, timeout_ms, m.fds, peer_);
  m.request = load<uint32_t>(header, 0);
  m.flags = load<uint32_t>(header, 4);
  const auto size = load<uint32_t>(header, 8);
  if (auto why = check_header(m.request, m.flags, size, expect_reply, backend_requests_);
      !why.empty()) {
    fail(fmt::format("{}: {}", peer_, why));
  }
  m.payload.resize(size);
  read_exact(socket_.get(), m.payload, deadline, timeout_ms, m.fds, peer_);
  return m;
}

UniqueFd connect_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) fail("the socket path is too long");
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) fail(fmt::format("socket: {}", std::strerror(errno)));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) {
    fail(std::strerror(errno));
  }
  return fd;
}

}  // namespace libvmm::vhost
