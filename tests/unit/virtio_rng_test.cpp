// virtio-rng against hand-built rings in test guest memory: what a well-behaved driver asks for,
// each way a hostile one can get a request wrong, fairness on a busy queue, and reset.
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/rng.hpp"

using namespace libvmm;

namespace {

constexpr uint64_t kRamSize = 4 * MiB;
constexpr uint64_t kDesc = 0x1000;  // 64 descriptors
constexpr uint64_t kAvail = 0x2000;
constexpr uint64_t kUsed = 0x3000;
constexpr uint64_t kIndirect = 0x4000;
constexpr uint64_t kBuffers = 0x10000;
constexpr uint16_t kQueueSize = VirtioRng::kQueueSize;
constexpr uint8_t kUntouched = 0xa5;  // what guest buffers hold until the device writes them

constexpr uint64_t bit(unsigned n) {
  return 1ull << n;
}

class CountingTransport final : public VirtioTransport {
 public:
  void signal_used(uint16_t index) override {
    EXPECT_EQ(index, VirtioRng::kRequestQueue);
    ++signals;
  }
  void signal_config_change() override {}
  bool with_queues(const std::function<void(std::span<Virtqueue>)>&) override { return false; }
  bool renotify(uint16_t index) override {
    EXPECT_EQ(index, VirtioRng::kRequestQueue);
    ++renotifies;
    return can_renotify;
  }
  int signals = 0;
  int renotifies = 0;
  bool can_renotify = false;
};

class CountingIrq final : public IrqLine {
 public:
  uint32_t number() const override { return 5; }
  void set_level(bool) override {}
  void pulse() override { ++pulses; }
  std::atomic<int> pulses{0};
};

struct Buf {
  uint64_t gpa;
  uint32_t len;
  bool writable = true;
};

class VirtioRngTest : public ::testing::Test {
 protected:
  VirtioRngTest() { memory.map(0, MemoryRegion::create("ram", kRamSize), 0, kRamSize); }

  void use(std::shared_ptr<VirtioRng> dev) {
    device = std::move(dev);
    enable_queue();
    device->activate(transport, 0);
  }
  void use_host() { use(std::make_shared<VirtioRng>()); }
  void enable_queue() {
    queue.set_size(kQueueSize);
    queue.set_desc_addr(kDesc);
    queue.set_avail_addr(kAvail);
    queue.set_used_addr(kUsed);
    std::string error;
    ASSERT_TRUE(queue.enable(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC), error))
        << error;
  }

  // --- Guest buffers, filled with kUntouched

  uint64_t alloc(uint64_t len) {
    const uint64_t gpa = next_buffer_;
    next_buffer_ = (next_buffer_ + len + 15) / 16 * 16;
    EXPECT_LE(next_buffer_, kRamSize);
    const std::vector<uint8_t> fill(len, kUntouched);
    EXPECT_TRUE(memory.write(gpa, fill.data(), len));
    return gpa;
  }
  std::vector<uint8_t> guest(uint64_t gpa, uint64_t len) {
    std::vector<uint8_t> data(len);
    EXPECT_TRUE(memory.read(gpa, data.data(), len));
    return data;
  }
  static bool all(const std::vector<uint8_t>& bytes, uint8_t value) {
    return std::all_of(bytes.begin(), bytes.end(), [value](uint8_t b) { return b == value; });
  }
  // Random: not all zero, and not left as they were (for 16 bytes or more, 2^-128 to fail).
  void expect_random(uint64_t gpa, uint64_t len) {
    const auto bytes = guest(gpa, len);
    EXPECT_FALSE(all(bytes, 0)) << len << " bytes at " << gpa;
    EXPECT_FALSE(all(bytes, kUntouched)) << len << " bytes at " << gpa;
  }

  // --- The driver's side of the ring

