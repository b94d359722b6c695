// virtio-blk with its I/O thread, behind the real MMIO transport and an event loop as in the
// VMM: a backend that blocks keeps only its own device's requests waiting, never the event
// loop, another device or a vCPU reading registers; device reset, queue reset and teardown
// while I/O is in flight wait for it and never touch the rings the driver sets up afterwards.
// (Every other virtio-blk test runs with and without the thread: virtio_block_test.cpp.)
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <dirent.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "unit/support/loop_thread.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;
using namespace std::chrono_literals;

namespace virtio_block_iothread_test {

constexpr auto kPatience = 10s;  // for what must happen; failing tests fail, not hang
constexpr auto kSettle = 100ms;  // for what must not happen
constexpr uint32_t kSector = 512;
constexpr char kThreadName[] = "blk-io7";

// Where a backend's calls wait until the test opens it.
class Gate {
 public:
  void pass() {
    std::unique_lock lock(mutex_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
  }
  bool wait_arrived(int n = 1) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, kPatience, [&] { return arrived_ >= n; });
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  void close() {
    std::lock_guard lock(mutex_);
    open_ = false;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool open_ = false;
};

// A disk in host memory whose reads, writes and flushes wait at a gate (when it has one): host
// storage as slow as the test wants.
class GatedBackend final : public BlockBackend {
 public:
  GatedBackend(uint64_t size, std::shared_ptr<Gate> gate) : data_(size), gate_(std::move(gate)) {
    for (size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<uint8_t>(i / kSector + 1);
  }
  uint64_t size() const override { return data_.size(); }
  bool readonly() const override { return false; }
  int read(uint64_t offset, std::span<iovec> iov) override {
    if (gate_) gate_->pass();
    for (const iovec& v : iov) {
      std::memcpy(v.iov_base, data_.data() + offset, v.iov_len);
      offset += v.iov_len;
    }
    return 0;
  }
  int write(uint64_t offset, std::span<iovec> iov) override {
    if (gate_) gate_->pass();
    for (const iovec& v : iov) {
      std::memcpy(data_.data() + offset, v.iov_base, v.iov_len);
      offset += v.iov_len;
    }
    return 0;
  }
  int flush() override {
    if (gate_) gate_->pass();
    return 0;
  }
  int discard(uint64_t, uint64_t) override { return 0; }
  int write_zeroes(uint64_t, uint64_t, bool) override { return 0; }

 private:
  std::vector<uint8_t> data_;
  std::shared_ptr<Gate> gate_;
};

// The I/O threads of this process with `name`, from /proc/self/task/*/comm.
int threads_named(const std::string& name) {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + entry->d_name + "/comm");
    std::string line;
    if (std::getline(comm, line) && line == name) ++n;
  }
  ::closedir(dir);
  return n;
}

// Runs `fn` on another thread and says whether it returned within kPatience; if not, opens
// `gate` so that it can, and waits for it anyway.
bool returns_promptly(const std::function<void()>& fn, Gate& gate) {
  auto done = std::async(std::launch::async, fn);
  const bool prompt = done.wait_for(kPatience) == std::future_status::ready;
  if (!prompt) gate.open();
  done.get();
  return prompt;
}

// A guest driver of one virtio-blk device at its register window, with its ring at `base`.
struct Disk {
  Disk(GuestMemory& memory, std::shared_ptr<VirtioBlock> block, uint64_t base)
      : device(std::move(block)),
        irq(std::make_shared<FakeIrq>()),
        window(std::make_unique<VirtioMmioTransport>(device, memory, irq)),
        mmio(*window),
        ring(memory, VirtioBlock::kQueueSize, RingLayout::at(base)),
        memory_(&memory) {}

