// virtio-rng against hand-built rings in test guest memory: what a well-behaved driver asks for,
// each way a hostile one can get a request wrong, fairness on a busy queue, and reset.
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <span>
#include <vector>

#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/rng.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;

namespace virtio_rng_test {

constexpr uint64_t kRamSize = 4 * MiB;
constexpr uint64_t kDesc = 0x1000;  // 64 descriptors
constexpr uint64_t kAvail = 0x2000;
constexpr uint64_t kUsed = 0x3000;
constexpr uint64_t kIndirect = 0x4000;
constexpr uint64_t kBuffers = 0x10000;
constexpr uint16_t kQueueSize = VirtioRng::kQueueSize;
constexpr uint8_t kUntouched = 0xa5;  // what guest buffers hold until the device writes them

class VirtioRngTest : public ::testing::Test {
 protected:
  void TearDown() override {
    // The device has one queue: whatever it signals or asks to be renotified is that queue.
    EXPECT_EQ(transport.signals(), transport.signals(VirtioRng::kRequestQueue));
    EXPECT_EQ(transport.renotifies(), transport.renotifies(VirtioRng::kRequestQueue));
  }

  void use(std::shared_ptr<VirtioRng> dev) {
    device = std::move(dev);
    enable_queue();
    device->activate(transport, 0);
  }
  void use_host() { use(std::make_shared<VirtioRng>()); }
  void enable_queue() {
    ring.configure(queue,
                   feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_RING_F_INDIRECT_DESC));
  }

  // --- Guest buffers, filled with kUntouched

  uint64_t alloc(uint64_t len) {
    const uint64_t gpa = ring.alloc(len);
    EXPECT_TRUE(memory.fill(gpa, kUntouched, len));
    return gpa;
  }
  std::vector<uint8_t> guest(uint64_t gpa, uint64_t len) { return memory.bytes(gpa, len); }
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
  void publish(const std::vector<Buffer>& bufs, bool indirect = false) {
    if (indirect) {
      ring.add_indirect_chain(kIndirect, bufs);
    } else {
      ring.add_chain(bufs);
    }
  }
  uint16_t used_idx() { return ring.used_idx(); }
  vring_used_elem used(uint16_t idx) { return ring.used(idx); }

  // Publishes one chain, notifies the device and returns the length it reported.
  uint32_t run(const std::vector<Buffer>& bufs, bool indirect = false) {
    const uint16_t before = used_idx();
    publish(bufs, indirect);
    device->queue_notify(VirtioRng::kRequestQueue, queue);
    EXPECT_FALSE(queue.broken()) << queue.error();
    EXPECT_EQ(used_idx(), static_cast<uint16_t>(before + 1)) << "one chain in, one chain out";
    return used(before).len;
  }

  TestMemory memory{kRamSize};
  Virtqueue queue{memory, kQueueSize};
  DriverRing ring{memory, kQueueSize, {kDesc, kAvail, kUsed, kBuffers}};
  FakeTransport transport;
  std::shared_ptr<VirtioRng> device;
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
    EXPECT_EQ(run({{gpa, len, true}}), len);
    if (len >= 16) expect_random(gpa, len);
    EXPECT_TRUE(all(guest(gpa + len, 16), kUntouched)) << "nothing past the buffer, len " << len;
    served += len;
  }
  EXPECT_EQ(device->bytes_served(), served);
  EXPECT_GE(transport.signals(), 7);
}

TEST_F(VirtioRngTest, TwoRequestsGetDifferentBytes) {
  use_host();
  const uint64_t a = alloc(32);
  const uint64_t b = alloc(32);
  EXPECT_EQ(run({{a, 32, true}}), 32u);
  EXPECT_EQ(run({{b, 32, true}}), 32u);
  EXPECT_NE(guest(a, 32), guest(b, 32));
}

TEST_F(VirtioRngTest, FillsEverySegmentOfAChain) {
  use_host();
  const uint64_t a = alloc(17);
  const uint64_t b = alloc(100);
  const uint64_t c = alloc(3000);
  EXPECT_EQ(run({{a, 17, true}, {b, 100, true}, {c, 3000, true}}), 3117u);
  expect_random(a, 17);
  expect_random(b, 100);
  expect_random(c, 3000);
}

