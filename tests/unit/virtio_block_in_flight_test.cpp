// virtio-blk's I/O thread with a backend that keeps transfers in flight (BlockAsync), behind
// the real MMIO transport: requests start as they come while earlier ones are still out, and
// go back as each finishes; a FLUSH waits for the transfers before it; slots and bytes in
// flight are bounded against a guest that fills its queue; a reset, a queue taken down and
// teardown finish what is in flight first; completions go back to their own queue, and are
// found by polling when they come soon. (The io_uring image itself keeps requests in flight in
// every IoThread test of virtio_block_test.cpp.)
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/core/size.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;
using namespace std::chrono_literals;

namespace virtio_block_in_flight_test {

constexpr auto kPatience = 10s;  // for what must happen; failing tests fail, not hang
constexpr auto kSettle = 100ms;  // for what must not happen
constexpr uint32_t kSector = 512;

// What the test learns about a HeldBackend after the device (its owner) is gone.
struct BackendRecord {
  std::atomic<int> out_at_destruction{-1};
};

// A disk in host memory whose transfers stay out (started, not finished) until the test
// finishes them, or until the device waits for them (reap with `wait`: the host catches up).
class HeldBackend final : public BlockBackend, public BlockAsync {
 public:
  explicit HeldBackend(uint64_t size, unsigned capacity = 64,
                       std::shared_ptr<BackendRecord> record = nullptr)
      : data_(size), capacity_(capacity), record_(std::move(record)) {
    for (size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<uint8_t>(i / kSector + 1);
    efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  ~HeldBackend() override {
    if (record_) record_->out_at_destruction = static_cast<int>(out_.size() + queued_.size());
    ::close(efd_);
  }

  // BlockBackend: what the device falls back on when start() refuses.
  uint64_t size() const override { return data_.size(); }
  bool readonly() const override { return false; }
  int read(uint64_t offset, std::span<iovec> iov) override {
    std::lock_guard lock(mutex_);
    carry_out({false, offset, iov, 0, 0});
    ++sync_transfers_;
    return 0;
  }
  int write(uint64_t offset, std::span<iovec> iov) override {
    std::lock_guard lock(mutex_);
    carry_out({true, offset, iov, 0, 0});
    ++sync_transfers_;
    return 0;
  }
  int flush() override {
    std::lock_guard lock(mutex_);
    ++flushes_;
    return 0;
  }
  int discard(uint64_t, uint64_t) override { return 0; }
  int write_zeroes(uint64_t, uint64_t, bool) override { return 0; }
  BlockAsync* async() override { return this; }

  // BlockAsync, on the device's I/O thread.
  bool start(BlockTransfer& t) override {
    std::lock_guard lock(mutex_);
    if (out_.size() + queued_.size() >= capacity_) return false;
    queued_.push_back(&t);
    return true;
  }
  void submit() override {
    std::lock_guard lock(mutex_);
    out_.insert(out_.end(), queued_.begin(), queued_.end());
    queued_.clear();
    cv_.notify_all();
  }
  void reap(std::vector<BlockTransfer*>& done, bool wait) override {
    std::lock_guard lock(mutex_);
    if (wait && !out_.empty()) {
      char name[16] = {};
      pthread_getname_np(pthread_self(), name, sizeof name);
      waited_on.emplace_back(name);
    }
    if (wait && finished_.empty()) {
      while (!out_.empty()) finish_locked(0);
    }
    done.insert(done.end(), finished_.begin(), finished_.end());
    finished_.clear();
  }
  int completion_fd() const override { return efd_; }
  unsigned capacity() const override { return capacity_; }

  // The test's side. signal_completions false: a finished transfer does not signal the
  // completion eventfd, so the device finds it only by looking (polling, or when it wakes for
  // something else).
  std::atomic<bool> signal_completions{true};
  // The threads that waited for transfers out (reap with `wait`), by name. Under the lock.
  std::vector<std::string> waited_on;
  bool wait_out(size_t n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, kPatience, [&] { return out_.size() == n; });
  }
  size_t out() {
    std::lock_guard lock(mutex_);
    return out_.size();
  }
  // The sector of each transfer out, in the order they started.
  std::vector<uint64_t> out_sectors() {
    std::lock_guard lock(mutex_);
    std::vector<uint64_t> sectors;
    for (const BlockTransfer* t : out_) sectors.push_back(t->offset / kSector);
    return sectors;
  }
  // The transfer out at `sector` finishes now.
  void finish_sector(uint64_t sector) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < out_.size(); ++i) {
      if (out_[i]->offset == sector * kSector) return finish_locked(i);
    }
    ADD_FAILURE() << "no transfer out at sector " << sector;
  }
  void finish_all() {
    std::lock_guard lock(mutex_);
    while (!out_.empty()) finish_locked(0);
  }
  int flushes() {
    std::lock_guard lock(mutex_);
    return flushes_;
  }
  int sync_transfers() {
    std::lock_guard lock(mutex_);
    return sync_transfers_;
  }
  std::vector<uint8_t> bytes(uint64_t offset, uint64_t len) {
    std::lock_guard lock(mutex_);
    return {data_.begin() + static_cast<ptrdiff_t>(offset),
            data_.begin() + static_cast<ptrdiff_t>(offset + len)};
  }