  // Links `bufs` into a chain (in the ring's table, or an indirect one) and makes it available.
  void publish(const std::vector<Buf>& bufs, bool indirect = false) {
    const uint64_t table = indirect ? kIndirect : kDesc;
    uint16_t index = indirect ? 0 : next_desc_;
    const uint16_t head = index;
    for (size_t i = 0; i < bufs.size(); ++i) {
      const bool last = i + 1 == bufs.size();
      const uint16_t next = indirect ? static_cast<uint16_t>(index + 1)
                                     : static_cast<uint16_t>((index + 1) % kQueueSize);
      uint16_t flags = bufs[i].writable ? VRING_DESC_F_WRITE : 0;
      if (!last) flags |= VRING_DESC_F_NEXT;
      ASSERT_TRUE(memory.write_obj(table + 16ull * index,
                                   vring_desc{bufs[i].gpa, bufs[i].len, flags, next}));
      index = next;
    }
    uint16_t ring_head = head;
    if (indirect) {
      ring_head = next_desc_;
      ASSERT_TRUE(memory.write_obj(kDesc + 16ull * ring_head,
                                   vring_desc{kIndirect, static_cast<uint32_t>(16 * bufs.size()),
                                              VRING_DESC_F_INDIRECT, 0}));
      index = static_cast<uint16_t>((ring_head + 1) % kQueueSize);
    }
    next_desc_ = index;
    ASSERT_TRUE(
        memory.write_obj<uint16_t>(kAvail + 4 + 2ull * (avail_idx_ % kQueueSize), ring_head));
    ++avail_idx_;
    ASSERT_TRUE(memory.write_obj<uint16_t>(kAvail + 2, avail_idx_));
  }
  // The driver sets its rings up from scratch (after a reset).
  void restart_ring() {
    const std::vector<uint8_t> zero(kBuffers - kDesc, 0);
    ASSERT_TRUE(memory.write(kDesc, zero.data(), zero.size()));
    next_desc_ = 0;
    avail_idx_ = 0;
  }
  uint16_t used_idx() { return *memory.read_obj<uint16_t>(kUsed + 2); }
  vring_used_elem used(uint16_t idx) {
    return *memory.read_obj<vring_used_elem>(kUsed + 4 + 8ull * (idx % kQueueSize));
  }

  // Publishes one chain, notifies the device and returns the length it reported.
  uint32_t run(const std::vector<Buf>& bufs, bool indirect = false) {
    const uint16_t before = used_idx();
    publish(bufs, indirect);
    device->queue_notify(VirtioRng::kRequestQueue, queue);
    EXPECT_FALSE(queue.broken()) << queue.error();
    EXPECT_EQ(used_idx(), static_cast<uint16_t>(before + 1)) << "one chain in, one chain out";
    return used(before).len;
  }

  GuestMemory memory;
  Virtqueue queue{memory, kQueueSize};
  CountingTransport transport;
  std::shared_ptr<VirtioRng> device;

 private:
  uint64_t next_buffer_ = kBuffers;
  uint16_t next_desc_ = 0;
  uint16_t avail_idx_ = 0;
};

TEST_F(VirtioRngTest, DescribesAnEntropyDeviceWithOneQueueAndNoFeaturesOrConfig) {
  VirtioRng rng;
  EXPECT_EQ(rng.device_id(), VIRTIO_ID_RNG);
  EXPECT_EQ(rng.device_id(), 4u);
  EXPECT_EQ(rng.name(), "virtio-rng");
  EXPECT_EQ(rng.device_features(), 0u);
  EXPECT_EQ(rng.queue_max_sizes(), std::vector<uint16_t>{kQueueSize});
  EXPECT_EQ(rng.config_size(), 0u);
}

TEST_F(VirtioRngTest, FillsBuffersOfVariousSizesWithRandomBytes) {
  use_host();
  uint64_t served = 0;
  for (const uint32_t len : {1u, 16u, 64u, 100u, 4096u, 65535u, VirtioRng::kMaxBytesPerChain}) {
    const uint64_t gpa = alloc(len + 16);  // and 16 guard bytes after it
    EXPECT_EQ(run({{gpa, len}}), len);
    if (len >= 16) expect_random(gpa, len);
    EXPECT_TRUE(all(guest(gpa + len, 16), kUntouched)) << "nothing past the buffer, len " << len;
    served += len;
  }
  EXPECT_EQ(device->bytes_served(), served);
  EXPECT_GE(transport.signals, 7);
}

TEST_F(VirtioRngTest, TwoRequestsGetDifferentBytes) {
  use_host();
  const uint64_t a = alloc(32);
  const uint64_t b = alloc(32);
  EXPECT_EQ(run({{a, 32}}), 32u);
  EXPECT_EQ(run({{b, 32}}), 32u);
  EXPECT_NE(guest(a, 32), guest(b, 32));
}

