#include "libvmm/core/log.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

namespace libvmm::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<const char*> g_program{"vmm"};
std::atomic<int> g_stderr{STDERR_FILENO};
std::atomic<bool> g_stderr_stuck{false};  // the last line found no room: the next waits not
std::atomic<uint64_t> g_dropped{0};       // lines stderr had no room for, not yet reported
constexpr int kRoomWaitMs = 100;

// Writes all of `text` to the log's stderr, waiting for room only while it is not stuck, or
// to finish a line it began (half a line would run into the next).
bool write_line(std::string_view text) {
  const int fd = g_stderr.load(std::memory_order_relaxed);
  bool waited = false;
  bool begun = false;
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n >= 0) {
      text.remove_prefix(static_cast<size_t>(n));
      begun = begun || n > 0;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN || waited || (!begun && g_stderr_stuck.load(std::memory_order_relaxed))) {
      break;
    }
    pollfd pfd{fd, POLLOUT, 0};
    waited = true;
    if (::poll(&pfd, 1, kRoomWaitMs) <= 0) break;
  }
  g_stderr_stuck.store(!text.empty(), std::memory_order_relaxed);
  return text.empty();
}
}  // namespace

void open_stderr() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return;
    if (!S_ISCHR(st.st_mode) && !S_ISFIFO(st.st_mode)) return;
    const int fd = ::open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) g_stderr.store(fd);
  });
}

int stderr_fd() {
  return g_stderr.load(std::memory_order_relaxed);
}

void set_program_name(const char* name) {
  g_program.store(name, std::memory_order_relaxed);
}

void set_level(Level level) {
  g_level.store(level, std::memory_order_relaxed);
}
Level level() {
  return g_level.load(std::memory_order_relaxed);
}

void write(Level lvl, std::string_view message) {
  // One write() per line so lines from several threads do not interleave. "\r\n" keeps the
  // line readable when the terminal is in raw mode for the guest console.
  std::string line = g_program.load(std::memory_order_relaxed);
  line += ": ";
  if (lvl == Level::warn) line += "warning: ";
  if (lvl == Level::error) line += "error: ";
  line += message;
  const char* end = isatty(STDERR_FILENO) ? "\r\n" : "\n";
  line += end;
  // The lines dropped before, counted once: in the notice if it gets through, else again.
  if (const uint64_t dropped = g_dropped.exchange(0); dropped > 0) {
    const std::string notice = fmt::format("{}: {} log line{} dropped: stderr was not being read{}",
                                           g_program.load(), dropped, dropped == 1 ? "" : "s", end);
    if (!write_line(notice)) {
      g_dropped.fetch_add(dropped + 1);
      return;
    }
  }
  if (!write_line(line)) g_dropped.fetch_add(1);
}

RateLimited::RateLimited(std::string what, uint32_t burst, Clock::duration interval)
    : what_(std::move(what)),
      burst_(burst > 0 ? burst : 1),
      interval_(interval > Clock::duration::zero() ? interval : kDefaultInterval),
      tokens_(burst_) {}

void RateLimited::write_at(Clock::time_point now, Level lvl, std::string_view who,
                           std::string_view message) {
  uint64_t skipped = 0;
  bool left_out = false;
  bool first_left_out = false;
  {
    std::lock_guard lock(mutex_);
    if (!started_) {
      started_ = true;
      refilled_ = now;
    } else if (now > refilled_) {
      // One line's worth comes back per interval, up to a whole burst.
      const auto intervals = static_cast<uint64_t>((now - refilled_) / interval_);
      if (intervals > 0) {
        tokens_ = static_cast<uint32_t>(std::min<uint64_t>(burst_, tokens_ + intervals));
        refilled_ += interval_ * static_cast<int64_t>(intervals);
      }
    }
    if (tokens_ == burst_) limiting_ = false;  // quiet long enough: a new flood gets a new note
    if (tokens_ == 0) {
      left_out = true;
      first_left_out = !limiting_;
      limiting_ = true;
      ++skipped_;
      ++left_out_;
    } else {
      --tokens_;
      skipped = skipped_;
      skipped_ = 0;
    }
  }
  if (level() < lvl) return;  // counted all the same: the limit holds whatever the level
  if (left_out) {
    if (first_left_out) {
      write(lvl, fmt::format("{}: further {} are not logged for now (one every {} s gets through)",
                             who, what_,
                             std::chrono::duration_cast<std::chrono::seconds>(interval_).count()));
    }
    return;
  }
  if (skipped > 0) write(lvl, fmt::format("{}: {} not logged meanwhile: {}", who, what_, skipped));
  write(lvl, fmt::format("{}: {}", who, message));
}

uint64_t RateLimited::left_out() const {
  std::lock_guard lock(mutex_);
  return left_out_;
}

}  // namespace libvmm::log