  // Reset, features, queue 0 on the ring, DRIVER_OK.
  void start() const {
    if (!mmio.negotiate(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_RING_F_INDIRECT_DESC) |
                        feature_bit(VIRTIO_BLK_F_FLUSH))) {
      throw std::runtime_error("FEATURES_OK refused");
    }
    mmio.setup_queue(0, ring);
    mmio.driver_ok();
  }
  // Publishes a read of one sector; returns the guest address of its status byte.
  uint64_t publish_read(uint64_t sector) {
    const uint64_t h = ring.alloc(16);
    const virtio_blk_outhdr header{VIRTIO_BLK_T_IN, 0, sector};
    memory_->write_obj(h, header);
    const uint64_t d = ring.alloc(kSector, 512);
    const uint64_t s = ring.alloc(1);
    memory_->write_obj<uint8_t>(s, 0xee);
    ring.add_chain({{h, 16, false}, {d, kSector, true}, {s, 1, true}});
    return s;
  }
  // Until the used index reaches `n` (the I/O thread returns chains asynchronously).
  bool wait_used(uint16_t n) const {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (ring.used_idx() != n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }
  uint8_t status_at(uint64_t gpa) const { return *memory_->read_obj<uint8_t>(gpa); }

  std::shared_ptr<VirtioBlock> device;
  std::shared_ptr<FakeIrq> irq;
  std::unique_ptr<VirtioMmioTransport> window;
  MmioDriver mmio;
  DriverRing ring;

 private:
  GuestMemory* memory_;
};

class BlockIoThreadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BlockThreading threading{true, kThreadName, [this](std::stop_token) {
                               char name[16] = {};
                               pthread_getname_np(pthread_self(), name, sizeof name);
                               hook_ran_on.set_value(name);
                               return true;
                             }};
    disk = std::make_unique<Disk>(
        memory,
        std::make_shared<VirtioBlock>(std::make_unique<GatedBackend>(1 * MiB, gate), "",
                                      std::move(threading)),
        0x10000);
    disk->start();
  }
  void TearDown() override { gate->open(); }  // never leave an I/O thread at the gate

  TestMemory memory{4 * MiB};
  std::shared_ptr<Gate> gate = std::make_shared<Gate>();
  std::promise<std::string> hook_ran_on;
  std::unique_ptr<Disk> disk;  // the device under test, its I/O behind `gate`
};

TEST_F(BlockIoThreadTest, TheThreadIsNamedAndRunsTheStartHookFirst) {
  EXPECT_EQ(hook_ran_on.get_future().get(), kThreadName);
  EXPECT_EQ(threads_named(kThreadName), 1);
  EXPECT_TRUE(disk->device->has_io_thread());
}