 private:
  void carry_out(const BlockTransfer& t) {
    uint64_t offset = t.offset;
    for (const iovec& v : t.iov) {
      if (t.write) {
        std::memcpy(data_.data() + offset, v.iov_base, v.iov_len);
      } else {
        std::memcpy(v.iov_base, data_.data() + offset, v.iov_len);
      }
      offset += v.iov_len;
    }
  }
  void finish_locked(size_t i) {
    BlockTransfer* t = out_[i];
    out_.erase(out_.begin() + static_cast<ptrdiff_t>(i));
    carry_out(*t);
    t->result = 0;
    finished_.push_back(t);
    if (!signal_completions) return;
    const uint64_t one = 1;
    static_cast<void>(::write(efd_, &one, sizeof one));
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<uint8_t> data_;
  unsigned capacity_;
  std::shared_ptr<BackendRecord> record_;
  int efd_ = -1;
  std::vector<BlockTransfer*> queued_, out_, finished_;
  int flushes_ = 0;
  int sync_transfers_ = 0;
};

// A guest driver of one virtio-blk device (on a HeldBackend) behind the MMIO transport.
class BlockInFlightTest : public ::testing::Test {
 protected:
  void make(uint16_t queues = 1, unsigned capacity = 64, uint64_t size = 4 * MiB,
            uint32_t poll_us = 0) {
    auto held = std::make_unique<HeldBackend>(size, capacity, record);
    backend = held.get();
    device = std::make_shared<VirtioBlock>(
        std::move(held), "in-flight", BlockThreading{true, "blk-io-held", {}, poll_us}, queues);
    ASSERT_TRUE(device->keeps_requests_in_flight());
    window = std::make_unique<VirtioMmioTransport>(device, memory, irq);
    mmio = std::make_unique<MmioDriver>(*window);
    for (uint16_t q = 0; q < queues; ++q) {
      rings.push_back(std::make_unique<DriverRing>(memory, VirtioBlock::kQueueSize,
                                                   RingLayout::at(0x10000 + q * 0x100000ull)));
    }
  }
  void start(uint64_t features = feature_bit(VIRTIO_BLK_F_FLUSH)) {
    uint64_t wanted =
        feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_RING_F_INDIRECT_DESC) | features;
    if (rings.size() > 1) wanted |= feature_bit(VIRTIO_BLK_F_MQ);
    ASSERT_TRUE(mmio->negotiate(wanted));
    for (uint16_t q = 0; q < rings.size(); ++q) mmio->setup_queue(q, *rings[q]);
    mmio->driver_ok();
  }
  void TearDown() override {
    if (backend != nullptr && device) backend->finish_all();  // never leave the thread waiting
  }

