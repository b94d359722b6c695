#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <memory>
#include <thread>
#include <vector>

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

// What Vm's teardown does with a device served elsewhere over virtio-pci: the loop's relay
// callback holds the last reference to the device, whose destructor removes the device's other
// fds from the loop, while the loop is being destroyed.
TEST(EventLoop, ACallbacksOwnedObjectMayRemoveFdsWhileTheLoopIsDestroyed) {
  struct Owner {
    EventLoop* loop = nullptr;
    std::vector<int> fds;
    int* destroyed = nullptr;
    ~Owner() {
      for (int fd : fds) loop->remove(fd);
      ++*destroyed;
    }
  };
  int destroyed = 0;
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 4; ++i) fds.emplace_back(::eventfd(0, EFD_NONBLOCK));
  {
    auto loop = std::make_unique<EventLoop>();
    auto owner = std::make_shared<Owner>();
    owner->loop = loop.get();
    owner->destroyed = &destroyed;
    for (const UniqueFd& fd : fds) owner->fds.push_back(fd.get());
    // The first fd's callback (and a posted task) own it: its destructor removes fds that are
    // still in the loop.
    loop->add(fds[0].get(), EPOLLIN, [owner](uint32_t) {});
    for (size_t i = 1; i < fds.size(); ++i) loop->add(fds[i].get(), EPOLLIN, [](uint32_t) {});
    loop->post([owner] {});
    owner.reset();
    loop.reset();
  }
  EXPECT_EQ(destroyed, 1);
}
