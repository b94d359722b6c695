// A worker thread for one device's host I/O, so that slow host storage keeps only that device
// waiting, never the event loop, the other devices or the vCPUs.
//
// kick() asks for the work function to run on the thread; it never waits for host I/O, so the
// event loop (a queue notification) and vCPU threads may call it with a device lock held.
// pause() waits for the run in flight to end and holds new runs back until resume(): what a
// caller does to change the state the work depends on (a device reset, a queue taken down,
// teardown). The work itself checks yield_requested() between rounds so a pause waits for at
// most one round. Usable by any device (virtio-blk today; virtio-net could move its TAP I/O here).
//
// Lock order: the caller of kick() may hold any lock; pause(), resume() and wait_idle() must
// be called without a lock the work takes (a device's transport lock), or they deadlock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace libvmm {

class IoThread {
 public:
  // Runs on the thread once per kick (kicks while it runs fold into one more run). Returns true
  // when it stopped early with work left because yield_requested() said so: it then runs again
  // after resume(). An exception is logged and the thread waits for the next kick.
  using Work = std::function<bool()>;

  // Starts the thread, named `name` (at most 15 characters are kept: "blk-io0"). `on_start`
  // runs first on the new thread, before any work: the place for per-thread setup such as a
  // seccomp filter for the "I/O thread" role. It must not throw (that ends the process).
  IoThread(std::string name, Work work, std::function<void()> on_start = {});
  // Waits for the run in flight (if any), then ends and joins the thread.
  ~IoThread();
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  // Any thread: the work should run (again) soon. Never blocks on the work.
  void kick();
  // Any thread but the I/O thread: waits until the work is not running and keeps it from
  // starting until a matching resume(). Pauses nest.
  void pause();
  void resume();
  // For the work: a pause or the end is waiting; return (true) at the next round boundary.
  bool yield_requested() const { return yield_.load(std::memory_order_acquire); }
  // Waits until no run is pending or in flight (returns at once while paused or ending).
  // For tests and orderly shutdown.
  void wait_idle();

  const std::string& name() const { return name_; }

 private:
  void run();

  const std::string name_;
  const Work work_;
  const std::function<void()> on_start_;

  std::mutex mutex_;
  std::condition_variable wake_;  // the thread waits for a kick, a resume or the end
  std::condition_variable idle_;  // pause() and wait_idle() wait for a run to end
  bool kicked_ = false;
  bool running_ = false;
  bool stopping_ = false;
  unsigned pauses_ = 0;
  std::atomic<bool> yield_{false};  // pauses_ > 0 || stopping_
  std::thread thread_;              // last: starts once the rest is initialised
};

}  // namespace libvmm
