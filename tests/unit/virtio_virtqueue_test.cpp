// Split virtqueue against hand-built rings in test guest memory: what a well-behaved driver
// does, and each way a hostile one can break the rules.
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_ring.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;

namespace virtio_virtqueue_test {

constexpr uint64_t kRamSize = 1 * MiB;
constexpr uint64_t kRomBase = 2 * MiB;  // a read-only mapping, 64 KiB
constexpr uint64_t kDesc = 0x1000;
constexpr uint64_t kAvail = 0x2000;
constexpr uint64_t kUsed = 0x3000;
constexpr uint64_t kBuffers = 0x10000;
constexpr uint64_t kIndirect = 0x20000;

constexpr uint64_t kIndirectFeature = 1ull << VIRTIO_RING_F_INDIRECT_DESC;
constexpr uint64_t kEventIdxFeature = 1ull << VIRTIO_RING_F_EVENT_IDX;

class VirtqueueTest : public ::testing::Test {
 protected:
  // The driver's side of a ring of `size` entries at the standard test addresses.
  DriverRing ring(uint16_t size) {
    return DriverRing(memory, size, {kDesc, kAvail, kUsed, kBuffers});
  }

  // A ready queue of `size` entries at the standard test addresses.
  Virtqueue make_queue(uint16_t size, uint64_t features = kIndirectFeature) {
    Virtqueue q(memory, 256);
    EXPECT_TRUE(q.set_size(size));
    q.set_desc_addr(kDesc);
    q.set_avail_addr(kAvail);
    q.set_used_addr(kUsed);
    std::string error;
    EXPECT_TRUE(q.enable(features, error)) << error;
    return q;
  }

  // Publishes at head 0 a chain of `n` linked one-byte buffers in an indirect table.
  static void publish_indirect_chain(DriverRing& d, uint16_t n) {
    for (uint16_t i = 0; i < n; ++i) {
      d.set_desc(i, kBuffers, 1, i + 1 < n ? VRING_DESC_F_NEXT : 0, static_cast<uint16_t>(i + 1),
                 kIndirect);
    }
    d.set_desc(0, kIndirect, n * 16u, VRING_DESC_F_INDIRECT);
    d.publish(0);
  }

  void write_string(uint64_t gpa, const std::string& s) {
    ASSERT_TRUE(memory.write(gpa, s.data(), s.size()));
  }

  // pop() must refuse the published chain and break the queue, naming the problem.
  void expect_broken(Virtqueue& q, const std::string& error_part) {
    EXPECT_FALSE(q.pop().has_value());
    EXPECT_TRUE(q.broken());
    EXPECT_NE(q.error().find(error_part), std::string::npos) << q.error();
    EXPECT_FALSE(q.pop().has_value()) << "a broken queue stays broken";
    EXPECT_FALSE(q.push(0, 0));
  }

  TestMemory memory{kRamSize, kRomBase, 64 * KiB};  // the ROM is read-only
};

// ---------------------------------------------------------------------------------------------
// Good chains

TEST_F(VirtqueueTest, PopsReadableThenWritableChainAndPushesIt) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  write_string(kBuffers, "hello, ");
  write_string(kBuffers + 0x100, "world");
  d.set_desc(3, kBuffers, 7, VRING_DESC_F_NEXT, 5);
  d.set_desc(5, kBuffers + 0x100, 5, VRING_DESC_F_NEXT, 6);
  d.set_desc(6, kBuffers + 0x1000, 16, VRING_DESC_F_WRITE);
  EXPECT_FALSE(q.pop().has_value()) << "nothing published yet";
  d.publish(3);

  auto chain = q.pop();
  ASSERT_TRUE(chain.has_value()) << q.error();
  EXPECT_EQ(chain->head(), 3);
  ASSERT_EQ(chain->segments().size(), 3u);
  EXPECT_FALSE(chain->segments()[1].device_writable);
  EXPECT_TRUE(chain->segments()[2].device_writable);
  EXPECT_EQ(chain->readable_bytes(), 12u);
  EXPECT_EQ(chain->writable_bytes(), 16u);

