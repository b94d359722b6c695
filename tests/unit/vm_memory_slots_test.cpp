// KVM memory slot bookkeeping: ids lowest-free first and reused, overlaps and exhaustion refused
// before KVM is asked, KVM's refusal leaves nothing behind. KVM is replaced by a recorder.
#include <gtest/gtest.h>

#include <stdexcept>
#include <tuple>
#include <vector>

#include "../../src/vm/memory_slots.hpp"

using namespace libvmm;

namespace vm_memory_slots_test {

struct MemorySlotsTest : ::testing::Test {
  using Call = std::tuple<uint32_t, uint64_t, uint64_t>;  // slot, gpa, size (0: delete)
  std::vector<Call> calls;
  bool refuse = false;
  MemorySlots slots{4, [this](uint32_t slot, uint64_t gpa, uint64_t size, void*, bool) {
                      if (refuse) throw std::runtime_error("KVM: File exists");
                      calls.emplace_back(slot, gpa, size);
                    }};
  char host[1]{};
};

TEST_F(MemorySlotsTest, IdsLowestFreeFirstAndReused) {
  EXPECT_EQ(slots.add(0x0, 0x100000, host, false, "RAM"), 0u);
  EXPECT_EQ(slots.add(0x100000, 0x1000, host, false, "BAR 0"), 1u);
  EXPECT_EQ(slots.add(0x200000, 0x1000, host, false, "BAR 2"), 2u);
  slots.remove(1);
  EXPECT_EQ(calls.back(), Call(1, 0x100000, 0));
  EXPECT_EQ(slots.used(), 2u);
  EXPECT_EQ(slots.add(0x300000, 0x2000, host, false, "BAR 0 moved"), 1u);
  EXPECT_EQ(calls.back(), Call(1, 0x300000, 0x2000));
  EXPECT_EQ(slots.find(0x301fff), 1u);
  EXPECT_FALSE(slots.find(0x302000));
}

TEST_F(MemorySlotsTest, OverlapRefusedWithoutAskingKvm) {
  slots.add(0x0, 0x100000, host, false, "guest RAM");
  const size_t before = calls.size();
  try {
    slots.add(0xff000, 0x2000, host, false, "vfio 0000:00:03.0 BAR 0");
    FAIL() << "an overlap was accepted";
  } catch (const MemorySlotError& e) {
    EXPECT_STREQ(e.what(),
                 "vfio 0000:00:03.0 BAR 0: [0xff000, 0x101000) overlaps guest RAM at [0x0, "
                 "0x100000)");
  }
  EXPECT_THROW(slots.add(0x1000, 0, host, false, "empty"), MemorySlotError);
  EXPECT_THROW(slots.add(~0ull - 0xfff, 0x2000, host, false, "wraps"), MemorySlotError);
  EXPECT_EQ(calls.size(), before);
  // Adjacent is fine.
  EXPECT_EQ(slots.add(0x100000, 0x1000, host, false, "next"), 1u);
}

TEST_F(MemorySlotsTest, ExhaustionNamesTheLimit) {
  for (uint64_t i = 0; i < 4; ++i) slots.add(i * 0x1000, 0x1000, host, false, "page");
  try {
    slots.add(0x10000, 0x1000, host, false, "one more");
    FAIL();
  } catch (const MemorySlotError& e) {
    EXPECT_STREQ(e.what(), "one more: all 4 KVM memory slots are in use");
  }
  slots.remove(2);
  EXPECT_EQ(slots.add(0x10000, 0x1000, host, false, "one more"), 2u);
}

TEST_F(MemorySlotsTest, KvmRefusalLeavesNothingBehind) {
  refuse = true;
  EXPECT_THROW(slots.add(0x0, 0x1000, host, false, "x"), std::runtime_error);
  EXPECT_EQ(slots.used(), 0u);
  refuse = false;
  EXPECT_EQ(slots.add(0x0, 0x1000, host, false, "x"), 0u);
  slots.remove(7);  // not installed: nothing asked
  EXPECT_EQ(calls.size(), 1u);
}

}  // namespace vm_memory_slots_test
