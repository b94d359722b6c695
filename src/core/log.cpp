#include "libvmm/core/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>
#include <utility>

namespace libvmm::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<const char*> g_program{"vmm"};
}  // namespace

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
  line += isatty(STDERR_FILENO) ? "\r\n" : "\n";
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
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
