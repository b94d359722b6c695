// An epoll event loop for host I/O (console input, device backends, stop requests).
// Devices never block a vCPU thread on host I/O: they hand it to the loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class EventLoop {
 public:
  using Callback = std::function<void(uint32_t epoll_events)>;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Watches `fd` for `events` (EPOLLIN, EPOLLOUT, ...). Callbacks run on the loop thread.
  // Loop-thread only once run() has started (use post() from elsewhere).
  void add(int fd, uint32_t events, Callback callback);
  void modify(int fd, uint32_t events);
  void remove(int fd);  // safe from inside a callback, including the fd's own

  // Thread-safe: runs `fn` on the loop thread soon; work posted once the loop has stopped is
  // dropped unrun when the loop goes.
  void post(std::function<void()> fn);

  // Runs until stop(). Returns immediately if stop() was already called.
  void run();
  // Thread-safe and async-signal-unsafe; may be called before run().
  void stop();
  bool stopping() const;

 private:
  void drain_wakeups();

  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: post() and stop() wake the loop through it
  std::map<int, std::shared_ptr<Callback>> callbacks_;
  mutable std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;
  bool stop_ = false;  // guarded by posted_mutex_
};

}  // namespace libvmm