  // A request of `type` at `sector` with `len` bytes of data (0: none); returns its head.
  struct Request {
    uint16_t head;
    uint64_t data;
    uint64_t status;
  };
  Request publish(uint32_t type, uint64_t sector, uint32_t len = kSector, uint16_t q = 0) {
    DriverRing& ring = *rings[q];
    const uint64_t h = ring.alloc(16);
    memory.write_obj(h, virtio_blk_outhdr{type, 0, sector});
    const uint64_t s = ring.alloc(1);
    memory.write_obj<uint8_t>(s, 0xee);
    const bool reads = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
    if (len == 0) return {ring.add_chain({{h, 16, false}, {s, 1, true}}), 0, s};
    const uint64_t d = ring.alloc(len, 512);
    if (!reads) {
      EXPECT_TRUE(memory.fill(d, static_cast<uint8_t>(0xa0 + sector), len));
    }
    return {ring.add_chain({{h, 16, false}, {d, len, reads}, {s, 1, true}}), d, s};
  }
  void notify(uint16_t q = 0) { mmio->notify(q); }
  bool wait_used(uint16_t n, uint16_t q = 0) {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (rings[q]->used_idx() != n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }
  uint16_t used_idx(uint16_t q = 0) { return rings[q]->used_idx(); }
  uint16_t used_id(uint16_t i, uint16_t q = 0) {
    return static_cast<uint16_t>(rings[q]->used(i).id);
  }
  uint8_t status(const Request& r) { return *memory.read_obj<uint8_t>(r.status); }
  // What the backend's sector holds at first (HeldBackend's pattern).
  static std::vector<uint8_t> sector_bytes(uint64_t sector) {
    return std::vector<uint8_t>(kSector, static_cast<uint8_t>(sector + 1));
  }

  TestMemory memory{8 * MiB};
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::shared_ptr<BackendRecord> record = std::make_shared<BackendRecord>();
  HeldBackend* backend = nullptr;  // the device's
  std::shared_ptr<VirtioBlock> device;
  std::unique_ptr<VirtioMmioTransport> window;
  std::unique_ptr<MmioDriver> mmio;
  std::vector<std::unique_ptr<DriverRing>> rings;
};

TEST_F(BlockInFlightTest, RequestsStartWhileEarlierOnesAreOutAndReturnAsEachFinishes) {
  make();
  start();
  const Request first = publish(VIRTIO_BLK_T_IN, 1);
  notify();
  ASSERT_TRUE(backend->wait_out(1));
  const Request second = publish(VIRTIO_BLK_T_IN, 2);
  const Request third = publish(VIRTIO_BLK_T_IN, 3);
  notify();
  ASSERT_TRUE(backend->wait_out(3)) << "started while the first is still out";
  EXPECT_EQ(backend->out_sectors(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(used_idx(), 0);

  backend->finish_sector(3);  // the host finishes the last one first
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(used_id(0), third.head);
  EXPECT_EQ(rings[0]->used(0).len, kSector + 1);
  EXPECT_EQ(status(third), VIRTIO_BLK_S_OK);
  EXPECT_EQ(memory.bytes(third.data, kSector), sector_bytes(3));
  EXPECT_EQ(status(first), 0xee) << "still out";

  backend->finish_sector(1);
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(used_id(1), first.head);
  backend->finish_all();
  ASSERT_TRUE(wait_used(3));
  EXPECT_EQ(used_id(2), second.head);
  EXPECT_EQ(memory.bytes(second.data, kSector), sector_bytes(2));
  device->wait_idle();
  EXPECT_GE(irq->pulses, 3) << "each finished request is signalled";
}

TEST_F(BlockInFlightTest, AFlushWaitsForTheTransfersBeforeItAndNothingIsTakenMeanwhile) {
  make();
  start();
  const Request write = publish(VIRTIO_BLK_T_OUT, 4);
  const Request flush = publish(VIRTIO_BLK_T_FLUSH, 0, 0);
  const Request read = publish(VIRTIO_BLK_T_IN, 5);
  notify();
  ASSERT_TRUE(backend->wait_out(1));
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(backend->out_sectors(), (std::vector<uint64_t>{4}))
      << "the read waits behind the flush";
  EXPECT_EQ(backend->flushes(), 0) << "the flush waits for the write";
  EXPECT_EQ(used_idx(), 0);

  backend->finish_sector(4);
  ASSERT_TRUE(backend->wait_out(1)) << "the read starts once the flush is done";
  EXPECT_EQ(backend->out_sectors(), (std::vector<uint64_t>{5}));
  EXPECT_EQ(backend->flushes(), 1);
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(used_id(0), write.head);
  EXPECT_EQ(used_id(1), flush.head);
  EXPECT_EQ(status(flush), VIRTIO_BLK_S_OK);
  EXPECT_EQ(backend->bytes(4 * kSector, kSector), std::vector<uint8_t>(kSector, 0xa4));
  backend->finish_all();
  ASSERT_TRUE(wait_used(3));
  EXPECT_EQ(used_id(2), read.head);
}

TEST_F(BlockInFlightTest, RefusedRequestsAndGetIdReturnWhileATransferIsOut) {
  make(1, 64, 64 * KiB);
  start();
  const Request held = publish(VIRTIO_BLK_T_IN, 1);
  notify();
  ASSERT_TRUE(backend->wait_out(1));
  const Request beyond = publish(VIRTIO_BLK_T_IN, 1000);  // past the 128 sectors
  const Request id = publish(VIRTIO_BLK_T_GET_ID, 0, VirtioBlock::kIdBytes);
  notify();
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(status(beyond), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(id), VIRTIO_BLK_S_OK);
  EXPECT_EQ(memory.text(id.data, 9), "in-flight");
  EXPECT_EQ(status(held), 0xee);
  backend->finish_all();
  ASSERT_TRUE(wait_used(3));
  EXPECT_EQ(used_id(2), held.head);
}

// A guest that fills its queue holds at most kMaxBatch requests, and kBytesPerNotify bytes, in
// flight; the rest wait in its ring until some finish.
TEST_F(BlockInFlightTest, WhatIsInFlightIsBoundedBySlotsAndBytes) {
  make();
  start();
  for (uint64_t i = 0; i < 80; ++i) publish(VIRTIO_BLK_T_IN, i);  // 240 of 256 descriptors
  notify();
  ASSERT_TRUE(backend->wait_out(VirtioBlock::kMaxBatch));
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(backend->out(), VirtioBlock::kMaxBatch);
  backend->finish_all();
  ASSERT_TRUE(backend->wait_out(80 - VirtioBlock::kMaxBatch));
  backend->finish_all();
  ASSERT_TRUE(wait_used(80));

  // 2 MiB reads (one 256 KiB buffer named eight times, in an indirect table each).
  static_assert(VirtioBlock::kBytesPerNotify == 32 * 2 * MiB);
  DriverRing& ring = *rings[0];
  const uint64_t buffer = ring.alloc(VirtioBlock::kSizeMax, 4096);
  for (uint32_t i = 0; i < 40; ++i) {
    const uint64_t h = ring.alloc(16);
    memory.write_obj(h, virtio_blk_outhdr{VIRTIO_BLK_T_IN, 0, 0});
    std::vector<Buffer> bufs{{h, 16, false}};
    for (int part = 0; part < 8; ++part) bufs.push_back({buffer, VirtioBlock::kSizeMax, true});
    bufs.push_back({ring.alloc(1), 1, true});
    ring.add_indirect_chain(ring.alloc(16 * bufs.size(), 16), bufs);
  }
  notify();
  ASSERT_TRUE(backend->wait_out(32));
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(backend->out(), 32u) << "64 MiB in flight at most";
  backend->finish_all();
  ASSERT_TRUE(backend->wait_out(8));
  backend->finish_all();
  ASSERT_TRUE(wait_used(120));
}

TEST_F(BlockInFlightTest, TransfersTheBackendWillNotStartRunSynchronously) {
  make(1, /*capacity=*/1);
  start();
  const Request held = publish(VIRTIO_BLK_T_IN, 1);
  const Request second = publish(VIRTIO_BLK_T_IN, 2);
  const Request third = publish(VIRTIO_BLK_T_OUT, 3);
  notify();
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(backend->out_sectors(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(backend->sync_transfers(), 2);
  EXPECT_EQ(status(second), VIRTIO_BLK_S_OK);
  EXPECT_EQ(memory.bytes(second.data, kSector), sector_bytes(2));
  EXPECT_EQ(status(third), VIRTIO_BLK_S_OK);
  backend->finish_all();
  ASSERT_TRUE(wait_used(3));
  EXPECT_EQ(status(held), VIRTIO_BLK_S_OK);
}

// A driver that did not take FLUSH gets write-through: finished writes are flushed before they
// are returned, once for all that finished together.
TEST_F(BlockInFlightTest, WriteThroughFlushesFinishedWritesBeforeTheyReturn) {
  make();
  start(/*features=*/0);
  publish(VIRTIO_BLK_T_OUT, 1);
  publish(VIRTIO_BLK_T_OUT, 2);
  notify();
  ASSERT_TRUE(backend->wait_out(2));
  EXPECT_EQ(backend->flushes(), 0);
  backend->finish_all();
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(backend->flushes(), 1);
}

// A reset pauses the device: what is in flight finishes and goes back to the ring the driver
// had before the reset, and nothing is left out at the backend.
TEST_F(BlockInFlightTest, AResetFinishesWhatIsInFlightAndReturnsItFirst) {
  make();
  start();
  const Request a = publish(VIRTIO_BLK_T_IN, 1);
  const Request b = publish(VIRTIO_BLK_T_OUT, 2);
  notify();
  ASSERT_TRUE(backend->wait_out(2));
  mmio->set_reg(VIRTIO_MMIO_STATUS, 0);  // reset: returns once the transfers have finished
  EXPECT_EQ(backend->out(), 0u);
  EXPECT_EQ(used_idx(), 2);
  EXPECT_EQ(status(a), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(b), VIRTIO_BLK_S_OK);
  EXPECT_EQ(memory.bytes(a.data, kSector), sector_bytes(1));
  // On the I/O thread: the resetting vCPU's seccomp filter allows no block I/O (io_uring_enter
  // there killed the VMM in the default configuration).
  EXPECT_EQ(backend->waited_on, std::vector<std::string>{"blk-io-held"});

  // The device works again after the driver sets it up anew.
  rings[0]->restart();
  start();
  const Request again = publish(VIRTIO_BLK_T_IN, 7);
  notify();
  ASSERT_TRUE(backend->wait_out(1));
  backend->finish_all();
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(memory.bytes(again.data, kSector), sector_bytes(7));
}

// Taking a queue down (QueueReady 0, the device still DRIVER_OK) pauses the device too: the
// request out goes back to the old ring first, and the ring set up next gets only its own.
TEST_F(BlockInFlightTest, AQueueTakenDownGetsWhatWasOutBackFirst) {
  make();
  start();
  const Request old = publish(VIRTIO_BLK_T_IN, 1);
  notify();
  ASSERT_TRUE(backend->wait_out(1));
  mmio->set_reg(VIRTIO_MMIO_QUEUE_SEL, 0);
  mmio->set_reg(VIRTIO_MMIO_QUEUE_READY, 0);
  EXPECT_EQ(backend->out(), 0u);
  EXPECT_EQ(used_idx(), 1);
  EXPECT_EQ(used_id(0), old.head);
  EXPECT_EQ(status(old), VIRTIO_BLK_S_OK);

  rings[0]->restart();
  mmio->setup_queue(0, *rings[0]);
  const Request fresh = publish(VIRTIO_BLK_T_IN, 6);
  notify();
  ASSERT_TRUE(backend->wait_out(1));
  backend->finish_all();
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(used_id(0), fresh.head);
  EXPECT_EQ(memory.bytes(fresh.data, kSector), sector_bytes(6));
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(used_idx(), 1) << "nothing of the old ring's reaches the new one";
}

TEST_F(BlockInFlightTest, TeardownFinishesWhatIsInFlightBeforeTheBackendGoes) {
  make();
  start();
  publish(VIRTIO_BLK_T_IN, 1);
  publish(VIRTIO_BLK_T_IN, 2);
  notify();
  ASSERT_TRUE(backend->wait_out(2));
  mmio.reset();
  window.reset();
  backend = nullptr;
  device.reset();
  EXPECT_EQ(record->out_at_destruction, 0);
}

// Adaptive polling covers the completions too: with a transfer out, the thread keeps looking at
// them (and the queues) within its poll budget before it sleeps, so a transfer that finishes
// soon after it started goes back without a wake-up. The backend here never signals its
// completions, so one returned without the test's notification was found by looking; the poll
// hits tell polling from the thread's last look before it sleeps. The budget grows as in
// BlockIoThread.AdaptivePollingFindsCloseRequestsAndStopsWhenTheDiskIsIdle (a bound of 200 ms,
// so that a loaded machine cannot make it flaky).
TEST_F(BlockInFlightTest, ATransferFinishingSoonIsFoundByPollingWithoutAWakeUp) {
  make(1, 64, 4 * MiB, /*poll_us=*/200'000);
  backend->signal_completions = false;
  start();
  uint16_t used = 0;
  const auto give_up = std::chrono::steady_clock::now() + kPatience;
  while (device->poll_hits() == 0 && std::chrono::steady_clock::now() < give_up) {
    // Notifications on: the thread is asleep with nothing out, so the request below is not
    // found by polling the queue, and a hit can only be the completion's.
    while ((rings[0]->used_flags() & VRING_USED_F_NO_NOTIFY) != 0 &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(1ms);
    }
    publish(VIRTIO_BLK_T_IN, used % 64);
    notify();
    ASSERT_TRUE(backend->wait_out(1));
    backend->finish_all();
    ++used;
    const auto deadline = std::chrono::steady_clock::now() + 20ms;
    while (used_idx() != used && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    if (used_idx() != used) notify();  // asleep: the notification wakes it (a short sleep)
    ASSERT_TRUE(wait_used(used));
  }
  EXPECT_GE(device->poll_hits(), 1u) << "a completion found by polling";
}

TEST_F(BlockInFlightTest, EachFinishedRequestGoesBackToItsOwnQueue) {
  make(/*queues=*/2);
  start();
  const Request on0 = publish(VIRTIO_BLK_T_IN, 1, kSector, 0);
  const Request on1 = publish(VIRTIO_BLK_T_IN, 2, kSector, 1);
  notify(0);
  notify(1);
  ASSERT_TRUE(backend->wait_out(2));
  backend->finish_sector(2);
  ASSERT_TRUE(wait_used(1, 1));
  EXPECT_EQ(used_id(0, 1), on1.head);
  EXPECT_EQ(used_idx(0), 0);
  backend->finish_sector(1);
  ASSERT_TRUE(wait_used(1, 0));
  EXPECT_EQ(used_id(0, 0), on0.head);
  EXPECT_EQ(memory.bytes(on1.data, kSector), sector_bytes(2));
}

}  // namespace virtio_block_in_flight_test
