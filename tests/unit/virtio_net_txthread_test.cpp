// virtio-net with its transmit thread (--net ...,iothread=on), behind the real MMIO transport:
// frames go out on the named thread, woken by a notification or by the queue's eventfd; an
// emptied ring is polled for a while (no notification needed) and not once the device idles;
// a hostile chain is dropped without stopping the thread; a reset while it runs is safe.
// (The transmit path itself, without the thread: virtio_net_test.cpp.)
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/backends/net_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/core/unique_fd.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/net.hpp"
#include "unit/support/loop_thread.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;
using namespace std::chrono_literals;

namespace virtio_net_txthread_test {

constexpr auto kPatience = 10s;  // for what must happen; failing tests fail, not hang
constexpr auto kSettle = 100ms;  // for what must not happen
constexpr char kThreadName[] = "net-tx7";
constexpr MacAddress kMac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr uint32_t kHdr = VirtioNet::kHeaderSize;

// Frames sent, and the name of the thread that sent each; safe to read while the thread runs.
class RecordingBackend final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t>) override { return 0; }
  bool send(std::span<const iovec> iov) override {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof name);
    size_t bytes = 0;
    for (const iovec& v : iov) bytes += v.iov_len;
    std::lock_guard lock(mutex_);
    sizes_.push_back(bytes);
    threads_.emplace_back(name);
    return true;
  }
  void set_offloads(uint64_t) override {}
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override {}
  void resume_receive() override {}
  void set_enabled(bool) override {}
  std::string describe() const override { return "recording"; }

  size_t frames() const {
    std::lock_guard lock(mutex_);
    return sizes_.size();
  }
  std::vector<std::string> threads() const {
    std::lock_guard lock(mutex_);
    return threads_;
  }
  std::vector<size_t> sizes() const {
    std::lock_guard lock(mutex_);
    return sizes_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<size_t> sizes_;  // header included
  std::vector<std::string> threads_;
};

// A network device with a transmit thread on an MMIO window; queue 0 receives, 1 transmits.
struct Nic {
  explicit Nic(GuestMemory& memory, uint32_t poll_us = 0, AdaptivePoll::Now clock = nullptr)
      : backend(std::make_shared<RecordingBackend>()),
        device(std::make_shared<VirtioNet>(std::vector<std::shared_ptr<NetBackend>>{backend}, kMac,
                                           1500,
                                           NetThreading{true, kThreadName, {}, poll_us, clock})),
        irq(std::make_shared<FakeIrq>()),
        window(std::make_unique<VirtioMmioTransport>(device, memory, irq)),
        mmio(*window),
        rx(memory, VirtioNet::kQueueSize, RingLayout::at(0x10000)),
        tx(memory, VirtioNet::kQueueSize, RingLayout::at(0x100000)) {}

