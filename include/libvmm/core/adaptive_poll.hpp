// How long an I/O thread keeps looking at queues it has just emptied, notifications still off,
// before it turns them on and sleeps: work the guest adds meanwhile costs it no notification (no
// VM exit) and the thread no wake-up. The budget adapts to the gaps between requests: it starts
// at 0, grows (4 µs, doubling, up to the maximum) after a sleep that polling that long would have
// cut short, and drops to 0 after a sleep longer than the maximum. So a thread polls only right
// after serving work, for at most the maximum each time, and a device that is idle (or gets work
// further apart than that) costs no polling at all. Used by virtio-blk's I/O thread and
// virtio-net's transmit thread; owned by one thread (hits() may be read from any).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace libvmm {

class AdaptivePoll {
 public:
  using Clock = std::chrono::steady_clock;
  // What time it is (steady_clock's unless a test gives its own: a clock the test holds still
  // keeps a poll window open until it moves the clock, so timing cannot decide the outcome).
  using Now = Clock::time_point (*)();
  static constexpr uint64_t kStartNs = 4000;
  static constexpr uint32_t kMaxUs = 1000;  // the most a device's poll_us=N may ask for

  explicit AdaptivePoll(uint32_t max_us = 0, Now now = nullptr)
      : max_ns_(uint64_t{max_us} * 1000), now_(now != nullptr ? now : &steady_now) {}

  bool enabled() const { return max_ns_ != 0; }
  // The thread woke from its sleep: how long it slept moves the budget.
  void woke() {
    polling_ = false;
    if (!idle_since_ || max_ns_ == 0) return;
    const auto slept = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now_() - *idle_since_).count());
    idle_since_.reset();
    if (slept > max_ns_) {
      budget_ns_ = 0;  // work further apart than polling may cost: do not poll
    } else if (slept > budget_ns_) {
      budget_ns_ = budget_ns_ == 0 ? kStartNs : std::min(budget_ns_ * 2, max_ns_);
    }
  }
  // The thread turned notifications on and goes to sleep.
  void sleeping() { idle_since_ = now_(); }
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }

  // The poll window of one wake-up, for a loop of passes over the thread's queues. polling():
  // inside it (the queues' notifications were left off: a pass need not turn them off).
  // A pass that found work calls found(), which ends the window (and counts a hit if it was
  // found by polling). One that found none asks keep_polling(): it opens the window (the
  // budget now) on its first call and, after a short pause, says whether to look again;
  // false: the window is over (or the budget is 0), turn notifications on.
  bool polling() const { return polling_; }
  void found() {
    if (polling_) hits_.fetch_add(1, std::memory_order_relaxed);
    polling_ = false;
  }
  bool keep_polling() {
    if (!polling_) {
      if (budget_ns_ == 0) return false;
      poll_end_ = now_() + std::chrono::nanoseconds(budget_ns_);
      polling_ = true;
    } else if (now_() >= poll_end_) {
      polling_ = false;
      return false;
    }
    for (int i = 0; i < 16; ++i) cpu_relax();
    return true;
  }

 private:
  uint64_t max_ns_;
  Now now_;
  uint64_t budget_ns_ = 0;
  std::optional<Clock::time_point> idle_since_;  // when the thread last went to sleep
  bool polling_ = false;
  Clock::time_point poll_end_{};
  std::atomic<uint64_t> hits_{0};

  static Clock::time_point steady_now() { return Clock::now(); }
  // A short pause in a polling loop: eases the sibling hyperthread and the memory bus.
  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
  }
};

}  // namespace libvmm