  auto bytes = chain->read_all(64);
  ASSERT_TRUE(bytes.has_value());
  EXPECT_EQ(std::string(bytes->begin(), bytes->end()), "hello, world");
  EXPECT_FALSE(chain->read_all(11).has_value()) << "longer than the caller's bound";

  std::array<uint8_t, 4> part{};
  ASSERT_TRUE(chain->read_at(5, part)) << "crosses the segment boundary";
  EXPECT_EQ(std::string(part.begin(), part.end()), ", wo");
  EXPECT_FALSE(chain->read_at(9, part)) << "past the readable part";

  const std::string reply = "dlrow ,olleh";
  const auto* reply_bytes = reinterpret_cast<const uint8_t*>(reply.data());
  EXPECT_TRUE(chain->write_at(4, {reply_bytes, reply.size()}));
  EXPECT_FALSE(chain->write_at(5, {reply_bytes, reply.size()})) << "past the writable part";
  char written[12];
  ASSERT_TRUE(memory.read(kBuffers + 0x1004, written, sizeof(written)));
  EXPECT_EQ(std::string(written, sizeof(written)), reply);

  EXPECT_TRUE(q.push(chain->head(), 16));
  EXPECT_EQ(d.used_idx(), 1);
  EXPECT_EQ(d.used(0).id, 3u);
  EXPECT_EQ(d.used(0).len, 16u);
  EXPECT_FALSE(q.pop().has_value());
  EXPECT_FALSE(q.broken());
}

TEST_F(VirtqueueTest, IovecsCoverEachPart) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 10, VRING_DESC_F_NEXT, 1);
  d.set_desc(1, kBuffers + 0x100, 20, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
  d.set_desc(2, kBuffers + 0x200, 30, VRING_DESC_F_WRITE);
  d.publish(0);
  auto chain = q.pop();
  ASSERT_TRUE(chain.has_value());
  std::vector<iovec> in, out;
  ASSERT_TRUE(chain->iovecs(false, out));
  ASSERT_TRUE(chain->iovecs(true, in));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].iov_len, 10u);
  ASSERT_EQ(in.size(), 2u);
  EXPECT_EQ(in[0].iov_len + in[1].iov_len, 50u);
}

TEST_F(VirtqueueTest, FollowsIndirectTable) {
  Virtqueue q = make_queue(4);
  DriverRing d = ring(4);
  write_string(kBuffers, "abc");
  d.set_desc(0, kBuffers, 3, VRING_DESC_F_NEXT, 2, kIndirect);
  d.set_desc(2, kBuffers + 3, 0, VRING_DESC_F_NEXT, 1, kIndirect);  // zero-length is allowed
  d.set_desc(1, kBuffers + 0x100, 8, VRING_DESC_F_WRITE, 0, kIndirect);
  // A readable chain head in the ring that continues with an indirect table.
  write_string(kBuffers + 0x300, "xy");
  d.set_desc(1, kBuffers + 0x300, 2, VRING_DESC_F_NEXT, 2);
  // The WRITE flag of the pointer descriptor is ignored (spec §2.7.5.3.2).
  d.set_desc(2, kIndirect, 3 * 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE);
  d.publish(1);

  auto chain = q.pop();
  ASSERT_TRUE(chain.has_value()) << q.error();
  EXPECT_EQ(chain->head(), 1);
  ASSERT_EQ(chain->segments().size(), 4u);
  EXPECT_EQ(chain->readable_bytes(), 5u);
  EXPECT_EQ(chain->writable_bytes(), 8u);
  auto bytes = chain->read_all(100);
  ASSERT_TRUE(bytes.has_value());
  EXPECT_EQ(std::string(bytes->begin(), bytes->end()), "xyabc");
}

