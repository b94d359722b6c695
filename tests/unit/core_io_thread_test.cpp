// IoThread: kicks run the work on its own thread; pause() waits for a run in flight and holds
// new ones back; the destructor joins.
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "libvmm/core/io_thread.hpp"

using namespace libvmm;
using namespace std::chrono_literals;

namespace core_io_thread_test {

// A door the work waits at until the test opens it.
class Door {
 public:
  void wait() {
    std::unique_lock lock(mutex_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
  }
  bool wait_arrived(int n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 10s, [&] { return arrived_ >= n; });
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool open_ = false;
};

TEST(IoThread, RunsTheWorkOnItsOwnNamedThreadAfterItsStartHook) {
  std::promise<std::string> hook_name;
  std::atomic<int> runs{0};
  std::thread::id ran_on;
  bool hook_first = false;
  IoThread thread(
      "io-test-thread-long-name",
      [&] {
        ran_on = std::this_thread::get_id();
        ++runs;
        return false;
      },
      [&](std::stop_token) {
        char name[16] = {};
        pthread_getname_np(pthread_self(), name, sizeof name);
        hook_first = runs == 0;
        hook_name.set_value(name);
        return true;
      });
  EXPECT_EQ(hook_name.get_future().get(), "io-test-thread-") << "named first, 15 characters";
  thread.kick();
  thread.wait_idle();
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(hook_first);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

// Found in review: a thread whose seccomp filter failed to load went on to serve the guest.
TEST(IoThread, AStartHookThatFailsKeepsTheWorkFromRunningButPausesComplete) {
  std::atomic<int> runs{0};
  std::atomic<int> pauses{0};
  IoThread thread(
      "io-test",
      [&] {
        ++runs;
        return false;
      },
      [](std::stop_token) { return false; }, [&] { ++pauses; });
  thread.kick();
  thread.wait_idle();
  thread.pause();  // completes: the thread still answers pauses
  thread.resume();
  thread.kick();
  thread.wait_idle();
  EXPECT_EQ(runs, 0);
  EXPECT_EQ(pauses, 1);
}

TEST(IoThread, KicksDuringARunFoldIntoOneMoreRun) {
  Door door;
  std::atomic<int> runs{0};
  IoThread thread("io-test", [&] {
    if (++runs == 1) door.wait();
    return false;
  });
  thread.kick();
  ASSERT_TRUE(door.wait_arrived(1));
  for (int i = 0; i < 5; ++i) thread.kick();  // never waits for the run in flight
  door.open();
  thread.wait_idle();
  EXPECT_EQ(runs, 2);
}

TEST(IoThread, PauseWaitsForTheRunInFlightAndHoldsNewOnesBack) {
  Door door;
  std::atomic<int> runs{0};
  IoThread thread("io-test", [&] {
    if (++runs == 1) door.wait();
    return false;
  });
  thread.kick();
  ASSERT_TRUE(door.wait_arrived(1));
  auto paused = std::async(std::launch::async, [&] { thread.pause(); });
  EXPECT_EQ(paused.wait_for(100ms), std::future_status::timeout) << "the run is still in flight";
  EXPECT_TRUE(thread.yield_requested());
  door.open();
  ASSERT_EQ(paused.wait_for(10s), std::future_status::ready);
  thread.kick();  // held back while paused
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(runs, 1);
  thread.pause();  // pauses nest
  thread.resume();
  EXPECT_EQ(runs, 1);
  thread.resume();
  thread.wait_idle();
  EXPECT_EQ(runs, 2);
  EXPECT_FALSE(thread.yield_requested());
}

// on_pause runs on the thread, woken from its sleep, before pause() returns; only the outermost
// of nested pauses runs it, and after a resume the next pause runs it again. After the thread
// ended, pause() no longer waits for it.
TEST(IoThread, ThePauseWorkRunsOnTheThreadBeforePauseReturns) {
  std::atomic<int> pause_runs{0};
  std::thread::id paused_on;
  auto thread = std::make_unique<IoThread>(
      "io-test", [] { return false; }, nullptr,
      [&] {
        paused_on = std::this_thread::get_id();
        ++pause_runs;
      });
  thread->wait_idle();  // asleep in poll()
  thread->pause();
  EXPECT_EQ(pause_runs, 1);
  EXPECT_NE(paused_on, std::this_thread::get_id());
  thread->pause();  // nested: nothing more
  EXPECT_EQ(pause_runs, 1);
  thread->resume();
  thread->resume();
  thread->pause();
  EXPECT_EQ(pause_runs, 2);
  thread->resume();
  thread->stop();
  thread->pause();  // the thread is gone: returns at once
  EXPECT_EQ(pause_runs, 2);
}

TEST(IoThread, WorkThatYieldsToAPauseRunsAgainAfterResume) {
  std::atomic<int> rounds{0};
  std::atomic<bool> in_work{false};
  IoThread* self = nullptr;
  IoThread thread("io-test", [&] {
    in_work = true;
    while (!self->yield_requested()) {  // a device serving a queue that never empties
      ++rounds;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  });
  self = &thread;
  thread.kick();
  while (!in_work) std::this_thread::sleep_for(1ms);
  thread.pause();
  const int at_pause = rounds;
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(rounds, at_pause) << "nothing runs while paused";
  thread.resume();
  while (rounds == at_pause) std::this_thread::sleep_for(1ms);  // it went on by itself
  thread.pause();  // the destructor joins a paused thread
}

TEST(IoThread, DestructorWaitsForTheRunInFlightAndJoins) {
  Door door;
  auto thread = std::make_unique<IoThread>("io-test", [&] {
    door.wait();
    return false;
  });
  thread->kick();
  ASSERT_TRUE(door.wait_arrived(1));
  auto gone = std::async(std::launch::async, [&] { thread.reset(); });
  EXPECT_EQ(gone.wait_for(100ms), std::future_status::timeout);
  door.open();
  EXPECT_EQ(gone.wait_for(10s), std::future_status::ready);
}

// A start hook waiting for something that will never come (its VM's gate, when the device is
// destroyed before the VM got to open it) gives up when stop() requests the token: the
// destructor joins instead of hanging, and the work never runs.
TEST(IoThread, AStartHookStillWaitingGivesUpWhenTheThreadIsStopped) {
  std::atomic<bool> hook_waiting{false};
  std::atomic<int> runs{0};
  auto thread = std::make_unique<IoThread>(
      "io-test",
      [&] {
        ++runs;
        return false;
      },
      [&](std::stop_token stop) {
        std::mutex mutex;
        std::condition_variable_any never_opened;
        std::unique_lock lock(mutex);
        hook_waiting = true;
        never_opened.wait(lock, stop, [] { return false; });
        return false;
      });
  while (!hook_waiting) std::this_thread::sleep_for(1ms);
  thread->kick();
  auto gone = std::async(std::launch::async, [&] { thread.reset(); });
  EXPECT_EQ(gone.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(runs, 0);
}

// Found in review: a pause of a thread still in its start hook (a disk made in code whose VM
// has not run: its add to a full PCI bus failed, and the transport's end paused it) waited for
// the hook, which waits for the VM: for ever. Nothing is in flight then; the pause work runs
// once the hook returns, before any work.
TEST(IoThread, APauseDoesNotWaitForAStartHook) {
  std::atomic<bool> hook_waiting{false};
  std::atomic<bool> release{false};
  std::atomic<int> runs{0};
  std::atomic<int> pause_runs{0};
  IoThread thread(
      "io-test",
      [&] {
        ++runs;
        return false;
      },
      [&](std::stop_token) {
        hook_waiting = true;
        while (!release) std::this_thread::sleep_for(1ms);
        return true;
      },
      [&] { ++pause_runs; });
  while (!hook_waiting) std::this_thread::sleep_for(1ms);
  auto paused = std::async(std::launch::async, [&] { thread.pause(); });
  ASSERT_EQ(paused.wait_for(10s), std::future_status::ready);
  thread.kick();
  release = true;
  for (int i = 0; i < 1000 && pause_runs == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(pause_runs, 1);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(runs, 0) << "no work while paused";
  thread.resume();
  thread.wait_idle();
  EXPECT_EQ(runs, 1);
}

TEST(IoThread, AnExceptionFromTheWorkIsLoggedAndTheThreadGoesOn) {
  std::atomic<int> runs{0};
  IoThread thread("io-test", [&]() -> bool {
    if (++runs == 1) throw std::runtime_error("host I/O failed");
    return false;
  });
  thread.kick();
  thread.wait_idle();
  thread.kick();
  thread.wait_idle();
  EXPECT_EQ(runs, 2);
}

TEST(IoThread, AWatchedEventfdRunsTheWorkButNotWhilePaused) {
  std::mutex mutex;
  std::condition_variable ran;
  int runs = 0;
  IoThread thread("io-test", [&] {
    std::lock_guard lock(mutex);
    ++runs;
    ran.notify_all();
    return false;
  });
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(fd, 0);
  thread.watch(UniqueFd(::dup(fd)));
  auto signal = [fd] {
    const uint64_t one = 1;
    ASSERT_EQ(::write(fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  };
  auto wait_runs = [&](int n) {
    std::unique_lock lock(mutex);
    return ran.wait_for(lock, 10s, [&] { return runs >= n; });
  };
  auto pending = [fd] {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  };

  signal();
  ASSERT_TRUE(wait_runs(1));
  thread.wait_idle();
  EXPECT_FALSE(pending()) << "the thread read the counter";

  thread.pause();
  signal();
  std::this_thread::sleep_for(100ms);
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(runs, 1);
  }
  thread.resume();
  ASSERT_TRUE(wait_runs(2));
  thread.kick();  // kicks still work beside the eventfd
  ASSERT_TRUE(wait_runs(3));
  ::close(fd);
}

}  // namespace core_io_thread_test