TEST_F(BlockIoThreadTest, ABlockedBackendKeepsTheLoopOtherDevicesAndRegistersFree) {
  LoopThread loop;
  // A second disk without an I/O thread, notified through the same event loop.
  Disk other(memory,
             std::make_shared<VirtioBlock>(std::make_unique<GatedBackend>(64 * KiB, nullptr), "",
                                           BlockThreading{false, "unused", {}}),
             0x80000);
  other.start();
  // The queue notify ioeventfds, as Vm wires them: the loop calls the transport's notify().
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int other_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(fd, 0);
  ASSERT_GE(other_fd, 0);
  auto kick = [](int efd) {
    const uint64_t one = 1;
    ASSERT_EQ(::write(efd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  };
  loop.call([&] {
    const std::pair<int, VirtioMmioTransport*> wired[] = {{fd, disk->window.get()},
                                                          {other_fd, other.window.get()}};
    for (const auto& w : wired) {
      const int efd = w.first;
      VirtioMmioTransport* transport = w.second;
      loop.loop.add(efd, EPOLLIN, [efd, transport](uint32_t) {
        uint64_t count;
        if (::read(efd, &count, sizeof count) == sizeof count) transport->notify(0);
      });
    }
  });

  const uint64_t status = disk->publish_read(3);
  kick(fd);
  ASSERT_TRUE(gate->wait_arrived()) << "the I/O thread is in the backend";

  // The loop goes on serving: posted work, the other disk, this disk's next notification.
  EXPECT_TRUE(returns_promptly([&] { loop.call([] {}); }, *gate));
  const uint64_t other_status = other.publish_read(1);
  kick(other_fd);
  EXPECT_TRUE(other.wait_used(1)) << "the other device is served";
  EXPECT_EQ(other.status_at(other_status), VIRTIO_BLK_S_OK);
  disk->publish_read(4);
  kick(fd);
  EXPECT_TRUE(returns_promptly([&] { loop.call([] {}); }, *gate));
  // A vCPU reads this device's registers (Linux's interrupt handler reads InterruptStatus).
  EXPECT_TRUE(returns_promptly([&] { EXPECT_EQ(disk->mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS), 0u); },
                               *gate));
  EXPECT_EQ(disk->ring.used_idx(), 0) << "nothing completes before the host I/O";

  gate->open();
  ASSERT_TRUE(disk->wait_used(2));
  EXPECT_EQ(disk->status_at(status), VIRTIO_BLK_S_OK);
  EXPECT_EQ(disk->ring.used(0).len, kSector + 1);
  EXPECT_GE(disk->irq->pulses, 1);
  EXPECT_EQ(disk->mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
            VIRTIO_MMIO_INT_VRING);
  loop.call([&] {
    loop.loop.remove(fd);
    loop.loop.remove(other_fd);
  });
  ::close(fd);
  ::close(other_fd);
}

// As Vm wires it: the I/O thread waits on the queue's notify eventfd itself, with no event loop
// between KVM and the device. A signal before DRIVER_OK or while the device is reset serves
// nothing; one during a reset waits for it; one during a round is served after it.
TEST_F(BlockIoThreadTest, TheThreadWaitsOnTheQueueNotifyEventfdItself) {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(disk->device->watch_queue_notify(0, fd));
  EXPECT_FALSE(disk->device->watch_queue_notify(1, fd)) << "virtio-blk has one queue";
  auto signal = [fd] {
    const uint64_t one = 1;
    ASSERT_EQ(::write(fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  };

  const uint64_t first = disk->publish_read(2);
  signal();
  ASSERT_TRUE(gate->wait_arrived()) << "the signal woke the thread, which is in the backend";
  const uint64_t second = disk->publish_read(3);
  signal();  // during the round: served after it
  gate->open();
  ASSERT_TRUE(disk->wait_used(2));
  EXPECT_EQ(disk->status_at(first), VIRTIO_BLK_S_OK);
  EXPECT_EQ(disk->status_at(second), VIRTIO_BLK_S_OK);
  EXPECT_GE(disk->irq->pulses, 1);

  // Reset: a signal now serves nothing (the device has no transport), and no chain of the old
  // ring shows up in the new one.
  disk->mmio.set_reg(VIRTIO_MMIO_STATUS, 0);
  disk->ring.restart();
  signal();
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(disk->ring.used_idx(), 0);
  disk->start();
  const uint64_t third = disk->publish_read(4);
  signal();
  ASSERT_TRUE(disk->wait_used(1));
  EXPECT_EQ(disk->status_at(third), VIRTIO_BLK_S_OK);

  // While paused (a reset on its way) a signal waits in the eventfd; it is served on resume.
  disk->device->pause_io();
  disk->publish_read(5);
  signal();
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(disk->ring.used_idx(), 1);
  disk->device->resume_io();
  ASSERT_TRUE(disk->wait_used(2));
  ::close(fd);  // the device keeps its own copy
}

TEST(BlockIoThread, ADeviceWithoutAnIoThreadLeavesTheEventfdToTheLoop) {
  VirtioBlock device(std::make_unique<GatedBackend>(64 * KiB, nullptr), "",
                     BlockThreading{false, "unused", {}});
  EXPECT_FALSE(device.watch_queue_notify(0, 0));
}

TEST_F(BlockIoThreadTest, ResetWaitsForTheIoInFlightAndLeavesTheNewRingAlone) {
  disk->publish_read(0);
  disk->window->notify(0);
  ASSERT_TRUE(gate->wait_arrived());

  // The driver resets the device while the read is at the host: the reset completes only once
  // the host I/O has (no write into guest buffers after it), and other vCPUs are not held.
  auto reset = std::async(std::launch::async, [&] { disk->mmio.set_reg(VIRTIO_MMIO_STATUS, 0); });
  EXPECT_EQ(reset.wait_for(kSettle), std::future_status::timeout);
  EXPECT_TRUE(returns_promptly([&] { disk->mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS); }, *gate));
  gate->open();
  ASSERT_EQ(reset.wait_for(kPatience), std::future_status::ready);
  EXPECT_EQ(disk->mmio.status(), 0u);
  EXPECT_EQ(disk->ring.used_idx(), 1) << "the round in flight ended before the reset";

  // The driver sets up again on a fresh ring: only its own requests show up in it.
  disk->ring.restart();
  disk->start();
  const uint64_t status = disk->publish_read(5);
  disk->window->notify(0);
  ASSERT_TRUE(disk->wait_used(1));
  EXPECT_EQ(disk->status_at(status), VIRTIO_BLK_S_OK);
  EXPECT_EQ(disk->ring.used(0).id, 0u);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(disk->ring.used_idx(), 1) << "nothing from before the reset";
}

TEST_F(BlockIoThreadTest, QueueResetWaitsForTheIoInFlightAndLeavesTheNewRingAlone) {
  disk->publish_read(0);
  disk->window->notify(0);
  ASSERT_TRUE(gate->wait_arrived());

  auto down = std::async(std::launch::async, [&] {
    disk->mmio.set_reg(VIRTIO_MMIO_QUEUE_SEL, 0);
    disk->mmio.set_reg(VIRTIO_MMIO_QUEUE_READY, 0);
  });
  EXPECT_EQ(down.wait_for(kSettle), std::future_status::timeout);
  gate->open();
  ASSERT_EQ(down.wait_for(kPatience), std::future_status::ready);
  EXPECT_EQ(disk->mmio.reg(VIRTIO_MMIO_QUEUE_READY), 0u);
  EXPECT_EQ(disk->ring.used_idx(), 1);

  disk->ring.restart();
  disk->mmio.setup_queue(0, disk->ring);  // the device stayed DRIVER_OK
  const uint64_t status = disk->publish_read(6);
  disk->window->notify(0);
  ASSERT_TRUE(disk->wait_used(1));
  EXPECT_EQ(disk->status_at(status), VIRTIO_BLK_S_OK);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(disk->ring.used_idx(), 1);
}

TEST_F(BlockIoThreadTest, TeardownWaitsForTheIoInFlightAndJoinsTheThread) {
  hook_ran_on.get_future().wait();  // the thread has named itself
  ASSERT_EQ(threads_named(kThreadName), 1);
  disk->publish_read(0);
  disk->window->notify(0);
  ASSERT_TRUE(gate->wait_arrived());
  auto teardown = std::async(std::launch::async, [&] { disk.reset(); });
  EXPECT_EQ(teardown.wait_for(kSettle), std::future_status::timeout);
  gate->open();
  ASSERT_EQ(teardown.wait_for(kPatience), std::future_status::ready);
  EXPECT_EQ(threads_named(kThreadName), 0);
}

// The bound docs/SECURITY.md states for iothread=on: while the I/O thread carries out the worst
// rounds the device accepts (writes of 63.5 MiB into holes of a tmpfs image, as in
// VirtioBlockTest.WorstNotificationOnATmpfsImageEndsWithinItsBound), what the event loop does
// for a notification (VirtioMmioTransport::notify) and a vCPU's InterruptStatus read wait only
// for the lock the thread holds to take or return chains, not for the I/O. Prints the figures;
// checks them against a wide bound (not a performance test).
TEST(BlockIoThread, WorstRoundsKeepNotifyAndRegisterReadsShort) {
  constexpr auto kBound = std::chrono::milliseconds(500);
  if (::access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no writable /dev/shm";
  constexpr uint64_t kRequest = VirtioBlock::kMaxRequestBytes;
  std::string path = "/dev/shm/virtio_block_iothread_test.XXXXXX";
  const int fd = ::mkstemp(path.data());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(3 * kRequest)), 0);  // sparse
  TestMemory memory(4 * MiB);
  {
    BlockConfig config;
    config.path = path;
    Disk disk(memory, std::make_shared<VirtioBlock>(config), 0x10000);
    disk.start();
    const uint64_t data = disk.ring.alloc(VirtioBlock::kSizeMax, 4096);
    ASSERT_TRUE(memory.fill(data, 0x77, VirtioBlock::kSizeMax));
    for (uint64_t i = 0; i < 3; ++i) {
      const uint64_t h = disk.ring.alloc(16);
      ASSERT_TRUE(memory.write_obj(h, virtio_blk_outhdr{VIRTIO_BLK_T_OUT, 0, i * kRequest / 512}));
      std::vector<Buffer> bufs{{h, 16, false}};
      for (uint32_t b = 0; b < VirtioBlock::kSegMax; ++b) {
        bufs.push_back({data, VirtioBlock::kSizeMax, false});
      }
      bufs.push_back({disk.ring.alloc(1), 1, true});
      disk.ring.add_indirect_chain(disk.ring.alloc(16 * bufs.size(), 16), bufs);
    }
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    disk.window->notify(0);
    Clock::duration longest{};
    int samples = 0;
    while (disk.ring.used_idx() != 3 && Clock::now() - start < kPatience) {
      const auto t0 = Clock::now();
      disk.mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS);
      disk.window->notify(0);
      longest = std::max(longest, Clock::now() - t0);
      ++samples;
    }
    const auto rounds = Clock::now() - start;
    ASSERT_EQ(disk.ring.used_idx(), 3);
    // The same for as long with the device idle: what this machine's scheduling adds anyway.
    Clock::duration idle_longest{};
    for (const auto idle_start = Clock::now(); Clock::now() - idle_start < rounds;) {
      const auto t0 = Clock::now();
      disk.mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS);
      disk.window->notify(0);
      idle_longest = std::max(idle_longest, Clock::now() - t0);
    }
    using std::chrono::duration_cast;
    using std::chrono::microseconds;
    std::printf(
        "worst rounds: %lld ms for %llu MiB; longest notify + InterruptStatus read meanwhile: "
        "%lld us (%d samples); the same with the device idle: %lld us\n",
        static_cast<long long>(duration_cast<std::chrono::milliseconds>(rounds).count()),
        static_cast<unsigned long long>(3 * kRequest / MiB),
        static_cast<long long>(duration_cast<microseconds>(longest).count()), samples,
        static_cast<long long>(duration_cast<microseconds>(idle_longest).count()));
    ::testing::Test::RecordProperty("longest_register_us",
                                    static_cast<int>(duration_cast<microseconds>(longest).count()));
    EXPECT_LT(longest, kBound);
  }
  ::unlink(path.c_str());
  ::close(fd);
}