// ---------------------------------------------------------------------------------------------
// Malformed chains

TEST_F(VirtqueueTest, RejectsDescriptorLoop) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1, VRING_DESC_F_NEXT, 1);
  d.set_desc(1, kBuffers, 1, VRING_DESC_F_NEXT, 0);
  d.publish(0);
  expect_broken(q, "loop");
}

TEST_F(VirtqueueTest, RejectsChainLongerThanQueue) {
  // A NEXT cycle through all 8 descriptors of an 8-entry queue's own table (no indirect table).
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  for (uint16_t i = 0; i < 8; ++i) {
    d.set_desc(i, kBuffers, 1, VRING_DESC_F_NEXT, static_cast<uint16_t>((i + 1) % 8));
  }
  d.publish(0);
  expect_broken(q, "more than 8 descriptors (the queue size)");
}

TEST_F(VirtqueueTest, AcceptsAnIndirectChainLongerThanTheRing) {
  // Five linked entries in an indirect table of a 4-entry queue: within QueueNumMax (256), as
  // a device whose seg_max counts on its largest queue may get (vhost-user: QEMU's 128-entry
  // rings and our block device's 254 segments).
  Virtqueue q = make_queue(4);
  DriverRing d = ring(4);
  publish_indirect_chain(d, 5);
  auto chain = q.pop();
  ASSERT_TRUE(chain.has_value()) << q.error();
  EXPECT_EQ(chain->segments().size(), 5u);
}

TEST_F(VirtqueueTest, RejectsAnIndirectChainLongerThanQueueNumMax) {
  Virtqueue q = make_queue(4);  // QueueNumMax 256
  DriverRing d = ring(4);
  publish_indirect_chain(d, 257);
  expect_broken(q, "more than 256 descriptors (QueueNumMax)");
}

// Lengths summed over a chain: 4097 descriptors of 1 MiB each (the same guest RAM, read again)
// in an indirect table of a queue whose QueueNumMax allows that many: past 4 GiB, refused
// before a request's length could wrap a 32-bit count.
TEST_F(VirtqueueTest, RejectsAChainLongerThan4GiB) {
  Virtqueue q(memory, 32768);
  ASSERT_TRUE(q.set_size(8));
  q.set_desc_addr(kDesc);
  q.set_avail_addr(kAvail);
  q.set_used_addr(kUsed);
  std::string error;
  ASSERT_TRUE(q.enable(kIndirectFeature, error)) << error;
  DriverRing d = ring(8);
  constexpr uint16_t kCount = 4097;
  for (uint16_t i = 0; i < kCount; ++i) {
    d.set_desc(i, 0, static_cast<uint32_t>(kRamSize), i + 1 < kCount ? VRING_DESC_F_NEXT : 0,
               static_cast<uint16_t>(i + 1), kIndirect);
  }
  d.set_desc(0, kIndirect, kCount * 16u, VRING_DESC_F_INDIRECT);
  d.publish(0);
  expect_broken(q, "longer than 4 GiB");
}

TEST_F(VirtqueueTest, AcceptsChainAsLongAsQueue) {
  Virtqueue q = make_queue(4);
  DriverRing d = ring(4);
  for (uint16_t i = 0; i < 4; ++i) {
    d.set_desc(i, kBuffers, 1, i < 3 ? VRING_DESC_F_NEXT : 0, static_cast<uint16_t>(i + 1));
  }
  d.publish(0);
  auto chain = q.pop();
  ASSERT_TRUE(chain.has_value()) << q.error();
  EXPECT_EQ(chain->segments().size(), 4u);
}

TEST_F(VirtqueueTest, RejectsNextIndexPastTable) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1, VRING_DESC_F_NEXT, 8);
  d.publish(0);
  expect_broken(q, "next index 8");
}

