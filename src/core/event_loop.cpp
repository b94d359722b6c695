#include "libvmm/core/event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <array>
#include <cerrno>

#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

EventLoop::EventLoop()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_) throw_errno("event loop: epoll_create1");
  if (!wake_) throw_errno("event loop: eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0)
    throw_errno("event loop: epoll_ctl");
}

EventLoop::~EventLoop() {
  // A callback may hold the last reference to an object whose destructor removes its own fds
  // from this loop (a device served elsewhere, whose relay the loop runs): each callback leaves
  // the map before it is destroyed, so such a remove() finds the map whole.
  while (!callbacks_.empty()) {
    auto node = callbacks_.extract(callbacks_.begin());
  }
  std::vector<std::function<void()>> posted;
  {
    std::lock_guard lock(posted_mutex_);
    posted.swap(posted_);
  }
}

void EventLoop::add(int fd, uint32_t events, Callback callback) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("event loop: add fd");
  callbacks_[fd] = std::make_shared<Callback>(std::move(callback));
}

void EventLoop::modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) throw_errno("event loop: modify fd");
}

void EventLoop::remove(int fd) {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  callbacks_.erase(fd);
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(fn));
  }
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
}

void EventLoop::stop() {
  {
    std::lock_guard lock(posted_mutex_);
    stop_ = true;
  }
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
}

bool EventLoop::stopping() const {
  std::lock_guard lock(posted_mutex_);
  return stop_;
}

void EventLoop::drain_wakeups() {
  uint64_t count;
  [[maybe_unused]] auto n = ::read(wake_.get(), &count, sizeof count);
  std::vector<std::function<void()>> work;
  {
    std::lock_guard lock(posted_mutex_);
    work.swap(posted_);
  }
  for (auto& fn : work) fn();
}

void EventLoop::run() {
  std::array<epoll_event, 32> events;
  while (!stopping()) {
    const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("event loop: epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<size_t>(i)].data.fd;
      if (fd == wake_.get()) {
        drain_wakeups();
        continue;
      }
      auto it = callbacks_.find(fd);
      if (it == callbacks_.end()) continue;  // removed by an earlier callback in this batch
      auto callback = it->second;            // keeps it alive if it removes itself
      (*callback)(events[static_cast<size_t>(i)].events);
    }
  }
}

}  // namespace libvmm
