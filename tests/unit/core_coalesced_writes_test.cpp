// The ring of writes KVM queues instead of exiting (KVM_CAP_COALESCED_PIO), on a page this
// test fills as KVM would: replayed in order to the right bus, around the ring's end, once each
// with several vCPUs replaying while writes come in, and a ring that makes no sense left alone.
#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/coalesced_writes.hpp"

using namespace libvmm;

namespace core_coalesced_writes_test {

constexpr size_t kPageSize = 4096;
// The kernel's C layout: first and last (__u32), the 24-byte entries from byte 8 (not the
// C++ view of struct kvm_coalesced_mmio_ring, whose entries start at 16).
constexpr size_t kEntriesOffset = 8;
constexpr uint32_t kCapacity = (kPageSize - kEntriesOffset) / sizeof(kvm_coalesced_mmio);

struct Write {
  uint64_t offset;
  std::vector<uint8_t> data;
  bool operator==(const Write&) const = default;
};

class Recorder final : public BusDevice {
 public:
  std::string name() const override { return "recorder"; }
  void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 0); }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    std::lock_guard lock(mutex);
    writes.push_back({offset, {data.begin(), data.end()}});
  }
  std::mutex mutex;
  std::vector<Write> writes;
};

// A page laid out as KVM's ring, and the kernel's side of it.
struct Ring {
  alignas(8) uint8_t page[kPageSize] = {};
  uint32_t& first() { return *reinterpret_cast<uint32_t*>(page); }
  uint32_t& last() { return *reinterpret_cast<uint32_t*>(page + 4); }
  kvm_coalesced_mmio& entry(uint32_t at) {
    return *reinterpret_cast<kvm_coalesced_mmio*>(page + kEntriesOffset +
                                                  at * sizeof(kvm_coalesced_mmio));
  }
  // What KVM does for a coalesced write: the entry, then `last` moved on. False when full.
  bool push(uint64_t addr, std::vector<uint8_t> data, bool pio) {
    std::atomic_ref<uint32_t> end(last());
    std::atomic_ref<uint32_t> start(first());
    const uint32_t at = end.load(std::memory_order_relaxed);
    if ((at + 1) % kCapacity == start.load(std::memory_order_acquire)) return false;
    kvm_coalesced_mmio& e = entry(at);
    e.phys_addr = addr;
    e.len = static_cast<uint32_t>(data.size());
    e.pio = pio ? 1 : 0;
    std::copy_n(data.begin(), std::min(data.size(), sizeof(e.data)), e.data);
    end.store((at + 1) % kCapacity, std::memory_order_release);
    return true;
  }
};

struct Rig {
  Ring ring;
  CoalescedWrites writes{std::span<uint8_t>(ring.page)};
  Bus pio{"port I/O"};
  Bus mmio{"MMIO"};
  std::shared_ptr<Recorder> ports = std::make_shared<Recorder>();
  std::shared_ptr<Recorder> memory = std::make_shared<Recorder>();
  Rig() {
    pio.attach(0xcf8, 8, ports);
    mmio.attach(0x10000, 0x1000, memory);
  }
};

TEST(CoalescedWrites, ReplaysEachWriteInOrderOnItsBus) {
  Rig rig;
  rig.writes.replay(&rig.pio, &rig.mmio);  // empty: nothing
  EXPECT_EQ(rig.writes.replayed(), 0u);
  ASSERT_TRUE(rig.ring.push(0xcf8, {0x00, 0x08, 0x00, 0x80}, true));
  ASSERT_TRUE(rig.ring.push(0x10010, {1, 2}, false));
  ASSERT_TRUE(rig.ring.push(0xcf8, {0x04, 0x08, 0x00, 0x80}, true));
  rig.writes.replay(&rig.pio, &rig.mmio);
  const std::vector<Write> ports = {{0, {0x00, 0x08, 0x00, 0x80}}, {0, {0x04, 0x08, 0x00, 0x80}}};
  EXPECT_EQ(rig.ports->writes, ports);
  const std::vector<Write> memory = {{0x10, {1, 2}}};
  EXPECT_EQ(rig.memory->writes, memory);
  EXPECT_EQ(rig.writes.replayed(), 3u);
  EXPECT_EQ(rig.ring.first(), rig.ring.last());
  rig.writes.replay(&rig.pio, &rig.mmio);  // taken once
  EXPECT_EQ(rig.ports->writes.size(), 2u);
}

