#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <thread>

#include "libvmm/core/event_loop.hpp"

using namespace libvmm;

TEST(EventLoop, StopBeforeRunReturnsImmediately) {
  EventLoop loop;
  loop.stop();
  loop.run();
  SUCCEED();
}

TEST(EventLoop, PostRunsOnTheLoopThreadAndStops) {
  EventLoop loop;
  std::thread::id ran_on;
  std::thread poster([&] {
    loop.post([&] {
      ran_on = std::this_thread::get_id();
      loop.stop();
    });
  });
  loop.run();
  poster.join();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(EventLoop, FdCallbackCanRemoveItself) {
  EventLoop loop;
  UniqueFd efd(::eventfd(0, EFD_NONBLOCK));
  int calls = 0;
  loop.add(efd.get(), EPOLLIN, [&](uint32_t) {
    ++calls;
    loop.remove(efd.get());
    loop.stop();
  });
  const uint64_t one = 1;
  ASSERT_EQ(::write(efd.get(), &one, sizeof one), 8);
  loop.run();
  EXPECT_EQ(calls, 1);
}