TEST_F(VirtioRngTest, FillsEverySegmentOfAChain) {
  use_host();
  const uint64_t a = alloc(17);
  const uint64_t b = alloc(100);
  const uint64_t c = alloc(3000);
  EXPECT_EQ(run({{a, 17}, {b, 100}, {c, 3000}}), 3117u);
  expect_random(a, 17);
  expect_random(b, 100);
  expect_random(c, 3000);
}

TEST_F(VirtioRngTest, FillsAnIndirectChain) {
  use_host();
  const uint64_t a = alloc(64);
  const uint64_t b = alloc(64);
  EXPECT_EQ(run({{a, 64}, {b, 64}}, /*indirect=*/true), 128u);
  expect_random(a, 64);
  expect_random(b, 64);
}

TEST_F(VirtioRngTest, ServesAtMost64KiBOfAHugeBuffer) {
  use_host();
  const uint32_t len = 1 * MiB;
  const uint64_t gpa = alloc(len);
  EXPECT_EQ(run({{gpa, len}}), VirtioRng::kMaxBytesPerChain);
  expect_random(gpa, VirtioRng::kMaxBytesPerChain);
  EXPECT_TRUE(all(guest(gpa + VirtioRng::kMaxBytesPerChain, len - VirtioRng::kMaxBytesPerChain),
                  kUntouched))
      << "the used length says how much was written; nothing more is";
}

TEST_F(VirtioRngTest, ServesAtMost64KiBAcrossSegments) {
  use_host();
  const uint32_t seg = 48 * 1024;
  const uint64_t a = alloc(seg);
  const uint64_t b = alloc(seg);
  const uint64_t c = alloc(16);
  EXPECT_EQ(run({{a, seg}, {b, seg}, {c, 16}}), VirtioRng::kMaxBytesPerChain);
  expect_random(a, seg);
  const uint32_t rest = VirtioRng::kMaxBytesPerChain - seg;
  expect_random(b, rest);
  EXPECT_TRUE(all(guest(b + rest, seg - rest), kUntouched));
  EXPECT_TRUE(all(guest(c, 16), kUntouched));
}

TEST_F(VirtioRngTest, ReadableOnlyChainIsReturnedUnused) {
  use_host();
  const uint64_t gpa = alloc(64);
  EXPECT_EQ(run({{gpa, 64, false}}), 0u);
  EXPECT_TRUE(all(guest(gpa, 64), kUntouched));
  EXPECT_EQ(device->bytes_served(), 0u);
}

TEST_F(VirtioRngTest, ChainWithAReadablePartIsReturnedUnused) {
  use_host();
  const uint64_t in = alloc(16);
  const uint64_t out = alloc(64);
  EXPECT_EQ(run({{in, 16, false}, {out, 64}}), 0u);
  EXPECT_TRUE(all(guest(in, 16), kUntouched));
  EXPECT_TRUE(all(guest(out, 64), kUntouched));
}

TEST_F(VirtioRngTest, ZeroLengthBuffersGetNothing) {
  use_host();
  const uint64_t gpa = alloc(16);
  EXPECT_EQ(run({{gpa, 0}}), 0u);
  EXPECT_EQ(run({{gpa, 0}, {gpa, 0}, {gpa, 0}}), 0u);
  EXPECT_TRUE(all(guest(gpa, 16), kUntouched));
  // Zero-length segments among others are skipped, the rest filled.
  EXPECT_EQ(run({{gpa, 0}, {gpa, 16}, {gpa, 0}}), 16u);
  expect_random(gpa, 16);
}

TEST_F(VirtioRngTest, TheDeviceSurvivesAQueueTheDriverBroke) {
  use_host();
  // A buffer that claims to reach past guest RAM: the queue refuses the chain.
  publish({{kRamSize - 16, 0xffffffffu}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_TRUE(queue.broken());
  EXPECT_EQ(used_idx(), 0);
  EXPECT_EQ(device->bytes_served(), 0u);
  device->queue_notify(VirtioRng::kRequestQueue, queue);  // again: still nothing, no crash
  EXPECT_EQ(used_idx(), 0);
}

TEST_F(VirtioRngTest, NotificationsOfOtherQueuesAreIgnored) {
  use_host();
  const uint64_t gpa = alloc(16);
  publish({{gpa, 16}});
  device->queue_notify(1, queue);
  EXPECT_EQ(used_idx(), 0);
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), 1);
}