  void start() const {
    if (!mmio.negotiate(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MAC))) {
      throw std::runtime_error("FEATURES_OK refused");
    }
    mmio.setup_queue(0, rx);
    mmio.setup_queue(1, tx);
    mmio.driver_ok();
  }
  // Publishes a frame of `len` bytes behind a plain header.
  void publish_frame(uint32_t len) {
    std::vector<uint8_t> bytes(kHdr + len, 0x5a);
    std::memset(bytes.data(), 0, kHdr);
    const uint64_t gpa = tx.place(bytes);
    tx.add_chain({{gpa, static_cast<uint32_t>(bytes.size()), false}});
  }
  bool wait_used(uint16_t n) const {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (tx.used_idx() != n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  std::shared_ptr<RecordingBackend> backend;
  std::shared_ptr<VirtioNet> device;
  std::shared_ptr<FakeIrq> irq;
  std::unique_ptr<VirtioMmioTransport> window;
  MmioDriver mmio;
  DriverRing rx;
  DriverRing tx;
};

TEST(NetTxThread, FramesGoOutOnTheNamedThreadAfterANotification) {
  TestMemory memory(4 * MiB);
  Nic nic(memory);
  ASSERT_TRUE(nic.device->has_tx_thread());
  nic.start();
  for (uint32_t len : {60u, 1514u, 200u}) nic.publish_frame(len);
  nic.mmio.notify(1);
  ASSERT_TRUE(nic.wait_used(3));
  nic.device->wait_idle();
  EXPECT_EQ(nic.backend->sizes(), (std::vector<size_t>{kHdr + 60, kHdr + 1514, kHdr + 200}));
  for (const std::string& name : nic.backend->threads()) EXPECT_EQ(name, kThreadName);
  EXPECT_EQ(nic.device->counters().tx_frames, 3u);
  EXPECT_GE(nic.irq->pulses.load(), 1);
}

TEST(NetTxThread, TheTransmitQueuesEventfdWakesTheThread) {
  TestMemory memory(4 * MiB);
  Nic nic(memory);
  UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(efd);
  EXPECT_FALSE(nic.device->watch_queue_notify(0, efd.get())) << "receive stays on the loop";
  EXPECT_FALSE(nic.device->watch_queue_notify(3, efd.get())) << "no such queue";
  ASSERT_TRUE(nic.device->watch_queue_notify(1, efd.get()));
  nic.start();
  nic.publish_frame(100);
  const uint64_t one = 1;
  ASSERT_EQ(::write(efd.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
  ASSERT_TRUE(nic.wait_used(1));
  EXPECT_EQ(nic.backend->frames(), 1u);
}

TEST(NetTxThread, WithoutTheThreadNoEventfdIsTaken) {
  TestMemory memory(4 * MiB);
  auto device = std::make_shared<VirtioNet>(
      std::vector<std::shared_ptr<NetBackend>>{std::make_shared<RecordingBackend>()}, kMac);
  EXPECT_FALSE(device->has_tx_thread());
  UniqueFd efd(::eventfd(0, EFD_CLOEXEC));
  EXPECT_FALSE(device->watch_queue_notify(1, efd.get()));
}

// A chain the device must refuse (device-writable, or shorter than the header) is dropped and
// counted; the thread goes on with the next frames.
TEST(NetTxThread, AHostileChainIsDroppedAndTheThreadGoesOn) {
  TestMemory memory(4 * MiB);
  Nic nic(memory);
  nic.start();
  const uint64_t buf = nic.tx.alloc(64);
  nic.tx.add_chain({{buf, 64, true}});  // writable: not a frame to send
  nic.tx.add_chain({{buf, 4, false}});  // shorter than the header
  nic.publish_frame(80);
  nic.mmio.notify(1);
  ASSERT_TRUE(nic.wait_used(3));
  nic.device->wait_idle();
  EXPECT_EQ(nic.backend->frames(), 1u);
  const NetCounters c = nic.device->counters();
  EXPECT_EQ(c.tx_bad_chain, 1u);
  EXPECT_EQ(c.tx_short_header, 1u);
  EXPECT_EQ(c.tx_frames, 1u);
}

// The driver resets the device and sets it up again while frames are queued: the thread is
// paused across the reset, sends nothing from the old ring afterwards, and serves the new one.
TEST(NetTxThread, AResetWhileFramesWaitIsSafe) {
  TestMemory memory(4 * MiB);
  Nic nic(memory);
  nic.start();
  for (int i = 0; i < 20; ++i) nic.publish_frame(1000);
  nic.mmio.notify(1);
  nic.mmio.set_reg(VIRTIO_MMIO_STATUS, 0);  // reset, perhaps mid-ring
  nic.device->wait_idle();
  const size_t before = nic.backend->frames();
  EXPECT_LE(before, 20u);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(nic.backend->frames(), before) << "nothing is sent after the reset";

  nic.tx.restart();
  nic.rx.restart();
  nic.start();
  nic.publish_frame(70);
  nic.mmio.notify(1);
  ASSERT_TRUE(nic.wait_used(1));
  nic.device->wait_idle();
  EXPECT_EQ(nic.backend->frames(), before + 1);
  EXPECT_EQ(nic.backend->sizes().back(), kHdr + 70);
}

// The transmit thread's clock in the adaptive polling test: it stands still until the test
// moves it, so a poll window stays open until then, however the machine schedules the threads.
std::atomic<int64_t> g_poll_clock_ns{1'000'000'000};
AdaptivePoll::Clock::time_point poll_clock() {
  return AdaptivePoll::Clock::time_point(std::chrono::nanoseconds(g_poll_clock_ns.load()));
}
void advance_poll_clock(std::chrono::nanoseconds by) {
  g_poll_clock_ns.fetch_add(by.count());
}

// Adaptive polling, as for virtio-blk's I/O thread (core/adaptive_poll.hpp), on a clock the
// test moves: a sleep shorter than the bound opens a poll window, in which a frame published
// without a notification is found by looking at the ring; after an idle time longer than the
// bound the thread no longer polls, so such a frame waits for its notification.
TEST(NetTxThread, AdaptivePollingFindsCloseFramesAndStopsWhenIdle) {
  constexpr uint32_t kMaxUs = VirtioNet::kMaxPollUs;
  TestMemory memory(4 * MiB);
  Nic nic(memory, kMaxUs, &poll_clock);
  nic.start();
  // The first frame: no budget yet, so the thread sleeps as soon as it has sent it.
  nic.publish_frame(64);
  nic.mmio.notify(1);
  ASSERT_TRUE(nic.wait_used(1));
  nic.device->wait_idle();
  EXPECT_EQ(nic.tx.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "notifications are on";

  // It slept 10 µs, within the bound: after the next frame it polls (4 µs of a clock that
  // stands still), notifications off, and finds the third frame without one.
  advance_poll_clock(10us);
  nic.publish_frame(64);
  nic.mmio.notify(1);
  ASSERT_TRUE(nic.wait_used(2));
  nic.publish_frame(64);
  ASSERT_TRUE(nic.wait_used(3)) << "a frame published while the thread polls is found";
  EXPECT_EQ(nic.device->poll_hits(), 1u);
  EXPECT_NE(nic.tx.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "still polling";

  // The clock passes the window's end: notifications come back on and the thread sleeps.
  advance_poll_clock(1s);
  nic.device->wait_idle();
  ASSERT_EQ(nic.tx.used_flags() & VRING_USED_F_NO_NOTIFY, 0) << "notifications are back on";

  // Idle for longer than the bound: the next wake-up drops the budget to nothing, so a frame
  // published after it without a notification waits for one.
  advance_poll_clock(std::chrono::microseconds(kMaxUs) + 1ms);
  nic.publish_frame(64);
  nic.mmio.notify(1);
  ASSERT_TRUE(nic.wait_used(4));
  nic.device->wait_idle();
  nic.publish_frame(64);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(nic.tx.used_idx(), 4) << "no polling after a long idle time";
  nic.mmio.notify(1);
  ASSERT_TRUE(nic.wait_used(5));
  EXPECT_EQ(nic.device->poll_hits(), 1u);
}

// A second pair going unused and back (ethtool -L): a chain the driver left on its transmit
// queue goes out once the pair is used again, with no notification (the thread may have left that
// queue's notifications off when the pair went, so the driver rightly sends none).
TEST(NetTxThread, APairUsedAgainSendsWhatWaitsOnItsTransmitQueue) {
  TestMemory memory(4 * MiB);
  LoopThread loop;
  auto b0 = std::make_shared<RecordingBackend>();
  auto b1 = std::make_shared<RecordingBackend>();
  auto device = std::make_shared<VirtioNet>(std::vector<std::shared_ptr<NetBackend>>{b0, b1}, kMac,
                                            1500, NetThreading{true, kThreadName, {}, 0, {}});
  loop.call([&] { device->start(loop.loop); });
  VirtioMmioTransport window(device, memory, std::make_shared<FakeIrq>());
  MmioDriver mmio(window);
  constexpr uint16_t kCtrl = 4;  // rx0 tx0 rx1 tx1 ctrl
  std::vector<DriverRing> rings;
  for (uint16_t i = 0; i <= kCtrl; ++i) {
    rings.emplace_back(memory, i == kCtrl ? VirtioNet::kControlQueueSize : VirtioNet::kQueueSize,
                       RingLayout::at(0x10000 + i * 0x80000ull));
  }
  ASSERT_TRUE(mmio.negotiate(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MQ) |
                             feature_bit(VIRTIO_NET_F_CTRL_VQ)));
  for (uint16_t i = 0; i <= kCtrl; ++i) mmio.setup_queue(i, rings[i]);
  mmio.driver_ok();
  const auto set_pairs = [&](uint8_t n) {
    const uint64_t command = rings[kCtrl].place(
        std::vector<uint8_t>{VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, n, 0});
    const uint64_t status = rings[kCtrl].place(std::vector<uint8_t>{0xee});
    rings[kCtrl].add_chain({{command, 4, false}, {status, 1, true}});
    mmio.notify(kCtrl);
    return memory.bytes(status, 1)[0];
  };
  ASSERT_EQ(set_pairs(2), VIRTIO_NET_OK);
  ASSERT_EQ(set_pairs(1), VIRTIO_NET_OK);
  std::vector<uint8_t> frame(kHdr + 100, 0);
  rings[3].add_chain({{rings[3].place(frame), static_cast<uint32_t>(frame.size()), false}});
  ASSERT_EQ(set_pairs(2), VIRTIO_NET_OK);
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (rings[3].used_idx() != 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(rings[3].used_idx(), 1);
  EXPECT_EQ(b1->frames(), 1u);
  loop.call([] {});  // what the pair change posted has run before the transport goes
}

TEST(NetTxThread, IothreadAndPollUsAreCheckedOnTheNetFlag) {
  EXPECT_FALSE(parse_net_spec("tap=t0").iothread);
  EXPECT_EQ(parse_net_spec("tap=t0").poll_us, 32u);
  const NetConfig c = parse_net_spec("tap=t0,iothread=on,poll_us=200");
  EXPECT_TRUE(c.iothread);
  EXPECT_EQ(c.poll_us, 200u);
  EXPECT_EQ(parse_net_spec("tap=t0,iothread=on,poll_us=0").poll_us, 0u);
  for (const char* bad : {"tap=t0,iothread=yes", "tap=t0,poll_us=1001", "tap=t0,poll_us=-1",
                          "tap=t0,poll_us=", "tap=t0,poll_us=1e3"}) {
    try {
      parse_net_spec(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("--net"), std::string::npos) << e.what();
    }
  }
}

}  // namespace virtio_net_txthread_test
