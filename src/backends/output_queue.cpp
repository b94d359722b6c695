#include "output_queue.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

OutputQueue::OutputQueue(int fd, bool use_send, std::string owner, size_t limit)
    : fd_(fd), use_send_(use_send), owner_(std::move(owner)), limit_(std::max<size_t>(limit, 1)) {}

size_t OutputQueue::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size() - head_;
}

bool OutputQueue::failed() const {
  std::lock_guard lock(mutex_);
  return failed_;
}

void OutputQueue::clear_failure() {
  std::lock_guard lock(mutex_);
  failed_ = false;
}

void OutputQueue::discard(const std::function<void(size_t)>& dropped_bytes) {
  std::function<void()> notify;
  size_t dropped = 0;
  {
    std::lock_guard lock(mutex_);
    dropped = queue_.size() - head_;
    queue_.clear();
    head_ = 0;
    failed_ = false;
    if (refused_) {
      refused_ = false;
      notify = listener_;
    }
  }
  if (watching_) {
    loop_->remove(fd_);
    watching_ = false;
  }
  if (dropped > 0) dropped_bytes(dropped);
  if (notify) notify();
}

void OutputQueue::set_listener(std::function<void()> on_room) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(on_room);
}

size_t OutputQueue::write_some(std::span<const uint8_t> bytes) {
  if (failed_ || bytes.empty()) return 0;
  ssize_t n;
  do {
    n = use_send_ ? ::send(fd_, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL)
                  : ::write(fd_, bytes.data(), bytes.size());
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return static_cast<size_t>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
  // Said once: the reader is gone (EPIPE), the terminal hung up (EIO), the disk is full...
  failed_ = true;
  queue_.clear();
  head_ = 0;
  log::warn("{}: writing guest output failed, discarding it from now on: {}", owner_,
            std::strerror(errno));
  return 0;
}

void OutputQueue::write_queued() {
  while (head_ < queue_.size() && !failed_) {
    const size_t n = write_some(std::span(queue_).subspan(head_));
    if (n == 0) break;
    head_ += n;
  }
  if (head_ == queue_.size()) {
    queue_.clear();
    head_ = 0;
  } else if (head_ > 0) {
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(head_));
    head_ = 0;
  }
}

size_t OutputQueue::write(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  if (failed_) return bytes.size();
  const bool was_empty = queue_.size() == head_;
  size_t taken = 0;
  // Behind queued output it would overtake. Again after a short write: on a regular file, which
  // cannot be waited for, that is the disk filling, and only the next write says so (ENOSPC).
  while (was_empty && taken < bytes.size()) {
    const size_t n = write_some(bytes.subspan(taken));
    if (n == 0) break;
    taken += n;
  }
  if (failed_) return bytes.size();
  const std::span<const uint8_t> rest = bytes.subspan(taken);
  const size_t fits = std::min(rest.size(), limit_ - (queue_.size() - head_));
  queue_.insert(queue_.end(), rest.begin(), rest.begin() + static_cast<ptrdiff_t>(fits));
  taken += fits;
  if (taken < bytes.size()) refused_ = true;
  if (was_empty && fits > 0) request_watch();
  return taken;
}

size_t OutputQueue::room() {
  std::lock_guard lock(mutex_);
  if (failed_) return limit_;
  const size_t room = limit_ - (queue_.size() - head_);
  if (room == 0) refused_ = true;
  return room;
}

void OutputQueue::start(EventLoop& loop) {
  std::lock_guard lock(mutex_);
  loop_ = &loop;
  if (queue_.size() > head_) request_watch();  // output from before the loop ran
}

void OutputQueue::request_watch() {
  if (loop_ == nullptr || watch_posted_) return;
  watch_posted_ = true;
  loop_->post([this] {
    bool wanted;
    {
      std::lock_guard lock(mutex_);
      watch_posted_ = false;
      wanted = !failed_ && queue_.size() > head_;
    }
    if (!wanted || watching_) return;
    try {
      loop_->add(fd_, EPOLLOUT, [this](uint32_t /*events*/) { on_writable(); });
      watching_ = true;
    } catch (const SystemError& e) {
      // Only fds that never make a write wait (regular files, /dev/null) are unpollable, and
      // those never queue; should one anyway, its output cannot be drained: discard it.
      std::lock_guard lock(mutex_);
      failed_ = true;
      queue_.clear();
      head_ = 0;
      log::warn("{}: cannot wait for the output to drain, discarding guest output: {}", owner_,
                std::strerror(e.code()));
    }
  });
}

void OutputQueue::on_writable() {
  std::function<void()> notify;
  bool empty;
  {
    std::lock_guard lock(mutex_);
    write_queued();
    empty = queue_.size() == head_;
    if (refused_ && (failed_ || (queue_.size() - head_) <= limit_ / 2)) {
      refused_ = false;
      notify = listener_;
    }
  }
  if (empty && watching_) {
    loop_->remove(fd_);
    watching_ = false;
  }
  if (notify) notify();
}

void OutputQueue::flush(std::chrono::milliseconds budget, std::chrono::milliseconds stall) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + budget;
  std::lock_guard lock(mutex_);
  while (true) {
    write_queued();
    if (failed_ || queue_.size() == head_) return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    pollfd pfd{fd_, POLLOUT, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::min(left, stall).count()));
    if (ready == 0) break;  // nobody is reading
    if (ready < 0 && errno != EINTR) break;
  }
  log::warn("{}: {} bytes of guest output were not written: nobody read them", owner_,
            queue_.size() - head_);
}

}  // namespace libvmm