TEST_F(VirtqueueTest, RejectsHeadPastQueueSize) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.publish(8);
  expect_broken(q, "descriptor 8");
}

TEST_F(VirtqueueTest, RejectsBufferPastEndOfRam) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kRamSize - 4, 8);
  d.publish(0);
  expect_broken(q, "not guest RAM");
}

TEST_F(VirtqueueTest, RejectsBufferWrappingAddressSpace) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, ~0ull - 0xf, 0x20, VRING_DESC_F_WRITE);
  d.publish(0);
  expect_broken(q, "not writable guest RAM");
}

TEST_F(VirtqueueTest, RejectsWritableBufferInReadOnlyMemory) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kRomBase, 16, VRING_DESC_F_NEXT, 1);  // reading from it is fine
  d.set_desc(1, kRomBase + 16, 16, VRING_DESC_F_WRITE);
  d.publish(0);
  expect_broken(q, "not writable guest RAM");
}

TEST_F(VirtqueueTest, RejectsWritableBeforeReadable) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 4, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
  d.set_desc(1, kBuffers + 4, 4);
  d.publish(0);
  expect_broken(q, "readable descriptor after a writable");
}

TEST_F(VirtqueueTest, RejectsIndirectInsideIndirect) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 4, VRING_DESC_F_NEXT, 1, kIndirect);
  d.set_desc(1, kIndirect, 32, VRING_DESC_F_INDIRECT, 0, kIndirect);
  d.set_desc(0, kIndirect, 32, VRING_DESC_F_INDIRECT);
  d.publish(0);
  expect_broken(q, "inside an indirect table");
}

TEST_F(VirtqueueTest, RejectsIndirectTableWithBadLength) {
  for (uint32_t len : {0u, 20u}) {
    Virtqueue q = make_queue(8);
    DriverRing d = ring(8);
    d.set_desc(0, kIndirect, len, VRING_DESC_F_INDIRECT);
    d.publish(0);
    expect_broken(q, "multiple of 16");
  }
}

TEST_F(VirtqueueTest, RejectsIndirectTableOutsideRam) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kRamSize - 16, 32, VRING_DESC_F_INDIRECT);
  d.publish(0);
  expect_broken(q, "indirect table");
}

TEST_F(VirtqueueTest, RejectsIndirectWithNext) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1, 0, 0, kIndirect);
  d.set_desc(0, kIndirect, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
  d.set_desc(1, kBuffers, 1);
  d.publish(0);
  expect_broken(q, "both INDIRECT and NEXT");
}

TEST_F(VirtqueueTest, RejectsIndirectWithoutFeature) {
  Virtqueue q = make_queue(8, /*features=*/0);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1, 0, 0, kIndirect);
  d.set_desc(0, kIndirect, 16, VRING_DESC_F_INDIRECT);
  d.publish(0);
  expect_broken(q, "not negotiated");
}

TEST_F(VirtqueueTest, RejectsAvailIndexJump) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1);
  d.set_avail_idx(9);
  expect_broken(q, "more than the queue size");
}

// The available index only moves forward: back breaks the queue, whether pop() or
// enable_notifications() reads it (a device loops "while enable_notifications()": an index
// flipping back and forth, with nothing to pop, kept it going forever).
TEST_F(VirtqueueTest, RejectsAvailIndexGoingBack) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1);
  d.set_avail_idx(2);
  ASSERT_TRUE(q.pop().has_value());  // saw 2, took entry 0
  d.set_avail_idx(1);                // entry 1 taken back
  EXPECT_FALSE(q.enable_notifications());
  EXPECT_TRUE(q.broken());
  EXPECT_NE(q.error().find("available index went back from 2 to 1"), std::string::npos)
      << q.error();
}

TEST_F(VirtqueueTest, RejectsAvailIndexJumpSeenWhenEnablingNotifications) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  q.disable_notifications();
  d.set_avail_idx(0xffff);  // "back by one": as far ahead as 65535 entries
  EXPECT_FALSE(q.enable_notifications());
  EXPECT_NE(q.error().find("more than the queue size"), std::string::npos) << q.error();
}

