#include "libvmm/backends/socket_backend.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>

#include "fd_io.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

constexpr uint32_t kInput = EPOLLIN;
constexpr uint32_t kOutput = EPOLLOUT;
constexpr int kAcceptsPerWake = 16;
constexpr std::string_view kBusyMessage = "busy: another client is connected to this console\r\n";

sockaddr_un address_of(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    throw UserError(fmt::format("a Unix socket path has 1 to {} bytes, not {}",
                                sizeof(address.sun_path) - 1, path.size()));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

UniqueFd stream_socket() {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  return fd;
}

// Whether a program accepts connections on the socket file at `address`. A socket file left
// behind by a program that exited refuses them.
bool someone_listens(const sockaddr_un& address) {
  UniqueFd probe = stream_socket();
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
    return true;
  }
  if (errno == ECONNREFUSED) return false;
  if (errno == EAGAIN || errno == EINPROGRESS) return true;  // listening, with a full backlog
  throw_errno("connect");
}

// Sends without blocking and without SIGPIPE. Returns bytes sent, or -1 with errno.
ssize_t send_some(int fd, std::span<const uint8_t> bytes) {
  ssize_t n;
  do {
    n = ::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

}  // namespace

SocketBackend::SocketBackend(std::string path) : path_(std::move(path)) {
  const sockaddr_un address = address_of(path_);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) throw UserError("exists and is not a socket");
    if (someone_listens(address)) throw UserError("another program is listening on it");
    if (::unlink(path_.c_str()) != 0) throw_errno("removing the stale socket");
  } else if (errno != ENOENT) {
    throw_errno(path_);
  }
  listener_ = stream_socket();
  if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    throw_errno(path_);
  }
  if (::listen(listener_.get(), 4) != 0 || ::stat(path_.c_str(), &st) != 0) {
    const int err = errno;
    ::unlink(path_.c_str());
    throw SystemError(path_, err);
  }
  socket_dev_ = st.st_dev;
  socket_ino_ = st.st_ino;
  accept_retry_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!accept_retry_) throw_errno("timerfd for " + path_);
}

SocketBackend::~SocketBackend() {
  flush_at_exit();
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    ::unlink(path_.c_str());
  }
}

void SocketBackend::flush_at_exit() {
  // What the guest wrote last (a panic, its power-off lines) reaches a client still reading, as
  // on a terminal or in a file: a second at most, 200 ms at most without progress.
  std::lock_guard lock(mutex_);
  if (!client_ || output_failed_) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1000);
  size_t sent = 0;
  while (sent < output_.size()) {
    const ssize_t n = send_some(client_.get(), std::span(output_).subspan(sent));
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && !would_block(errno)) return;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return;
    pollfd writable{client_.get(), POLLOUT, 0};
    if (::poll(&writable, 1, static_cast<int>(std::min<int64_t>(left.count(), 200))) <= 0) return;
  }
}

bool SocketBackend::client_connected() const {
  std::lock_guard lock(mutex_);
  return client_.valid();
}

size_t SocketBackend::queued_bytes() const {
  std::lock_guard lock(mutex_);
  return output_.size();
}

size_t SocketBackend::write_room() {
  std::lock_guard lock(mutex_);
  if (!client_ || output_failed_) return kUnbounded;
  const size_t room = kOutputLimit - output_.size();
  if (room == 0) refused_ = true;
  return room;
}

void SocketBackend::set_output_listener(std::function<void()> on_room) {
  std::lock_guard lock(mutex_);
  on_room_ = std::move(on_room);
}

// ---------------------------------------------------------------------------------------------
// Guest output (any thread)

size_t SocketBackend::write(std::span<const uint8_t> bytes) {
  const size_t offered = bytes.size();
  std::lock_guard lock(mutex_);
  if (!client_ || output_failed_) return offered;  // nobody to tell: dropped, as documented
  if (output_.empty()) {
    const ssize_t n = send_some(client_.get(), bytes);
    if (n < 0 && !would_block(errno)) {
      output_failing(errno);  // the loop thread notices a hang-up when it reads
      return offered;
    }
    if (n > 0) bytes = bytes.subspan(static_cast<size_t>(n));
  }
  if (bytes.empty()) return offered;
  const size_t take = std::min(bytes.size(), kOutputLimit - output_.size());
  output_.insert(output_.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(take));
  if (take < bytes.size()) refused_ = true;  // the device holds the rest back
  if (!flush_posted_ && take > 0) {
    flush_posted_ = true;  // the loop starts watching for POLLOUT
    loop_->post([this] {
      {
        std::lock_guard relock(mutex_);
        flush_posted_ = false;
      }
      update_client_interest();
    });
  }
  return offered - (bytes.size() - take);
}

// ---------------------------------------------------------------------------------------------
// The loop thread

void SocketBackend::start(EventLoop& loop, InputSink sink) {
  {
    std::lock_guard lock(mutex_);
    loop_ = &loop;
  }
  sink_ = std::move(sink);
  loop.add(listener_.get(), EPOLLIN, [this](uint32_t /*events*/) { accept_clients(); });
  loop.add(accept_retry_.get(), EPOLLIN, [this](uint32_t /*events*/) {
    uint64_t expirations = 0;
    if (::read(accept_retry_.get(), &expirations, sizeof expirations) != sizeof expirations) return;
    loop_->modify(listener_.get(), EPOLLIN);  // the waiting client is accepted now, if it can be
  });
}

