// The PLIC vmm emulates for riscv64 guests on hosts without KVM's AIA: its registers as a
// guest driver uses them (priorities, enables, threshold, claim/complete), level and edge
// sources, and hostile accesses (odd widths and offsets, sources and contexts it lacks).
#include <gtest/gtest.h>

#include <random>
#include <utility>
#include <vector>

#include "libvmm/arch/riscv64/plic.hpp"

using namespace libvmm;
using namespace libvmm::riscv64;

namespace riscv64_plic_test {

struct PlicTest : ::testing::Test {
  PlicTest()
      : plic(std::make_shared<Plic>(64, 2, [this](uint32_t context, bool asserted) {
          changes.emplace_back(context, asserted);
        })) {}

  uint32_t read32(uint64_t offset) {
    uint8_t b[4];
    plic->read(offset, b);
    return uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 24);
  }
  void write32(uint64_t offset, uint32_t value) {
    const uint8_t b[4] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                          static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
    plic->write(offset, b);
  }
  void priority(uint32_t source, uint32_t value) { write32(4 * source, value); }
  void enable(uint32_t context, uint32_t source) {
    const uint64_t at = kPlicEnableBase + kPlicEnableStride * context + 4 * (source / 32);
    write32(at, read32(at) | (1u << (source % 32)));
  }
  void threshold(uint32_t context, uint32_t value) {
    write32(kPlicContextBase + kPlicContextStride * context, value);
  }
  uint32_t claim(uint32_t context) {
    return read32(kPlicContextBase + kPlicContextStride * context + 4);
  }
  void complete(uint32_t context, uint32_t source) {
    write32(kPlicContextBase + kPlicContextStride * context + 4, source);
  }

  std::vector<std::pair<uint32_t, bool>> changes;
  std::shared_ptr<Plic> plic;
};

TEST_F(PlicTest, AnEnabledPrioritisedSourceReachesItsContextOnly) {
  priority(33, 1);
  enable(0, 33);
  plic->pulse(33);
  EXPECT_TRUE(plic->output(0));
  EXPECT_FALSE(plic->output(1));
  EXPECT_EQ(read32(kPlicPendingBase + 4), 1u << 1);  // source 33: word 1, bit 1
  EXPECT_EQ(changes, (std::vector<std::pair<uint32_t, bool>>{{0, true}}));

  EXPECT_EQ(claim(1), 0u);  // not enabled there
  EXPECT_EQ(claim(0), 33u);
  EXPECT_FALSE(plic->output(0));
  EXPECT_EQ(read32(kPlicPendingBase + 4), 0u);
  EXPECT_EQ(claim(0), 0u);  // in service
  complete(0, 33);
  EXPECT_FALSE(plic->output(0));
  EXPECT_EQ(changes, (std::vector<std::pair<uint32_t, bool>>{{0, true}, {0, false}}));
}