TEST_F(VirtioRngTest, FillsAnIndirectChain) {
  use_host();
  const uint64_t a = alloc(64);
  const uint64_t b = alloc(64);
  EXPECT_EQ(run({{a, 64, true}, {b, 64, true}}, /*indirect=*/true), 128u);
  expect_random(a, 64);
  expect_random(b, 64);
}

TEST_F(VirtioRngTest, ServesAtMost64KiBOfAHugeBuffer) {
  use_host();
  const uint32_t len = 1 * MiB;
  const uint64_t gpa = alloc(len);
  EXPECT_EQ(run({{gpa, len, true}}), VirtioRng::kMaxBytesPerChain);
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
  EXPECT_EQ(run({{a, seg, true}, {b, seg, true}, {c, 16, true}}), VirtioRng::kMaxBytesPerChain);
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
  EXPECT_EQ(run({{in, 16, false}, {out, 64, true}}), 0u);
  EXPECT_TRUE(all(guest(in, 16), kUntouched));
  EXPECT_TRUE(all(guest(out, 64), kUntouched));
}

TEST_F(VirtioRngTest, ZeroLengthBuffersGetNothing) {
  use_host();
  const uint64_t gpa = alloc(16);
  EXPECT_EQ(run({{gpa, 0, true}}), 0u);
  EXPECT_EQ(run({{gpa, 0, true}, {gpa, 0, true}, {gpa, 0, true}}), 0u);
  EXPECT_TRUE(all(guest(gpa, 16), kUntouched));
  // Zero-length segments among others are skipped, the rest filled.
  EXPECT_EQ(run({{gpa, 0, true}, {gpa, 16, true}, {gpa, 0, true}}), 16u);
  expect_random(gpa, 16);
}

TEST_F(VirtioRngTest, TheDeviceSurvivesAQueueTheDriverBroke) {
  use_host();
  // A buffer that claims to reach past guest RAM: the queue refuses the chain.
  publish({{kRamSize - 16, 0xffffffffu, true}});
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
  publish({{gpa, 16, true}});
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
  EXPECT_EQ(run({{a, 32, true}}), 0u) << "nothing filled";
  calls = 0;
  fail_on = 2;
  EXPECT_EQ(run({{a, 32, true}, {b, 32, true}}), 32u) << "the first segment was filled";
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
  std::vector<Buffer> bufs(kQueueSize,
                           Buffer{gpa, 1 * MiB, true});  // the longest chain the queue allows
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
      publish({{gpa, 16, true}});
      ++published;
    }
    return 0;
  }));
  gpa = alloc(16);
  transport.can_renotify = true;
  for (int i = 0; i < 32; ++i, ++published) publish({{gpa, 16, true}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_FALSE(queue.broken()) << queue.error();
  EXPECT_EQ(transport.renotifies(), 1);
  EXPECT_EQ(used_idx(), VirtioRng::kChainsPerNotify) << "everything taken was returned";
  EXPECT_GE(transport.signals(), 1);

  refill = false;  // the driver stops; the renotified call drains the rest
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), static_cast<uint16_t>(published));
  EXPECT_EQ(transport.renotifies(), 1);
}

TEST_F(VirtioRngTest, BusyQueueYieldsAfterItsByteBudget) {
  use_host();
  transport.can_renotify = true;
  const uint64_t gpa = alloc(VirtioRng::kMaxBytesPerChain);
  const int chains = 40;  // more than kBytesPerNotify in 64 KiB chains
  for (int i = 0; i < chains; ++i) publish({{gpa, VirtioRng::kMaxBytesPerChain, true}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  const uint16_t per_notify = VirtioRng::kBytesPerNotify / VirtioRng::kMaxBytesPerChain;
  EXPECT_EQ(used_idx(), per_notify);
  EXPECT_EQ(transport.renotifies(), 1);
  EXPECT_EQ(transport.signals(), 1);
  EXPECT_EQ(device->bytes_served(), VirtioRng::kBytesPerNotify);

  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), 2 * per_notify);
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), chains);
  EXPECT_EQ(transport.renotifies(), 2) << "the last call ran out of requests before its budget";
}

