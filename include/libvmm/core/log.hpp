// Minimal leveled logging to stderr, prefixed with the program's name ("vmm: ").
#pragma once

#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace libvmm::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };

void set_level(Level level);
// The prefix of every line (default "vmm"); `name` must outlive the program (a literal).
void set_program_name(const char* name);
Level level();
void write(Level level, std::string_view message);
// Gives the log its own description of stderr with O_NONBLOCK where stderr is a terminal or a
// pipe, so that a reader who stopped reading (a stopped terminal, a full pipe) costs log lines,
// counted, never a thread held in write() (a vCPU with a device's lock; the event loop, and the
// quit key on it). A line waits at most 100 ms for room, and none waits again until one gets
// through. Call it before any seccomp filter (it opens /proc/self/fd/2); without it lines go to
// stderr as it is. Regular files never block; sockets keep the shared description.
void open_stderr();
// What open_stderr() opened, else STDERR_FILENO: for other text meant for stderr.
int stderr_fd();

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::warn) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::info) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::debug) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}

// Warnings that something outside the VMM's control (a guest, a failing host resource) can
// cause as often as it likes: a burst of `burst` lines, then one per `interval` while they keep
// coming. The first line left out says so (once a flood, until a whole burst has come back);
// the next one let through first says how many were left out. So a guest can neither flood the
// log nor silence it for good. Thread-safe.
class RateLimited {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kDefaultInterval = std::chrono::seconds(10);

  // `what` names the lines in the notes about them, e.g. "guest errors".
  explicit RateLimited(std::string what, uint32_t burst = 16,
                       Clock::duration interval = kDefaultInterval);
  RateLimited(const RateLimited&) = delete;
  RateLimited& operator=(const RateLimited&) = delete;

  // Writes "WHO: MESSAGE" as a warning (or debug line) if the limit lets it through and the
  // level shows it; the notes about left-out lines come at the same level.
  void warn(std::string_view who, std::string_view message) {
    write_at(Clock::now(), Level::warn, who, message);
  }
  void debug(std::string_view who, std::string_view message) {
    write_at(Clock::now(), Level::debug, who, message);
  }
  void write_at(Clock::time_point now, Level level, std::string_view who, std::string_view message);
  uint64_t left_out() const;  // lines left out so far

 private:
  const std::string what_;
  const uint32_t burst_;
  const Clock::duration interval_;
  mutable std::mutex mutex_;
  uint32_t tokens_;
  Clock::time_point refilled_{};
  bool started_ = false;
  bool limiting_ = false;  // lines were left out since the burst was last whole
  uint64_t skipped_ = 0;   // since the last line let through
  uint64_t left_out_ = 0;
};

}  // namespace libvmm::log
