// A worker thread for one device's host I/O, so that slow host storage keeps only that device
// waiting, never the event loop, the other devices or the vCPUs.
//
// kick() asks for the work function to run on the thread; it never waits for host I/O, so the
// event loop and vCPU threads may call it with a device lock held. The thread may also wait on
// eventfds itself (watch(): a queue's notify ioeventfd), so a guest's notification wakes it
// straight from KVM, without a hop through the event loop: a signalled eventfd is a kick.
// The thread sleeps in poll() on those and on its own wake eventfd, never spins.
// pause() waits for the run in flight to end and holds new runs back until resume(): what a
// caller does to change the state the work depends on (a device reset, a queue taken down,
// teardown). The work itself checks yield_requested() between rounds so a pause waits for at
// most one round. Usable by any device (virtio-blk today; virtio-net could move its TAP I/O here).
//
// Lock order: the caller of kick() may hold any lock; pause(), resume() and wait_idle() must
// be called without a lock the work takes (a device's transport lock), or they deadlock.
#pragma once

#include <poll.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class IoThread {
 public:
  // Runs on the thread once per kick (kicks while it runs fold into one more run). Returns true
  // when it stopped early with work left because yield_requested() said so: it then runs again
  // after resume(). An exception is logged and the thread waits for the next kick.
  using Work = std::function<bool()>;
  // Per-thread setup (on_start below), with a token stop() requests: a hook that waits must
  // give up when it is (a device destroyed before its VM let the thread begin).
  using StartHook = std::function<bool(std::stop_token)>;

  // Starts the thread, named `name` (at most 15 characters are kept: "blk-io0"). `on_start`
  // runs first on the new thread, before any work: the place for per-thread setup such as a
  // seccomp filter for the "I/O thread" role. It must not throw (that ends the process); false
  // (the setup failed) and the thread never runs `work` (pauses still complete) until it ends.
  // `on_pause` runs on the thread when a pause begins (none was in force), after the run in
  // flight and before pause() returns: where a device finishes the host I/O it left in flight,
  // so that the pauser (a vCPU writing a status register) makes no I/O calls of its own.
  IoThread(std::string name, Work work, StartHook on_start = {},
           std::function<void()> on_pause = {});
  // Waits for the run in flight (if any), then ends and joins the thread (stop()).
  ~IoThread();
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  // Any thread but the I/O thread: waits for the run in flight (if any), then ends and joins the
  // thread; the work never runs again. For an owner that must know the thread is gone before
  // it tears down what the work uses, while the work may still reach the IoThread itself.
  void stop();
  // Any thread: the work should run (again) soon. Never blocks on the work.
  void kick();
  // Any thread: the thread also waits on `eventfd` (it owns it from now on) and, when it is
  // signalled, reads its counter and runs the work as for a kick. While paused the work does
  // not run: a signal is held (in the counter, or as a kick) until resume(). An fd that poll()
  // reports as broken is logged and dropped.
  void watch(UniqueFd eventfd);
  // Any thread but the I/O thread: waits until the work is not running (and on_pause has run,
  // unless the thread has ended or is still in its start hook, where nothing is in flight: then
  // on_pause runs once the hook returns, before any work) and keeps it from starting until a
  // matching resume(). Pauses nest; only the outermost runs on_pause.
  void pause();
  void resume();
  // For the work: a pause or the end is waiting; return (true) at the next round boundary.
  bool yield_requested() const { return yield_.load(std::memory_order_acquire); }
  // Waits until no run is pending or in flight (returns at once while paused or ending).
  // A watched eventfd's signal counts once the thread has read it. For tests and shutdown.
  void wait_idle();

  const std::string& name() const { return name_; }

 private:
  void run();
  // Sleeps in poll() until the wake eventfd or (unless paused) a watched one is signalled;
  // called and returns with `lock` held. True if a watched one was.
  bool wait(std::unique_lock<std::mutex>& lock);
  void wake();  // signals the wake eventfd
  // Under the lock: the watched fds `which` says, no longer watched, into retired_.
  void retire_watched(const std::function<bool(int)>& which);

  const std::string name_;
  const Work work_;
  const StartHook on_start_;
  const std::function<void()> on_pause_;

  std::mutex mutex_;
  std::condition_variable idle_;   // pause() and wait_idle() wait for a run to end
  UniqueFd wake_fd_;               // kick (while waiting_), resume and the end wake the thread
  std::vector<UniqueFd> watched_;  // guarded by mutex_
  std::vector<UniqueFd> retired_;  // guarded by mutex_: dropped from watched_, closed by ~IoThread
  std::vector<pollfd> poll_set_;   // the thread's own
  bool waiting_ = false;           // the thread is in (or about to enter) poll()
  bool kicked_ = false;
  bool running_ = false;
  // The thread is in its start hook (a pause does not wait for it); set before the thread runs.
  bool in_start_hook_ = static_cast<bool>(on_start_);
  bool pause_work_pending_ = false;  // on_pause_ is to run before the pause is in force
  bool stopping_ = false;
  unsigned pauses_ = 0;
  std::atomic<bool> yield_{false};  // pauses_ > 0 || stopping_
  std::stop_source stop_source_;    // on_start_'s token: stop() requests it
  std::thread thread_;              // last: starts once the rest is initialised
};

}  // namespace libvmm
