#include "libvmm/core/io_thread.hpp"

#include <pthread.h>

#include <exception>
#include <stdexcept>

#include "libvmm/core/log.hpp"

namespace libvmm {

IoThread::IoThread(std::string name, Work work, std::function<void()> on_start)
    : name_(std::move(name)),
      work_(std::move(work)),
      on_start_(std::move(on_start)),
      thread_([this] { run(); }) {}

IoThread::~IoThread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    yield_.store(true, std::memory_order_release);
  }
  wake_.notify_all();
  idle_.notify_all();
  thread_.join();
}

void IoThread::kick() {
  {
    std::lock_guard lock(mutex_);
    if (kicked_) return;
    kicked_ = true;
  }
  wake_.notify_one();
}

void IoThread::pause() {
  if (std::this_thread::get_id() == thread_.get_id()) {
    throw std::logic_error(name_ + ": pause() from the I/O thread itself");
  }
  std::unique_lock lock(mutex_);
  ++pauses_;
  yield_.store(true, std::memory_order_release);
  idle_.wait(lock, [this] { return !running_; });
}

void IoThread::resume() {
  {
    std::lock_guard lock(mutex_);
    if (pauses_ == 0) throw std::logic_error(name_ + ": resume() without pause()");
    if (--pauses_ > 0) return;
    yield_.store(stopping_, std::memory_order_release);
  }
  wake_.notify_one();
}

void IoThread::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return stopping_ || pauses_ > 0 || (!kicked_ && !running_); });
}

void IoThread::run() {
  pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
  if (on_start_) on_start_();
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [this] { return stopping_ || (kicked_ && pauses_ == 0); });
    if (stopping_) break;
    kicked_ = false;
    running_ = true;
    lock.unlock();
    bool again = false;
    try {
      again = work_();
    } catch (const std::exception& e) {
      log::error("{}: {}", name_, e.what());
    }
    lock.lock();
    running_ = false;
    if (again) kicked_ = true;
    idle_.notify_all();
  }
}

}  // namespace libvmm