TEST_F(PlicTest, PriorityZeroAndTheThresholdMask) {
  enable(0, 5);
  plic->pulse(5);
  EXPECT_FALSE(plic->output(0));  // priority 0: never
  priority(5, 3);
  EXPECT_TRUE(plic->output(0));
  threshold(0, 3);
  EXPECT_FALSE(plic->output(0));  // must be above the threshold
  threshold(0, 2);
  EXPECT_TRUE(plic->output(0));
  priority(5, 0xffff'ffff);
  EXPECT_EQ(read32(4 * 5), kPlicMaxPriority);  // WARL
  threshold(0, 0xff);
  EXPECT_EQ(read32(kPlicContextBase), kPlicMaxPriority);
}

TEST_F(PlicTest, ClaimTakesTheHighestPriorityThenTheLowestSource) {
  for (uint32_t s : {40u, 41u, 42u}) {
    enable(0, s);
    plic->pulse(s);
  }
  priority(40, 2);
  priority(41, 5);
  priority(42, 5);
  EXPECT_EQ(claim(0), 41u);
  EXPECT_EQ(claim(0), 42u);
  EXPECT_EQ(claim(0), 40u);
  EXPECT_EQ(claim(0), 0u);
}

TEST_F(PlicTest, ALevelSourceStaysPendingUntilItDropsAndRequestsAgainAfterCompletion) {
  priority(10, 1);
  enable(1, 10);
  plic->set_level(10, true);
  EXPECT_TRUE(plic->output(1));
  EXPECT_EQ(claim(1), 10u);
  EXPECT_FALSE(plic->output(1));
  complete(1, 10);  // still asserted: a new request
  EXPECT_TRUE(plic->output(1));
  plic->set_level(10, false);  // withdrawn before the claim
  EXPECT_FALSE(plic->output(1));
  EXPECT_EQ(claim(1), 0u);
}

TEST_F(PlicTest, AnEdgeWhileInServiceIsDeliveredAfterCompletion) {
  priority(32, 1);
  enable(0, 32);
  plic->pulse(32);
  EXPECT_EQ(claim(0), 32u);
  plic->pulse(32);
  EXPECT_FALSE(plic->output(0));
  complete(0, 32);
  EXPECT_TRUE(plic->output(0));
  EXPECT_EQ(claim(0), 32u);
}

TEST_F(PlicTest, ACompletionForAnotherContextOrSourceIsIgnored) {
  priority(32, 1);
  enable(0, 32);
  plic->pulse(32);
  EXPECT_EQ(claim(0), 32u);
  plic->pulse(32);
  complete(1, 32);  // not enabled for context 1
  complete(0, 33);  // not in service
  complete(0, 9999);
  EXPECT_FALSE(plic->output(0));
  complete(0, 32);
  EXPECT_TRUE(plic->output(0));
}

TEST_F(PlicTest, WhatItLacksReadsZeroAndIgnoresWrites) {
  priority(0, 7);  // source 0 does not exist
  EXPECT_EQ(read32(0), 0u);
  priority(64, 7);
  EXPECT_EQ(read32(4 * 64), 0u);
  write32(kPlicEnableBase, 0xffff'ffff);
  EXPECT_EQ(read32(kPlicEnableBase), 0xffff'fffeu);
  write32(kPlicEnableBase + 8, 0xffff'ffff);  // word 2: sources 64-95
  EXPECT_EQ(read32(kPlicEnableBase + 8), 0u);
  write32(kPlicEnableBase + 2 * kPlicEnableStride, 0xffff'ffff);  // context 2
  EXPECT_EQ(read32(kPlicEnableBase + 2 * kPlicEnableStride), 0u);
  threshold(2, 1);
  EXPECT_EQ(read32(kPlicContextBase + 2 * kPlicContextStride), 0u);
  EXPECT_EQ(claim(5), 0u);
  write32(kPlicPendingBase, 0xffff'ffff);  // read-only
  EXPECT_EQ(read32(kPlicPendingBase), 0u);
  EXPECT_EQ(read32(kPlicSize - 4), 0u);
  EXPECT_EQ(read32(kPlicSize + 0x1000), 0u);

  // Odd widths and misaligned accesses: nothing.
  priority(3, 4);
  uint8_t one[1] = {0xff};
  plic->read(12, one);
  EXPECT_EQ(one[0], 0u);
  uint8_t eight[8];
  plic->read(12, eight);
  EXPECT_EQ(eight[0], 0u);
  const uint8_t value[4] = {7, 0, 0, 0};
  plic->write(13, value);
  EXPECT_EQ(read32(12), 4u);
  plic->set_level(0, true);
  plic->pulse(64);
  plic->pulse(0xffff'ffff);
  EXPECT_TRUE(changes.empty());
  EXPECT_THROW(plic->line(0), std::invalid_argument);
  EXPECT_EQ(plic->line(12)->number(), 12u);
}

TEST_F(PlicTest, DevicesDriveItThroughTheirLines) {
  priority(10, 1);
  enable(0, 10);
  const auto line = plic->line(10);
  line->set_level(true);
  EXPECT_TRUE(plic->output(0));
  line->set_level(false);
  EXPECT_FALSE(plic->output(0));
  line->pulse();
  EXPECT_TRUE(plic->output(0));
}

TEST_F(PlicTest, RandomAccessesKeepTheOutputsConsistent) {
  // A hostile guest and busy devices: the reported output of each context is always what its
  // registers say (some enabled, pending, unclaimed source above the threshold).
  std::mt19937_64 random(17);
  for (int round = 0; round < 20000; ++round) {
    const uint64_t op = random() % 6;
    const auto source = static_cast<uint32_t>(random() % 70);
    const auto context = static_cast<uint32_t>(random() % 3);
    switch (op) {
      case 0:
        plic->pulse(source);
        break;
      case 1:
        plic->set_level(source, random() % 2 == 0);
        break;
      case 2:
        claim(context);
        break;
      case 3:
        complete(context, source);
        break;
      case 4:
        write32((random() % 0x1100) & ~uint64_t{3}, static_cast<uint32_t>(random()));
        break;
      default:
        write32(kPlicEnableBase + kPlicEnableStride * context + 4 * (random() % 3),
                static_cast<uint32_t>(random()));
        break;
    }
    if (random() % 50 == 0) threshold(context, static_cast<uint32_t>(random() % 8));
  }
  // Replaying the reported changes gives the current outputs.
  bool seen[2] = {false, false};
  for (const auto& change : changes) seen[change.first] = change.second;
  EXPECT_EQ(seen[0], plic->output(0));
  EXPECT_EQ(seen[1], plic->output(1));
  EXPECT_GT(changes.size(), 100u);
  // And a claim finds an interrupt exactly when the output says there is one.
  for (uint32_t context : {0u, 1u}) {
    const bool expected = plic->output(context);
    EXPECT_EQ(claim(context) != 0, expected) << "context " << context;
  }
}

}  // namespace riscv64_plic_test