TEST_F(VirtioRngTest, AFailingEntropySourceReturnsWhatWasFilled) {
  int calls = 0;
  int fail_on = 1;
  use(std::make_shared<VirtioRng>([&](std::span<uint8_t> out) {
    if (++calls == fail_on) return EIO;
    std::fill(out.begin(), out.end(), 0x42);
    return 0;
  }));
  const uint64_t a = alloc(32);
  const uint64_t b = alloc(32);
  EXPECT_EQ(run({{a, 32}}), 0u) << "nothing filled";
  calls = 0;
  fail_on = 2;
  EXPECT_EQ(run({{a, 32}, {b, 32}}), 32u) << "the first segment was filled";
  EXPECT_TRUE(all(guest(a, 32), 0x42));
  EXPECT_EQ(device->bytes_served(), 32u);
}

TEST_F(VirtioRngTest, TheEntropySourceIsAskedForNoMoreThanTheBound) {
  uint64_t asked = 0;
  use(std::make_shared<VirtioRng>([&](std::span<uint8_t> out) {
    asked += out.size();
    return 0;
  }));
  const uint64_t gpa = alloc(1 * MiB);
  std::vector<Buf> bufs(kQueueSize, Buf{gpa, 1 * MiB});  // the longest chain the queue allows
  EXPECT_EQ(run(bufs), VirtioRng::kMaxBytesPerChain);
  EXPECT_EQ(asked, VirtioRng::kMaxBytesPerChain);
}

// --- Fairness

TEST_F(VirtioRngTest, BusyQueueYieldsAfterItsChainBudget) {
  // A driver that adds a request each time one is served: the queue never runs dry.
  uint64_t gpa = 0;
  int published = 0;
  bool refill = true;
  use(std::make_shared<VirtioRng>([&](std::span<uint8_t> out) {
    std::fill(out.begin(), out.end(), 1);
    if (refill) {
      publish({{gpa, 16}});
      ++published;
    }
    return 0;
  }));
  gpa = alloc(16);
  transport.can_renotify = true;
  for (int i = 0; i < 32; ++i, ++published) publish({{gpa, 16}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_FALSE(queue.broken()) << queue.error();
  EXPECT_EQ(transport.renotifies, 1);
  EXPECT_EQ(used_idx(), VirtioRng::kChainsPerNotify) << "everything taken was returned";
  EXPECT_GE(transport.signals, 1);

  refill = false;  // the driver stops; the renotified call drains the rest
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), static_cast<uint16_t>(published));
  EXPECT_EQ(transport.renotifies, 1);
}

TEST_F(VirtioRngTest, BusyQueueYieldsAfterItsByteBudget) {
  use_host();
  transport.can_renotify = true;
  const uint64_t gpa = alloc(VirtioRng::kMaxBytesPerChain);
  const int chains = 40;  // more than kBytesPerNotify in 64 KiB chains
  for (int i = 0; i < chains; ++i) publish({{gpa, VirtioRng::kMaxBytesPerChain}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  const uint16_t per_notify = VirtioRng::kBytesPerNotify / VirtioRng::kMaxBytesPerChain;
  EXPECT_EQ(used_idx(), per_notify);
  EXPECT_EQ(transport.renotifies, 1);
  EXPECT_EQ(transport.signals, 1);
  EXPECT_EQ(device->bytes_served(), VirtioRng::kBytesPerNotify);

  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), 2 * per_notify);
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), chains);
  EXPECT_EQ(transport.renotifies, 2) << "the last call ran out of requests before its budget";
}

TEST_F(VirtioRngTest, BusyQueueDrainsFullyWhenTheTransportCannotRenotify) {
  use_host();
  const uint64_t gpa = alloc(VirtioRng::kMaxBytesPerChain);
  const int chains = 40;
  for (int i = 0; i < chains; ++i) publish({{gpa, VirtioRng::kMaxBytesPerChain}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), chains);
  EXPECT_EQ(transport.renotifies, 1) << "asked once, refused, went on";
}

// --- Reset