// A transport that resets the device without pausing its I/O first (not what
// VirtioMmioTransport does): the round in flight is dropped, not returned into the new ring.
TEST(BlockIoThread, ARoundInFlightAcrossAnUnpausedResetIsDropped) {
  TestMemory memory(4 * MiB);
  auto gate = std::make_shared<Gate>();
  auto device = std::make_shared<VirtioBlock>(std::make_unique<GatedBackend>(64 * KiB, gate), "",
                                              BlockThreading{true, "blk-io-test", {}});
  Virtqueue queue(memory, 64);
  DriverRing ring(memory, 64, RingLayout::at(0x10000));
  ring.configure(queue);
  FakeTransport transport;
  transport.serve(std::span(&queue, 1));
  device->activate(transport, feature_bit(VIRTIO_BLK_F_FLUSH));
  const uint64_t h = ring.alloc(16);
  const uint64_t s = ring.alloc(1);
  memory.write_obj(h, virtio_blk_outhdr{VIRTIO_BLK_T_FLUSH, 0, 0});
  ring.add_chain({{h, 16, false}, {s, 1, true}});
  device->queue_notify(0, queue);
  ASSERT_TRUE(gate->wait_arrived());

  device->reset();  // the I/O thread is at the gate, so nothing else touches the queue
  queue.reset();
  ring.restart();
  ring.configure(queue);
  device->activate(transport, feature_bit(VIRTIO_BLK_F_FLUSH));
  gate->open();
  device->wait_idle();
  EXPECT_EQ(ring.used_idx(), 0) << "the old round's chain went nowhere";
  EXPECT_EQ(transport.signals(), 0);

  ring.add_chain({{h, 16, false}, {s, 1, true}});
  device->queue_notify(0, queue);
  device->wait_idle();
  EXPECT_EQ(ring.used_idx(), 1);
  EXPECT_EQ(*memory.read_obj<uint8_t>(s), VIRTIO_BLK_S_OK);
}