// Under mutex_: the client takes no more output (it shut down its reading side, or the
// connection broke while it still sends). Said once per client; its output is dropped.
void SocketBackend::output_failing(int error) {
  if (output_failed_) return;
  output_failed_ = true;
  log::warn("socket:{}: the client takes no more output ({}): dropped until it reconnects", path_,
            std::strerror(error));
}

void SocketBackend::accept_clients() {
  // A bounded number per wake-up: a client connecting in a loop while another is served gets
  // "busy" answers without holding the event loop; the rest wait for the next wake-up.
  for (int accepted = 0; accepted < kAcceptsPerWake; ++accepted) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The client stays queued and the listener readable: watched, it would wake the loop
        // at once, for ever. It is left alone for a second.
        log::warn("socket:{}: cannot accept a client: {}; trying again in a second", path_,
                  std::strerror(errno));
        loop_->modify(listener_.get(), 0);
        itimerspec when{};
        when.it_value.tv_sec = 1;
        static_cast<void>(::timerfd_settime(accept_retry_.get(), 0, &when, nullptr));
      } else if (!would_block(errno)) {
        log::warn("socket:{}: accept failed: {}", path_, std::strerror(errno));
      }
      return;
    }
    if (client_) {
      send_some(fd.get(), std::span(reinterpret_cast<const uint8_t*>(kBusyMessage.data()),
                                    kBusyMessage.size()));
      continue;  // closed on the way out
    }
    {
      std::lock_guard lock(mutex_);
      client_ = std::move(fd);
      output_.clear();
      output_failed_ = false;
    }
    log::info("socket:{}: client connected", path_);
    input_ended_ = false;
    client_events_ = paused_ ? 0 : kInput;
    // Registered even with no events while paused: the kernel still reports a hang-up.
    loop_->add(client_.get(), client_events_, [this](uint32_t events) { on_client_event(events); });
    if (on_connection_) on_connection_();
  }
}

void SocketBackend::on_client_event(uint32_t events) {
  const bool hung_up = (events & (EPOLLHUP | EPOLLERR)) != 0;
  if (!paused_ && !input_ended_ && (hung_up || (events & EPOLLIN) != 0)) {
    read_client();  // reads what is left before noticing the end of the stream
    if (!client_) return;
  } else if (hung_up) {
    int unread = 0;
    if (!input_ended_ && ::ioctl(client_.get(), FIONREAD, &unread) == 0 && unread > 0) {
      log::warn("socket:{}: {} bytes of the client's input were not read by the guest", path_,
                unread);
    }
    return disconnect("client disconnected");
  }
  std::function<void()> notify;
  if ((events & EPOLLOUT) != 0) notify = flush_output();
  update_client_interest();
  if (notify) notify();
}

void SocketBackend::read_client() {
  std::array<uint8_t, kCharReadChunk> buffer;
  ssize_t n;
  do {
    n = ::read(client_.get(), buffer.data(), buffer.size());
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    sink_(std::span(buffer.data(), static_cast<size_t>(n)));
  } else if (n == 0) {
    // The client closed its sending side; it may still read output, until it hangs up.
    input_ended_ = true;
  } else if (!would_block(errno)) {
    log::warn("socket:{}: reading from the client failed: {}", path_, std::strerror(errno));
    disconnect("client dropped");
  }
}

std::function<void()> SocketBackend::flush_output() {
  std::lock_guard lock(mutex_);
  while (!output_.empty() && !output_failed_) {
    const ssize_t n = send_some(client_.get(), output_);
    if (n < 0) {
      if (!would_block(errno)) output_failing(errno);
      break;
    }
    output_.erase(output_.begin(), output_.begin() + n);
  }
  if (output_failed_) output_.clear();
  if (!refused_ || output_.size() > kOutputLimit / 2) return nullptr;
  refused_ = false;
  return on_room_;
}

void SocketBackend::disconnect(const char* why) {
  loop_->remove(client_.get());
  client_events_ = 0;
  std::function<void()> notify;
  {
    std::lock_guard lock(mutex_);
    client_.reset();
    output_.clear();
    if (refused_) notify = on_room_;  // output is dropped now: the device may go on
    refused_ = false;
  }
  log::info("socket:{}: {}", path_, why);
  if (notify) notify();
  if (on_connection_) on_connection_();
}

void SocketBackend::update_client_interest() {
  if (!client_) return;
  bool has_output = false;
  {
    std::lock_guard lock(mutex_);
    has_output = !output_.empty();
  }
  const uint32_t wanted = (paused_ || input_ended_ ? 0 : kInput) | (has_output ? kOutput : 0);
  if (wanted == client_events_) return;
  loop_->modify(client_.get(), wanted);
  client_events_ = wanted;
}

void SocketBackend::pause_input() {
  paused_ = true;
  update_client_interest();
}

void SocketBackend::resume_input() {
  paused_ = false;
  update_client_interest();
}

}  // namespace libvmm
