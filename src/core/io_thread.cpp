#include "libvmm/core/io_thread.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>

#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

namespace {

UniqueFd make_wake_fd() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) throw_errno("eventfd for an I/O thread");
  return fd;
}

}  // namespace

IoThread::IoThread(std::string name, Work work, StartHook on_start, std::function<void()> on_pause)
    : name_(std::move(name)),
      work_(std::move(work)),
      on_start_(std::move(on_start)),
      on_pause_(std::move(on_pause)),
      wake_fd_(make_wake_fd()),
      thread_([this] { run(); }) {}

IoThread::~IoThread() {
  stop();
}

void IoThread::stop() {
  stop_source_.request_stop();  // a start hook still waiting gives up
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    yield_.store(true, std::memory_order_release);
  }
  wake();
  idle_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void IoThread::wake() {
  const uint64_t one = 1;
  // Only fails when the counter is about to overflow, which means a wake-up is pending anyway.
  static_cast<void>(::write(wake_fd_.get(), &one, sizeof one));
}

void IoThread::kick() {
  bool sleeping = false;
  {
    std::lock_guard lock(mutex_);
    if (kicked_) return;
    kicked_ = true;
    sleeping = waiting_;
  }
  if (sleeping) wake();
}

void IoThread::watch(UniqueFd eventfd) {
  if (!eventfd) throw std::invalid_argument(name_ + ": watch() needs an eventfd");
  {
    std::lock_guard lock(mutex_);
    watched_.push_back(std::move(eventfd));
  }
  wake();  // poll() again with it
}

void IoThread::pause() {
  if (std::this_thread::get_id() == thread_.get_id()) {
    throw std::logic_error(name_ + ": pause() from the I/O thread itself");
  }
  std::unique_lock lock(mutex_);
  if (++pauses_ == 1 && on_pause_) {
    pause_work_pending_ = true;
    wake();  // out of poll(), to run it
  }
  yield_.store(true, std::memory_order_release);
  // A thread that has ended runs nothing more: the pauser then finds what it left. One still
  // in its start hook (waiting for its VM, say) has nothing in flight, and runs the pause work
  // before any work: waiting for it could wait for ever (a VM that never opens the gate).
  idle_.wait(lock, [this] {
    return in_start_hook_ || (!running_ && (!pause_work_pending_ || stopping_));
  });
}

void IoThread::resume() {
  {
    std::lock_guard lock(mutex_);
    if (pauses_ == 0) throw std::logic_error(name_ + ": resume() without pause()");
    if (--pauses_ > 0) return;
    yield_.store(stopping_, std::memory_order_release);
  }
  wake();
}

void IoThread::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return stopping_ || pauses_ > 0 || (!kicked_ && !running_); });
}

void IoThread::retire_watched(const std::function<bool(int)>& which) {
  // Kept open until the owner ends the thread: closing is no call of the I/O thread's seccomp
  // role (and a descriptor number closed here could be reused under another thread).
  for (auto it = watched_.begin(); it != watched_.end();) {
    if (which(it->get())) {
      retired_.push_back(std::move(*it));
      it = watched_.erase(it);
    } else {
      ++it;
    }
  }
}

bool IoThread::wait(std::unique_lock<std::mutex>& lock) {
  // The set is rebuilt for every sleep (watch() and pauses change it); its storage is reused.
  std::vector<pollfd>& fds = poll_set_;
  fds.assign(1, {wake_fd_.get(), POLLIN, 0});
  if (pauses_ == 0) {
    for (const UniqueFd& fd : watched_) fds.push_back({fd.get(), POLLIN, 0});
  }
  waiting_ = true;
  lock.unlock();
  const int ready = ::poll(fds.data(), fds.size(), -1);
  const int poll_errno = errno;
  bool notified = false;
  std::vector<int> broken;
  for (size_t i = 0; ready > 0 && i < fds.size(); ++i) {
    if (fds[i].revents & (POLLERR | POLLNVAL)) {
      broken.push_back(fds[i].fd);
    } else if (fds[i].revents & POLLIN) {
      uint64_t count = 0;
      if (::read(fds[i].fd, &count, sizeof count) == sizeof count && i > 0) notified = true;
    }
  }
  lock.lock();
  waiting_ = false;
  if (ready < 0 && (poll_errno == ENOMEM || poll_errno == EAGAIN)) {
    // The host is short of memory for the poll table: the set is fine, so it stays (dropping
    // it would stall the queues for good, their ioeventfds taking every notification); the
    // next wait tries again after a pause, so the thread does not spin.
    static log::RateLimited warnings("I/O thread poll failures", 1);
    warnings.warn(name_, fmt::format("poll: {}; trying again", std::strerror(poll_errno)));
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    lock.lock();
  } else if (ready < 0 && poll_errno != EINTR) {
    // Only a broken set (EINVAL, EFAULT) is left: stop watching rather than spin.
    log::error("{}: poll: {}; queue notifications now reach it only through kicks", name_,
               std::strerror(poll_errno));
    retire_watched([](int) { return true; });
  }
  for (const int fd : broken) {
    if (fd == wake_fd_.get()) continue;
    log::error("{}: eventfd {} is broken; no longer watched", name_, fd);
    retire_watched([fd](int w) { return w == fd; });
  }
  return notified;
}

void IoThread::run() {
  pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
  // A thread whose setup failed (its seccomp filter) must not serve the guest unfiltered.
  const bool serve = !on_start_ || on_start_(stop_source_.get_token());
  std::unique_lock lock(mutex_);
  in_start_hook_ = false;
  // Runs `fn` with the lock released and running_ set (what pause() and wait_idle() wait
  // for); an exception is logged. Returns what `fn` returned (false after an exception).
  const auto run_unlocked = [&](const std::function<bool()>& fn) {
    running_ = true;
    lock.unlock();
    bool result = false;
    try {
      result = fn();
    } catch (const std::exception& e) {
      log::error("{}: {}", name_, e.what());
    }
    lock.lock();
    running_ = false;
    return result;
  };
  while (!stopping_) {
    if (pause_work_pending_) {
      run_unlocked([this] {
        on_pause_();
        return false;
      });
      pause_work_pending_ = false;
      idle_.notify_all();
      continue;
    }
    if (!kicked_ || pauses_ > 0) {
      if (wait(lock)) kicked_ = true;
      continue;
    }
    kicked_ = false;
    if (serve && run_unlocked(work_)) kicked_ = true;
    idle_.notify_all();
  }
}

}  // namespace libvmm
