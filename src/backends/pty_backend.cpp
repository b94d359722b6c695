#include "libvmm/backends/pty_backend.hpp"

#include <fcntl.h>
#include <poll.h>
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
#include "output_queue.hpp"

namespace libvmm {

PtyBackend::PtyBackend(std::string_view owner) {
  master_.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master_) throw_errno("posix_openpt");
  if (::grantpt(master_.get()) != 0) throw_errno("grantpt");
  if (::unlockpt(master_.get()) != 0) throw_errno("unlockpt");
  std::array<char, 128> name{};
  if (::ptsname_r(master_.get(), name.data(), name.size()) != 0) throw_errno("ptsname_r");
  path_ = name.data();

  {
    // Closed again at once: the VMM's end hangs up from then on whenever nobody has the
    // terminal open (before any close it would not), and the raw mode stays.
    const UniqueFd terminal(::open(path_.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!terminal) throw_errno(path_);
    termios raw{};
    if (::tcgetattr(terminal.get(), &raw) != 0) throw_errno(path_ + ": tcgetattr");
    ::cfmakeraw(&raw);  // no echo, no line editing, no "\n" to "\r\n": the guest does all that
    if (::tcsetattr(terminal.get(), TCSANOW, &raw) != 0) throw_errno(path_ + ": tcsetattr");
  }

  const int flags = ::fcntl(master_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(master_.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    throw_errno(path_ + ": O_NONBLOCK");
  }
  writer_.reset(::fcntl(master_.get(), F_DUPFD_CLOEXEC, 0));  // non-blocking too: one file
  if (!writer_) throw_errno(path_ + ": dup");
  output_ = std::make_unique<OutputQueue>(writer_.get(), false, "pty " + path_);
  attach_watch_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (attach_watch_ && ::inotify_add_watch(attach_watch_.get(), path_.c_str(), IN_OPEN) < 0) {
    attach_watch_.reset();
  }
  if (!attach_watch_) {
    log::debug("pty {}: cannot watch who opens it ({}); looking every {} ms", path_,
               std::strerror(errno), kAttachPoll.count());
  }
  log::info("{}: console on {}", owner, path_);
}

PtyBackend::~PtyBackend() {
  if (attached_.load())
    output_->flush(std::chrono::milliseconds(1000), std::chrono::milliseconds(200));
}

bool PtyBackend::connected() const {
  return attached_.load();
}

void PtyBackend::set_connection_listener(std::function<void()> on_change) {
  on_connection_ = std::move(on_change);
}

void PtyBackend::read_attach_events() {
  // Which opens they were does not matter: the VMM's end tells whether anyone is there now.
  alignas(inotify_event) std::array<char, 4096> buffer;
  while (::read(attach_watch_.get(), buffer.data(), buffer.size()) > 0) {
  }
  check_attach();
}

std::optional<bool> PtyBackend::hangs_up() const {
  pollfd master{master_.get(), POLLIN, 0};
  if (::poll(&master, 1, 0) < 0) return std::nullopt;
  return (master.revents & POLLHUP) != 0;
}

void PtyBackend::check_attach() {
  if (attached_.load() || loop_ == nullptr) return;
  if (hangs_up() == false) set_attached(true);
}

void PtyBackend::set_attached(bool attached) {
  // A vCPU's write that saw the last user still there can fail after they left, when nobody
  // has the terminal open: the next user starts afresh, not with their output discarded.
  if (attached) output_->clear_failure();
  attached_.store(attached);
  if (!attached) {
    // Nobody reads what waited for the user who left: dropped (said first), and then a
    // held-back device goes on.
    output_->discard([this](size_t lost) {
      std::lock_guard lock(write_mutex_);
      dropped_ += lost;
      log::warn("pty {}: the user left; {} bytes of guest output waiting for them dropped", path_,
                lost);
    });
  }
  update_watch();
  log::debug("pty {}: {}", path_, attached ? "a user attached" : "the last user left");
  if (on_connection_) on_connection_();
}

uint64_t PtyBackend::dropped_bytes() const {
  std::lock_guard lock(write_mutex_);
  return dropped_;
}

size_t PtyBackend::write(std::span<const uint8_t> bytes) {
  // Someone reads: at their pace (a queue, then the device holds back).
  if (attached_.load()) return output_->write(bytes);
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
  if (bytes.empty()) {
    if (drop_warned_) {  // read again: say what was lost, and warn at the next loss too
      drop_warned_ = false;
      log::warn("pty {}: read again; {} bytes of guest output dropped so far", path_, dropped_);
    }
    return offered;
  }
  dropped_ += bytes.size();
  if (!drop_warned_) {
    drop_warned_ = true;
    log::warn("pty {}: nobody is reading; dropping guest output", path_);
  }
  return offered;
}

size_t PtyBackend::write_room() {
  return attached_.load() ? output_->room() : kUnbounded;
}

void PtyBackend::set_output_listener(std::function<void()> on_room) {
  output_->set_listener(std::move(on_room));
}

void PtyBackend::start(EventLoop& loop, InputSink sink) {
  loop_ = &loop;
  sink_ = std::move(sink);
  output_->start(loop);
  if (attach_watch_) {
    loop.add(attach_watch_.get(), EPOLLIN, [this](uint32_t /*events*/) { read_attach_events(); });
  } else {
    every(kAttachPoll, attach_timer_, [this] { check_attach(); });
  }
  check_attach();  // a user who came before the loop did
  if (!on_resize_) return;
  last_size_ = terminal_size().value_or(TerminalSize{});
  every(kResizePoll, resize_timer_, [this] { check_size(); });
}

void PtyBackend::every(std::chrono::milliseconds period, UniqueFd& timer,
                       std::function<void()> fn) {
  timer.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer) throw_errno(path_ + ": timerfd_create");
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(period).count();
  const timespec interval{static_cast<time_t>(ns / 1'000'000'000),
                          static_cast<long>(ns % 1'000'000'000)};
  const itimerspec spec{interval, interval};
  if (::timerfd_settime(timer.get(), 0, &spec, nullptr) != 0) {
    throw_errno(path_ + ": timerfd_settime");
  }
  const int fd = timer.get();
  loop_->add(fd, EPOLLIN, [fd, fn = std::move(fn)](uint32_t /*events*/) {
    uint64_t expirations = 0;
    [[maybe_unused]] const ssize_t n = ::read(fd, &expirations, sizeof(expirations));
    fn();
  });
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
  const TerminalSize now = terminal_size().value_or(TerminalSize{});
  if (now == last_size_) return;
  last_size_ = now;
  if (on_resize_) on_resize_();  // its owner may have let go meanwhile
}

void PtyBackend::update_watch() {
  if (loop_ == nullptr) return;
  const bool want = attached_.load() && !failed_;
  // Paused, the master stays on the loop with no events: its hang-up still comes.
  const uint32_t events = paused_ ? 0u : uint32_t{EPOLLIN};
  if (want && watching_) {
    loop_->modify(master_.get(), events);
  } else if (want) {
    loop_->add(master_.get(), events, [this](uint32_t got) { on_master_event(got); });
  } else if (watching_) {
    loop_->remove(master_.get());
  }
  watching_ = want;
}

void PtyBackend::on_master_event(uint32_t events) {
  if (!paused_) {
    read_input();
    return;
  }
  if ((events & (EPOLLHUP | EPOLLERR)) == 0) return;
  // Paused: what the user typed before leaving stays in the pty for the next reader.
  if (hangs_up() == true) set_attached(false);
}

void PtyBackend::read_input() {
  std::array<uint8_t, kCharReadChunk> buffer;
  const ssize_t n = ::read(master_.get(), buffer.data(), buffer.size());
  if (n > 0) {
    sink_(std::span(buffer.data(), static_cast<size_t>(n)));
  } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    return;
  } else if (n < 0 && errno == EIO) {
    set_attached(false);  // nobody has the terminal open, and everything typed was read
  } else {
    log::warn("pty {}: reading failed, no more input: {}", path_,
              n == 0 ? "end of file" : std::strerror(errno));
    failed_ = true;
    update_watch();
  }
}

void PtyBackend::pause_input() {
  paused_ = true;
  update_watch();
}

void PtyBackend::resume_input() {
  paused_ = false;
  update_watch();
}

}  // namespace libvmm