TEST_F(VirtqueueTest, ResetClearsBrokenState) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_avail_idx(100);
  expect_broken(q, "moved from 0 to 100");
  q.reset();
  EXPECT_FALSE(q.broken());
  EXPECT_FALSE(q.ready());
  EXPECT_EQ(q.size(), 256);
  EXPECT_EQ(q.desc_addr(), 0u);
  EXPECT_TRUE(q.error().empty());
}

// ---------------------------------------------------------------------------------------------
// Configuration checks at QueueReady

TEST_F(VirtqueueTest, EnableRejectsBadSizes) {
  for (uint16_t size : {0, 3, 12, 512}) {
    Virtqueue q(memory, 256);
    q.set_size(size);
    q.set_desc_addr(kDesc);
    q.set_avail_addr(kAvail);
    q.set_used_addr(kUsed);
    std::string error;
    EXPECT_FALSE(q.enable(0, error)) << size;
    EXPECT_NE(error.find("power of two"), std::string::npos) << error;
    EXPECT_FALSE(q.ready());
    EXPECT_FALSE(q.pop().has_value());
  }
}

TEST_F(VirtqueueTest, EnableChecksRingPlacement) {
  struct Case {
    uint64_t desc, avail, used, features;
    const char* error;
  };
  const Case cases[] = {
      {kRamSize - 16 * 8, kAvail, kUsed, 0, ""},  // fits exactly
      {kRamSize - 16 * 7, kAvail, kUsed, 0, "descriptor table"},
      {kDesc + 8, kAvail, kUsed, 0, "16-byte aligned"},
      {kDesc, kAvail + 1, kUsed, 0, "2-byte aligned"},
      {kDesc, kAvail, kUsed + 2, 0, "4-byte aligned"},
      {kDesc, 5 * MiB, kUsed, 0, "available ring"},
      {kDesc, kAvail, kRomBase, 0, "used ring"},   // the device writes it
      {kDesc, kAvail, ~0ull - 3, 0, "used ring"},  // wraps
      // The used ring fits, but EVENT_IDX's avail_event after it does not.
      {kDesc, kAvail, kRamSize - (4 + 8 * 8), 0, ""},
      {kDesc, kAvail, kRamSize - (4 + 8 * 8), kEventIdxFeature, "used ring"},
      {kDesc, kRamSize - (4 + 2 * 8), kUsed, kEventIdxFeature, "available ring"},
  };
  for (const auto& c : cases) {
    Virtqueue q(memory, 8);
    q.set_desc_addr(c.desc);
    q.set_avail_addr(c.avail);
    q.set_used_addr(c.used);
    std::string error;
    const bool ok = q.enable(c.features, error);
    if (*c.error == '\0') {
      EXPECT_TRUE(ok) << error;
    } else {
      EXPECT_FALSE(ok) << c.error;
      EXPECT_NE(error.find(c.error), std::string::npos) << error;
    }
  }
}

TEST_F(VirtqueueTest, ConfigurationIsFrozenWhileReady) {
  Virtqueue q = make_queue(8);
  EXPECT_FALSE(q.set_size(4));
  EXPECT_FALSE(q.set_desc_addr(0x8000));
  EXPECT_FALSE(q.set_avail_addr(0x8000));
  EXPECT_FALSE(q.set_used_addr(0x8000));
  EXPECT_EQ(q.size(), 8);
  EXPECT_EQ(q.desc_addr(), kDesc);
}

// ---------------------------------------------------------------------------------------------
// Used ring and notification suppression

