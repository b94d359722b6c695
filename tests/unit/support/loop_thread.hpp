// An event loop running on its own thread, as in the VMM; call() runs code on it and waits.
#pragma once

#include <future>
#include <thread>

#include "libvmm/core/event_loop.hpp"

namespace libvmm::test {

class LoopThread {
 public:
  LoopThread() : thread_([this] { loop.run(); }) {}
  ~LoopThread() {
    loop.stop();
    thread_.join();
  }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  // Runs `fn` on the loop thread, after everything posted before, and returns once it has run.
  template <typename F>
  void call(F fn) {
    std::promise<void> done;
    loop.post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  EventLoop loop;  // constructed before thread_, which runs it

 private:
  std::thread thread_;
};

}  // namespace libvmm::test