// The bytes of a ring as Linux 6.1 on x86_64 left them (first 0, last 1, one entry from byte
// 8): PCI's CONFIG_ADDRESS written with 0x8000c068.
TEST(CoalescedWrites, ReadsTheRingAsTheKernelLaysItOut) {
  Rig rig;
  const uint8_t bytes[] = {0,    0,    0,    0,    1, 0, 0, 0,   // first, last
                           0xf8, 0x0c, 0,    0,    0, 0, 0, 0,   // phys_addr 0xcf8
                           4,    0,    0,    0,    1, 0, 0, 0,   // len 4, pio
                           0x68, 0xc0, 0x00, 0x80, 0, 0, 0, 0};  // data
  std::memcpy(rig.ring.page, bytes, sizeof bytes);
  rig.writes.replay(&rig.pio, &rig.mmio);
  const std::vector<Write> ports = {{0, {0x68, 0xc0, 0x00, 0x80}}};
  EXPECT_EQ(rig.ports->writes, ports);
  EXPECT_EQ(rig.ring.first(), 1u);
}

TEST(CoalescedWrites, GoesOnAroundTheEndOfTheRing) {
  Rig rig;
  rig.ring.first() = rig.ring.last() = kCapacity - 2;
  for (uint8_t i = 0; i < 5; ++i) ASSERT_TRUE(rig.ring.push(0xcf8, {i, 0, 0, 0x80}, true));
  EXPECT_EQ(rig.ring.last(), 3u);
  rig.writes.replay(&rig.pio, &rig.mmio);
  ASSERT_EQ(rig.ports->writes.size(), 5u);
  for (uint8_t i = 0; i < 5; ++i) EXPECT_EQ(rig.ports->writes[i].data[0], i);
  EXPECT_EQ(rig.ring.first(), 3u);
}

TEST(CoalescedWrites, AFullRingIsTakenWhole) {
  Rig rig;
  uint32_t pushed = 0;
  while (rig.ring.push(0xcf8, {0, 0, 0, 0x80}, true)) ++pushed;
  EXPECT_EQ(pushed, kCapacity - 1);  // KVM keeps one entry free; the next write exits
  rig.writes.replay(&rig.pio, &rig.mmio);
  EXPECT_EQ(rig.ports->writes.size(), pushed);
}

TEST(CoalescedWrites, LengthsAreBoundedByTheEntryAndBusesMayBeMissing) {
  Rig rig;
  ASSERT_TRUE(rig.ring.push(0xcf8, {1, 2, 3, 4}, true));
  rig.ring.entry(0).len = 0xffffffff;               // never past the entry's 8 bytes
  ASSERT_TRUE(rig.ring.push(0xcf8, {}, true));      // nothing to write
  ASSERT_TRUE(rig.ring.push(0x10000, {9}, false));  // no MMIO bus given: dropped
  rig.writes.replay(&rig.pio, nullptr);
  ASSERT_EQ(rig.ports->writes.size(), 1u);
  EXPECT_EQ(rig.ports->writes[0].data.size(), 8u);
  EXPECT_TRUE(rig.memory->writes.empty());
  EXPECT_EQ(rig.ring.first(), rig.ring.last());
}

TEST(CoalescedWrites, IndicesOutsideTheRingAreLeftAlone) {
  for (const auto& [first, last] :
       {std::pair{kCapacity, 0u}, std::pair{0u, kCapacity}, std::pair{0xffffffffu, 0xfffffffeu}}) {
    Rig rig;
    rig.ring.first() = first;
    rig.ring.last() = last;
    rig.writes.replay(&rig.pio, &rig.mmio);
    EXPECT_TRUE(rig.ports->writes.empty());
    EXPECT_EQ(rig.ring.first(), first);
  }
  uint8_t tiny[8] = {};
  CoalescedWrites none{std::span<uint8_t>(tiny)};  // no room for a single entry
  Bus pio("port I/O");
  none.replay(&pio, nullptr);
  EXPECT_EQ(none.replayed(), 0u);
}

// Two vCPUs replaying while KVM queues more: every write once, in the order it came.
TEST(CoalescedWrites, SeveralVcpusReplayEachWriteOnceInOrder) {
  Rig rig;
  constexpr uint32_t kWrites = 20000;
  std::atomic<bool> done{false};
  auto vcpu = [&] {
    while (!done.load()) rig.writes.replay(&rig.pio, &rig.mmio);
    rig.writes.replay(&rig.pio, &rig.mmio);
  };
  std::thread a(vcpu), b(vcpu);
  for (uint32_t i = 0; i < kWrites;) {
    const auto bytes = reinterpret_cast<const uint8_t*>(&i);
    if (rig.ring.push(0xcf8, {bytes, bytes + 4}, true)) ++i;
  }
  done = true;
  a.join();
  b.join();
  ASSERT_EQ(rig.ports->writes.size(), kWrites);
  for (uint32_t i = 0; i < kWrites; ++i) {
    uint32_t value;
    std::memcpy(&value, rig.ports->writes[i].data.data(), 4);
    ASSERT_EQ(value, i);
  }
}

}  // namespace core_coalesced_writes_test