// Adaptive polling: requests that follow each other closely grow the budget until the thread
// finds the next one by looking (no notification, notifications off meanwhile); a sleep longer
// than the most it may poll drops the budget to nothing, so a request then needs a notification.
// The bound is large (200 ms) so that a loaded machine's scheduling cannot make it flaky.
TEST(BlockIoThread, AdaptivePollingFindsCloseRequestsAndStopsWhenTheDiskIsIdle) {
  constexpr uint32_t kMaxUs = 200'000;
  TestMemory memory(4 * MiB);
  BlockThreading threading{true, "blk-io-poll", {}, kMaxUs};
  Disk disk(memory,
            std::make_shared<VirtioBlock>(std::make_unique<GatedBackend>(64 * KiB, nullptr), "",
                                          std::move(threading)),
            0x10000);
  disk.start();
  // Each request is published without a notification right after the last one completed;
  // if polling does not find it soon, it is notified. Sleeps shorter than the bound double the
  // budget (from 4 µs), so it soon covers the gap and polling finds one. A request can also be
  // found without a notification when it lands while the thread turns notifications back on
  // (its re-check of the ring): that is not polling, so the loop waits for a counted poll hit.
  uint16_t used = 0;
  bool found_by_polling = false;
  // For up to kPatience, not a number of requests: a loaded machine may need many.
  const auto give_up = std::chrono::steady_clock::now() + kPatience;
  for (int i = 0; disk.device->poll_hits() == 0 && std::chrono::steady_clock::now() < give_up;
       ++i) {
    disk.publish_read(static_cast<uint64_t>(i % 64));
    ++used;
    const auto deadline = std::chrono::steady_clock::now() + 20ms;
    while (disk.ring.used_idx() != used && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    if (disk.ring.used_idx() == used) {
      found_by_polling = true;
    } else {
      disk.window->notify(0);
      ASSERT_TRUE(disk.wait_used(used));
    }
  }
  EXPECT_TRUE(found_by_polling);
  EXPECT_GE(disk.device->poll_hits(), 1u);

  // The poll ends (within the bound, or later on a loaded machine) and notifications are back
  // on; then idle for longer than the bound: the next wake-up, after that long sleep, drops the
  // budget, so the thread no longer polls at all.
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while ((disk.ring.used_flags() & VRING_USED_F_NO_NOTIFY) != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(disk.ring.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "notifications are on";
  std::this_thread::sleep_for(std::chrono::microseconds(kMaxUs) + 100ms);
  disk.publish_read(2);
  disk.window->notify(0);
  ASSERT_TRUE(disk.wait_used(++used));
  const uint64_t hits_before = disk.device->poll_hits();
  disk.publish_read(3);
  std::this_thread::sleep_for(kSettle);
  // Served without a notification, it can only have been the thread's re-check of the ring as
  // it turned notifications back on after read 2 (a thread slowed by a loaded machine), which
  // is not polling: the poll hits tell the two apart.
  if (disk.ring.used_idx() != used + 1) disk.window->notify(0);
  ASSERT_TRUE(disk.wait_used(++used));
  std::this_thread::sleep_for(kSettle);  // a hit is counted just after the used ring moves
  EXPECT_EQ(disk.device->poll_hits(), hits_before) << "no polling after a long idle time";
}

TEST(BlockIoThread, PollUsAndNumQueuesAreCheckedOnTheDiskFlag) {
  EXPECT_EQ(parse_disk_spec("d.img").poll_us, 32u);
  EXPECT_EQ(parse_disk_spec("d.img,poll_us=0").poll_us, 0u);
  EXPECT_EQ(parse_disk_spec("d.img,poll_us=1000").poll_us, 1000u);
  EXPECT_EQ(parse_disk_spec("d.img,num_queues=4").num_queues, 4u);
  EXPECT_EQ(parse_disk_spec("d.img,num_queues=16").num_queues, 16u);
  const std::pair<const char*, const char*> bad[] = {
      {"d.img,poll_us=1001", "poll_us"},     {"d.img,poll_us=-1", "poll_us"},
      {"d.img,poll_us=x", "poll_us"},        {"d.img,poll_us=", "poll_us"},
      {"d.img,poll_us=99999", "poll_us"},    {"d.img,num_queues=0", "num_queues"},
      {"d.img,num_queues=17", "num_queues"}, {"d.img,num_queues=two", "num_queues"}};
  for (const auto& [spec, word] : bad) {
    try {
      parse_disk_spec(spec);
      ADD_FAILURE() << spec << " accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  }
}

// Multiqueue: the device offers VIRTIO_BLK_F_MQ and num_queues, and its I/O thread serves each
// queue from that queue's own notify eventfd, returning each request to its own ring.
TEST(BlockIoThread, EveryQueueOfAMultiqueueDiskIsServedFromItsOwnEventfd) {
  constexpr uint16_t kQueues = 4;
  TestMemory memory(4 * MiB);
  auto device = std::make_shared<VirtioBlock>(std::make_unique<GatedBackend>(64 * KiB, nullptr), "",
                                              BlockThreading{true, "blk-io-mq", {}}, kQueues);
  EXPECT_EQ(device->queue_max_sizes().size(), kQueues);
  ASSERT_NE(device->device_features() & feature_bit(VIRTIO_BLK_F_MQ), 0u);
  virtio_blk_config config{};
  device->read_config(0, std::span(reinterpret_cast<uint8_t*>(&config), sizeof config));
  EXPECT_EQ(config.num_queues, kQueues);
  EXPECT_EQ(VirtioBlock(std::make_unique<GatedBackend>(64 * KiB, nullptr), "").device_features() &
                feature_bit(VIRTIO_BLK_F_MQ),
            0u)
      << "one queue: no MQ";

  auto irq = std::make_shared<FakeIrq>();
  VirtioMmioTransport window(device, memory, irq);
  MmioDriver mmio(window);
  ASSERT_TRUE(mmio.negotiate(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_BLK_F_MQ)));
  std::vector<std::unique_ptr<DriverRing>> rings;
  std::vector<int> fds;
  for (uint16_t q = 0; q < kQueues; ++q) {
    rings.push_back(std::make_unique<DriverRing>(memory, VirtioBlock::kQueueSize,
                                                 RingLayout::at(0x10000 + q * 0x80000ull)));
    mmio.setup_queue(q, *rings.back());
    fds.push_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_GE(fds.back(), 0);
    ASSERT_TRUE(device->watch_queue_notify(q, fds.back()));
  }
  EXPECT_FALSE(device->watch_queue_notify(kQueues, fds[0]));
  mmio.driver_ok();

  std::vector<uint64_t> data(kQueues);
  for (uint16_t q = 1; q < kQueues; ++q) {  // queue 0 stays empty
    DriverRing& ring = *rings[q];
    const uint64_t h = ring.alloc(16);
    memory.write_obj(h, virtio_blk_outhdr{VIRTIO_BLK_T_IN, 0, q});
    data[q] = ring.alloc(kSector, 512);
    ring.add_chain({{h, 16, false}, {data[q], kSector, true}, {ring.alloc(1), 1, true}});
    const uint64_t one = 1;
    ASSERT_EQ(::write(fds[q], &one, sizeof one), static_cast<ssize_t>(sizeof one));
  }
  for (uint16_t q = 1; q < kQueues; ++q) {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (rings[q]->used_idx() != 1 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(rings[q]->used_idx(), 1) << "queue " << q;
    EXPECT_EQ(rings[q]->used(0).len, kSector + 1);
    EXPECT_EQ(*memory.read_obj<uint8_t>(data[q]), q + 1) << "sector " << q << " read";
  }
  EXPECT_EQ(rings[0]->used_idx(), 0);
  EXPECT_GE(irq->pulses, 1);
  for (const int fd : fds) ::close(fd);
}

}  // namespace virtio_block_iothread_test