// A hostile driver publishes the head the device holds again and again: without a bound, a
// device that keeps buffers until it can use them (sound, net receive) held copies without end.
TEST_F(VirtqueueTest, RejectsMoreBuffersOutThanTheQueueHas) {
  Virtqueue q = make_queue(4);
  DriverRing d = ring(4);
  d.set_desc(0, kBuffers, 1);
  std::vector<DescriptorChain> held;
  for (int i = 0; i < 4; ++i) {
    d.publish(0);
    auto chain = q.pop();
    ASSERT_TRUE(chain.has_value()) << q.error();
    held.push_back(std::move(*chain));
  }
  d.publish(0);
  expect_broken(q, "a descriptor made available twice");
}

TEST_F(VirtqueueTest, AQueueWorthOfBuffersOutIsAllowedAgainOnceOneReturns) {
  Virtqueue q = make_queue(4);
  DriverRing d = ring(4);
  for (uint16_t i = 0; i < 4; ++i) d.set_desc(i, kBuffers, 1);
  for (uint16_t i = 0; i < 4; ++i) d.publish(i);
  for (uint16_t i = 0; i < 4; ++i) ASSERT_TRUE(q.pop().has_value()) << q.error();
  ASSERT_TRUE(q.push(2, 0));
  d.publish(2);
  auto chain = q.pop();
  ASSERT_TRUE(chain.has_value()) << q.error();
  EXPECT_EQ(chain->head(), 2);
  EXPECT_FALSE(q.broken());
}

TEST_F(VirtqueueTest, UsedRingWrapsAroundQueueSize) {
  Virtqueue q = make_queue(4);
  DriverRing d = ring(4);
  for (uint16_t i = 0; i < 4; ++i) d.set_desc(i, kBuffers, 1);
  for (uint16_t round = 0; round < 10; ++round) {
    const uint16_t head = round % 4;
    d.publish(head);
    auto chain = q.pop();
    ASSERT_TRUE(chain.has_value()) << q.error();
    EXPECT_EQ(chain->head(), head);
    ASSERT_TRUE(q.push(head, round));
    EXPECT_EQ(d.used_idx(), round + 1);
    EXPECT_EQ(d.used(round).id, head);
    EXPECT_EQ(d.used(round).len, round);
  }
  EXPECT_FALSE(q.push(4, 0)) << "not a descriptor index";
}

TEST_F(VirtqueueTest, NoInterruptFlagWithoutEventIdx) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1);
  EXPECT_FALSE(q.needs_notification()) << "nothing pushed";
  d.publish(0);
  ASSERT_TRUE(q.pop().has_value());
  q.push(0, 0);
  d.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
  EXPECT_FALSE(q.needs_notification());
  d.publish(0);
  ASSERT_TRUE(q.pop().has_value());
  q.push(0, 0);
  d.set_avail_flags(0);
  EXPECT_TRUE(q.needs_notification());
  EXPECT_FALSE(q.needs_notification()) << "already answered for this push";
}

TEST_F(VirtqueueTest, EventIdxSuppressionAcrossIndexWraparound) {
  Virtqueue q = make_queue(4, kEventIdxFeature);
  DriverRing d = ring(4);
  for (uint16_t i = 0; i < 4; ++i) d.set_desc(i, kBuffers, 1);
  auto cycle = [&] {  // one buffer through the queue
    d.publish(0);
    auto chain = q.pop();
    ASSERT_TRUE(chain.has_value()) << q.error();
    ASSERT_TRUE(q.push(chain->head(), 1));
  };

  d.set_used_event(0);
  cycle();  // used idx 0 -> 1 crosses used_event 0
  EXPECT_TRUE(q.needs_notification());
  cycle();  // 1 -> 2 does not
  EXPECT_FALSE(q.needs_notification());
  d.set_used_event(3);
  cycle();  // 2 -> 3
  EXPECT_FALSE(q.needs_notification());
  cycle();
  cycle();  // 3 -> 5 in one batch crosses 3
  EXPECT_TRUE(q.needs_notification());

  // Run the free-running indices (avail and used) up to the 16-bit wrap.
  while (d.used_idx() != 65534) {
    cycle();
    q.needs_notification();
  }
  d.set_used_event(65535);
  cycle();  // 65534 -> 65535
  EXPECT_FALSE(q.needs_notification());
  cycle();  // 65535 -> 0 crosses 65535
  EXPECT_TRUE(q.needs_notification());
  EXPECT_EQ(d.used_idx(), 0);
  d.set_used_event(0);
  cycle();  // 0 -> 1 after the wrap
  EXPECT_TRUE(q.needs_notification());
  EXPECT_FALSE(q.broken()) << q.error();
}

