// Flow control of host input for a character device (Uart16550, VirtioConsole): the device pauses
// its CharBackend while too much input waits for the guest, and resumes it below half of that.
//
// Flow control is a desired state, not a stream of commands. The device records what it wants
// (update(), under its own lock, so the last call is the newest decision) and apply(), on the
// event loop thread, tells the backend that *current* wish only if it differs from what the
// backend was last told. A stale apply() (posted before a newer decision) therefore applies the
// newer decision or nothing, and never undoes it.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>

namespace libvmm {

class CharBackend;
class EventLoop;

class InputFlowControl : public std::enable_shared_from_this<InputFlowControl> {
 public:
  // Input pauses once `limit` bytes wait (a limit of 0 counts as 1), and resumes once fewer than
  // half of them do. Shared, so that tasks posted to the loop keep it (and the backend) alive.
  static std::shared_ptr<InputFlowControl> create(std::shared_ptr<CharBackend> backend,
                                                  size_t limit);

  // Decides from the bytes now waiting whether input should be paused; true if that changed.
  // Only the backend hears of it, through apply(). Callers serialize update() (their own lock).
  bool update(size_t waiting);
  bool wants_paused() const { return wanted_paused_.load(); }

  // On the loop thread (or directly, without one): tells the backend the current wish if it
  // differs from what the backend was last told. Called again from inside the backend's
  // pause_input()/resume_input() (a device receiving what the backend held), it returns at once
  // and the call in progress applies the newest wish once the backend returns.
  void apply();
  // apply() posted to `loop`, or called directly if `loop` is null (before start(), in tests).
  void request_apply(EventLoop* loop);

 private:
  InputFlowControl(std::shared_ptr<CharBackend> backend, size_t limit);

  const std::shared_ptr<CharBackend> backend_;
  const size_t limit_;
  std::atomic<bool> wanted_paused_{false};
  std::mutex apply_mutex_;                        // orders the calls to the backend
  bool backend_paused_ = false;                   // what the backend was last told
  std::atomic<std::thread::id> applying_thread_;  // the thread inside apply(), if any
};

}  // namespace libvmm