TEST_F(VirtioRngTest, AfterResetNothingIsServedUntilTheNextActivation) {
  use_host();
  const uint64_t gpa = alloc(16);
  EXPECT_EQ(run({{gpa, 16}}), 16u);
  device->reset();
  publish({{gpa, 16}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);  // a late call: ignored
  EXPECT_EQ(used_idx(), 1);

  // The driver starts over with a fresh queue and the device serves it again.
  queue.reset();
  restart_ring();
  enable_queue();
  device->activate(transport, 0);
  const uint64_t again = alloc(16);
  EXPECT_EQ(run({{again, 16}}), 16u);
  expect_random(again, 16);
}

// Through the MMIO transport, as a guest driver sees it: features, notify, interrupt, reset.
class VirtioRngMmioTest : public VirtioRngTest {
 protected:
  VirtioRngMmioTest() {
    device = std::make_shared<VirtioRng>();
    mmio = std::make_unique<VirtioMmioTransport>(device, memory, irq);
  }

  uint32_t reg(uint64_t offset) {
    std::array<uint8_t, 4> data{};
    mmio->read(offset, data);
    uint32_t v;
    std::memcpy(&v, data.data(), 4);
    return v;
  }
  void set_reg(uint64_t offset, uint32_t value) {
    std::array<uint8_t, 4> data;
    std::memcpy(data.data(), &value, 4);
    mmio->write(offset, data);
  }
  uint64_t offered_features() {
    set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    const uint64_t low = reg(VIRTIO_MMIO_DEVICE_FEATURES);
    set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    return low | uint64_t{reg(VIRTIO_MMIO_DEVICE_FEATURES)} << 32;
  }
  // Driver initialization (spec §3.1.1), as Linux's virtio_rng does it.
  void bring_up(uint64_t features) {
    set_reg(VIRTIO_MMIO_STATUS, 0);
    set_reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    set_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    set_reg(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features));
    set_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    set_reg(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features >> 32));
    set_reg(VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    ASSERT_TRUE(reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK);
    set_reg(VIRTIO_MMIO_QUEUE_SEL, VirtioRng::kRequestQueue);
    ASSERT_EQ(reg(VIRTIO_MMIO_QUEUE_NUM_MAX), kQueueSize);
    set_reg(VIRTIO_MMIO_QUEUE_NUM, kQueueSize);
    set_reg(VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<uint32_t>(kDesc));
    set_reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<uint32_t>(kAvail));
    set_reg(VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<uint32_t>(kUsed));
    set_reg(VIRTIO_MMIO_QUEUE_READY, 1);
    set_reg(VIRTIO_MMIO_STATUS, reg(VIRTIO_MMIO_STATUS) | VIRTIO_CONFIG_S_DRIVER_OK);
    ASSERT_TRUE(reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK);
  }
  void notify() { set_reg(VIRTIO_MMIO_QUEUE_NOTIFY, VirtioRng::kRequestQueue); }

  std::shared_ptr<CountingIrq> irq = std::make_shared<CountingIrq>();
  std::unique_ptr<VirtioMmioTransport> mmio;
};

TEST_F(VirtioRngMmioTest, OffersVersion1AndNoDeviceFeatures) {
  EXPECT_EQ(reg(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_RNG});
  EXPECT_EQ(reg(VIRTIO_MMIO_VERSION), 2u);
  const uint64_t features = offered_features();
  EXPECT_TRUE(features & bit(VIRTIO_F_VERSION_1));
  EXPECT_EQ(features & (bit(VIRTIO_TRANSPORT_F_START) - 1), 0u) << "no device-type bits";
}

TEST_F(VirtioRngMmioTest, ServesTheDriverAndInterruptsItThenStartsOverAfterReset) {
  bring_up(bit(VIRTIO_F_VERSION_1));
  const uint64_t gpa = alloc(64);
  publish({{gpa, 64}});
  notify();
  ASSERT_EQ(used_idx(), 1);
  EXPECT_EQ(used(0).len, 64u);
  expect_random(gpa, 64);
  EXPECT_EQ(irq->pulses, 1);
  EXPECT_EQ(reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_VRING);
  set_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);

  // Reset: a request published meanwhile is not served.
  set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(reg(VIRTIO_MMIO_STATUS), 0u);
  publish({{gpa, 64}});
  notify();
  EXPECT_EQ(used_idx(), 1);

  restart_ring();
  bring_up(bit(VIRTIO_F_VERSION_1));
  const uint64_t again = alloc(64);
  publish({{again, 64}});
  notify();
  ASSERT_EQ(used_idx(), 1);
  EXPECT_EQ(used(0).len, 64u);
  expect_random(again, 64);
  EXPECT_EQ(irq->pulses, 2);
}

}  // namespace