TEST_F(VirtqueueTest, NotificationControlWithoutEventIdx) {
  Virtqueue q = make_queue(8);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1);
  q.disable_notifications();
  EXPECT_EQ(d.used_flags(), VRING_USED_F_NO_NOTIFY);
  EXPECT_FALSE(q.enable_notifications());
  EXPECT_EQ(d.used_flags(), 0);
  q.disable_notifications();
  d.publish(0);  // arrives while the device is not listening
  EXPECT_TRUE(q.enable_notifications()) << "the device must look again";
  ASSERT_TRUE(q.pop().has_value());
  EXPECT_FALSE(q.enable_notifications());
}

TEST_F(VirtqueueTest, NotificationControlWithEventIdx) {
  Virtqueue q = make_queue(8, kEventIdxFeature);
  DriverRing d = ring(8);
  d.set_desc(0, kBuffers, 1);
  d.publish(0);
  ASSERT_TRUE(q.pop().has_value());
  EXPECT_EQ(d.avail_event(), 1) << "kick me for entry 1";
  q.disable_notifications();
  d.publish(0);
  ASSERT_TRUE(q.pop().has_value());
  EXPECT_EQ(d.avail_event(), 1) << "left behind while disabled";
  d.publish(0);
  EXPECT_TRUE(q.enable_notifications());
  EXPECT_EQ(d.avail_event(), 2);
  ASSERT_TRUE(q.pop().has_value());
  EXPECT_EQ(d.avail_event(), 3);
  EXPECT_EQ(d.used_flags(), 0) << "EVENT_IDX does not use the flag";
}

// ---------------------------------------------------------------------------------------------
// A well-behaved driver on another thread

// The driver keeps all 256 entries of the queue available, handing every used buffer straight
// back, while the device pops and pushes: the avail index moves across every 256 boundary under
// the device's reads. A ring index read in two pieces saw e.g. 0x01ff or 0x0000 there and broke
// the queue ("available index moved ... more than the queue size") within seconds.
TEST_F(VirtqueueTest, FullQueueUnderAConcurrentDriverNeverBreaks) {
  constexpr uint16_t kSize = 256;
  Virtqueue q = make_queue(kSize, 0);
  DriverRing d = ring(kSize);
  for (uint16_t i = 0; i < kSize; ++i) {
    d.set_desc(i, kBuffers + 16ull * i, 16, VRING_DESC_F_WRITE);
    d.publish(i);
  }

  std::atomic<bool> stop{false};
  std::thread driver([&] {
    uint16_t seen_used = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      // One index update per buffer, as Linux does.
      for (const uint16_t used_idx = d.used_idx(); seen_used != used_idx; ++seen_used) {
        d.publish(static_cast<uint16_t>(d.used(seen_used).id));
      }
    }
  });

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  uint64_t served = 0;
  while (served < 400'000 && !q.broken() && std::chrono::steady_clock::now() < deadline) {
    if (auto chain = q.pop()) {
      q.push(chain->head(), 16);
      q.needs_notification();
      ++served;
    }
  }
  stop = true;
  driver.join();
  EXPECT_FALSE(q.broken()) << q.error() << " after " << served << " chains";
  EXPECT_GT(served, 1000u);
}

}  // namespace virtio_virtqueue_test