TEST_F(VirtioRngTest, BusyQueueDrainsFullyWhenTheTransportCannotRenotify) {
  use_host();
  const uint64_t gpa = alloc(VirtioRng::kMaxBytesPerChain);
  const int chains = 40;
  for (int i = 0; i < chains; ++i) publish({{gpa, VirtioRng::kMaxBytesPerChain, true}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);
  EXPECT_EQ(used_idx(), chains);
  EXPECT_EQ(transport.renotifies(), 1) << "asked once, refused, went on";
}

// --- Reset

TEST_F(VirtioRngTest, AfterResetNothingIsServedUntilTheNextActivation) {
  use_host();
  const uint64_t gpa = alloc(16);
  EXPECT_EQ(run({{gpa, 16, true}}), 16u);
  device->reset();
  publish({{gpa, 16, true}});
  device->queue_notify(VirtioRng::kRequestQueue, queue);  // a late call: ignored
  EXPECT_EQ(used_idx(), 1);

  // The driver starts over with a fresh queue and the device serves it again.
  queue.reset();
  ring.restart();
  enable_queue();
  device->activate(transport, 0);
  const uint64_t again = alloc(16);
  EXPECT_EQ(run({{again, 16, true}}), 16u);
  expect_random(again, 16);
}

// Through the MMIO transport, as a guest driver sees it: features, notify, interrupt, reset.
class VirtioRngMmioTest : public VirtioRngTest {
 protected:
  // The device is the base fixture's, made here so that the window serves it.
  VirtioRngMmioTest() : window(device = std::make_shared<VirtioRng>(), memory, irq) {}

  // Driver initialization (spec §3.1.1), as Linux's virtio_rng does it.
  void bring_up(uint64_t features) {
    ASSERT_TRUE(mmio.negotiate(features));
    mmio.set_reg(VIRTIO_MMIO_QUEUE_SEL, VirtioRng::kRequestQueue);
    ASSERT_EQ(mmio.reg(VIRTIO_MMIO_QUEUE_NUM_MAX), kQueueSize);
    mmio.setup_queue(VirtioRng::kRequestQueue, ring);
    mmio.driver_ok();
    ASSERT_TRUE(mmio.status() & VIRTIO_CONFIG_S_DRIVER_OK);
  }
  void notify() { mmio.notify(VirtioRng::kRequestQueue); }

  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  VirtioMmioTransport window;
  MmioDriver mmio{window};
};

TEST_F(VirtioRngMmioTest, OffersVersion1AndNoDeviceFeatures) {
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_DEVICE_ID), uint32_t{VIRTIO_ID_RNG});
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_VERSION), 2u);
  const uint64_t features = mmio.device_features();
  EXPECT_TRUE(features & feature_bit(VIRTIO_F_VERSION_1));
  EXPECT_EQ(features & (feature_bit(VIRTIO_TRANSPORT_F_START) - 1), 0u) << "no device-type bits";
}

TEST_F(VirtioRngMmioTest, ServesTheDriverAndInterruptsItThenStartsOverAfterReset) {
  bring_up(feature_bit(VIRTIO_F_VERSION_1));
  const uint64_t gpa = alloc(64);
  publish({{gpa, 64, true}});
  notify();
  ASSERT_EQ(used_idx(), 1);
  EXPECT_EQ(used(0).len, 64u);
  expect_random(gpa, 64);
  EXPECT_EQ(irq->pulses, 1);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_VRING);
  mmio.set_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);

  // Reset: a request published meanwhile is not served.
  mmio.set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_STATUS), 0u);
  publish({{gpa, 64, true}});
  notify();
  EXPECT_EQ(used_idx(), 1);

  ring.restart();
  bring_up(feature_bit(VIRTIO_F_VERSION_1));
  const uint64_t again = alloc(64);
  publish({{again, 64, true}});
  notify();
  ASSERT_EQ(used_idx(), 1);
  EXPECT_EQ(used(0).len, 64u);
  expect_random(again, 64);
  EXPECT_EQ(irq->pulses, 2);
}

}  // namespace virtio_rng_test
