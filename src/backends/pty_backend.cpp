#include "libvmm/backends/pty_backend.hpp"

#include <fcntl.h>
#include <stdlib.h>  // posix_openpt, grantpt, unlockpt, ptsname_r
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <termios.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "fd_io.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

PtyBackend::PtyBackend(std::string_view owner) {
  master_.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master_) throw_errno("posix_openpt");
  if (::grantpt(master_.get()) != 0) throw_errno("grantpt");
  if (::unlockpt(master_.get()) != 0) throw_errno("unlockpt");
  std::array<char, 128> name{};
  if (::ptsname_r(master_.get(), name.data(), name.size()) != 0) throw_errno("ptsname_r");
  path_ = name.data();

  held_terminal_.reset(::open(path_.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!held_terminal_) throw_errno(path_);
  termios raw{};
  if (::tcgetattr(held_terminal_.get(), &raw) != 0) throw_errno(path_ + ": tcgetattr");
  ::cfmakeraw(&raw);  // no echo, no line editing, no "\n" to "\r\n": the guest does all that
  if (::tcsetattr(held_terminal_.get(), TCSANOW, &raw) != 0) throw_errno(path_ + ": tcsetattr");

  const int flags = ::fcntl(master_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(master_.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    throw_errno(path_ + ": O_NONBLOCK");
  }
  // After the hold above, so that it is not counted.
  attach_watch_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (attach_watch_ && ::inotify_add_watch(attach_watch_.get(), path_.c_str(), IN_OPEN) < 0) {
    attach_watch_.reset();
  }
  if (!attach_watch_) {
    attached_ = true;
    log::debug("pty {}: cannot watch who opens it ({}); counted as always connected", path_,
               std::strerror(errno));
  }
  log::info("{}: console on {}", owner, path_);
}

bool PtyBackend::connected() const {
  return attached_.load();
}

void PtyBackend::set_connection_listener(std::function<void()> on_change) {
  on_connection_ = std::move(on_change);
}

void PtyBackend::read_attach_events() {
  bool opened = false;
  alignas(inotify_event) std::array<char, 4096> buffer;
  for (;;) {
    const ssize_t n = ::read(attach_watch_.get(), buffer.data(), buffer.size());
    if (n <= 0) break;
    for (size_t at = 0; at + sizeof(inotify_event) <= static_cast<size_t>(n);) {
      inotify_event event;
      std::memcpy(&event, buffer.data() + at, sizeof event);
      opened = opened || (event.mask & IN_OPEN) != 0;
      at += sizeof(inotify_event) + event.len;
    }
  }
  // Later opens are read and change nothing: once attached, always (see pty_backend.hpp).
  if (!opened || attached_.exchange(true)) return;
  log::debug("pty {}: a user attached", path_);
  if (on_connection_) on_connection_();
}

uint64_t PtyBackend::dropped_bytes() const {
  std::lock_guard lock(write_mutex_);
  return dropped_;
}

size_t PtyBackend::write(std::span<const uint8_t> bytes) {
  const size_t offered = bytes.size();
  std::lock_guard lock(write_mutex_);
  while (!bytes.empty()) {
    const ssize_t n = ::write(master_.get(), bytes.data(), bytes.size());
    if (n > 0) {
      bytes = bytes.subspan(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // full (EAGAIN): nobody is reading; or an error, which retrying will not fix
    }
  }
  if (bytes.empty()) return offered;
  dropped_ += bytes.size();
  if (!drop_warned_) {
    drop_warned_ = true;
    log::warn("pty {}: nobody is reading; dropping guest output", path_);
  }
  return offered;
}

void PtyBackend::start(EventLoop& loop, InputSink sink) {
  loop_ = &loop;
  sink_ = std::move(sink);
  watch(true);
  if (attach_watch_) {
    loop.add(attach_watch_.get(), EPOLLIN, [this](uint32_t /*events*/) { read_attach_events(); });
  }
  if (!on_resize_) return;
  last_size_ = terminal_size().value_or(TerminalSize{});
  resize_timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!resize_timer_) throw_errno(path_ + ": timerfd_create");
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(kResizePoll).count();
  const timespec every{static_cast<time_t>(ns / 1'000'000'000),
                       static_cast<long>(ns % 1'000'000'000)};
  const itimerspec spec{every, every};
  if (::timerfd_settime(resize_timer_.get(), 0, &spec, nullptr) != 0) {
    throw_errno(path_ + ": timerfd_settime");
  }
  loop.add(resize_timer_.get(), EPOLLIN, [this](uint32_t /*events*/) { check_size(); });
}

std::optional<CharBackend::TerminalSize> PtyBackend::terminal_size() const {
  winsize size{};
  if (::ioctl(master_.get(), TIOCGWINSZ, &size) != 0) return TerminalSize{};
  return TerminalSize{size.ws_col, size.ws_row};
}

void PtyBackend::set_resize_listener(std::function<void()> on_resize) {
  on_resize_ = std::move(on_resize);
}

void PtyBackend::check_size() {
  uint64_t expirations = 0;
  [[maybe_unused]] const ssize_t n = ::read(resize_timer_.get(), &expirations, sizeof(expirations));
  const TerminalSize now = terminal_size().value_or(TerminalSize{});
  if (now == last_size_) return;
  last_size_ = now;
  if (on_resize_) on_resize_();  // its owner may have let go meanwhile
}

void PtyBackend::watch(bool on) {
  if (on == reading_ || loop_ == nullptr) return;
  if (on) {
    loop_->add(master_.get(), EPOLLIN, [this](uint32_t /*events*/) { read_once(); });
  } else {
    loop_->remove(master_.get());
  }
  reading_ = on;
}

void PtyBackend::read_once() {
  std::array<uint8_t, kCharReadChunk> buffer;
  const ssize_t n = ::read(master_.get(), buffer.data(), buffer.size());
  if (n > 0) {
    sink_(std::span(buffer.data(), static_cast<size_t>(n)));
  } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    return;
  } else {
    // Not expected while the terminal side is held open; stop rather than spin on it.
    log::warn("pty {}: reading failed, no more input: {}", path_,
              n == 0 ? "end of file" : std::strerror(errno));
    failed_ = true;
    watch(false);
  }
}

void PtyBackend::pause_input() {
  watch(false);
}

void PtyBackend::resume_input() {
  if (!failed_) watch(true);
}

}  // namespace libvmm
