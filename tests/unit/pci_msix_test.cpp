#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/pci/msix.hpp"

namespace libvmm::pci {
namespace pci_msix_test {

class RecordingSink : public MsiSink {
 public:
  void send(uint64_t address, uint32_t data) override { sent.emplace_back(address, data); }
  std::vector<std::pair<uint64_t, uint32_t>> sent;
};

struct MsixTest : ::testing::Test {
  std::shared_ptr<RecordingSink> sink = std::make_shared<RecordingSink>();
  MsixTable msix{3, sink};

  void program(uint16_t vector, uint64_t address, uint32_t data, bool masked) {
    const uint32_t words[4] = {static_cast<uint32_t>(address), static_cast<uint32_t>(address >> 32),
                               data, masked ? 1u : 0u};
    for (uint32_t i = 0; i < 4; ++i) {
      std::array<uint8_t, 4> b{};
      std::memcpy(b.data(), &words[i], 4);
      std::string why;
      ASSERT_TRUE(msix.table_write(vector * 16 + i * 4, b, why)) << why;
    }
  }
  uint64_t pba() {
    std::array<uint8_t, 8> b{};
    std::string why;
    EXPECT_TRUE(msix.pba_read(0, b, why)) << why;
    uint64_t v;
    std::memcpy(&v, b.data(), 8);
    return v;
  }
};

TEST_F(MsixTest, CapabilityLayout) {
  ConfigSpace c(Identity{0x1af4, 0x1041, 0, 0, 0, 0});
  const uint32_t cap = msix.add_capability(c, 1, 0, 1, 0x800);
  EXPECT_EQ(c.u8(cap), kCapMsix);
  EXPECT_EQ(c.u16(cap + 2), 2);  // table size - 1
  EXPECT_EQ(c.u32(cap + 4), 1u);
  EXPECT_EQ(c.u32(cap + 8), 0x801u);
  // Only enable and function mask are writable in Message Control.
  std::array<uint8_t, 2> ctl{0xff, 0xff};
  std::string why;
  ASSERT_TRUE(c.write(cap + 2, ctl, why));
  EXPECT_EQ(c.u16(cap + 2), 0xc002);
  EXPECT_EQ(msix.table_size(), 48u);
  EXPECT_EQ(msix.pba_size(), 8u);
  EXPECT_THROW(msix.add_capability(c, 6, 0, 1, 0), std::invalid_argument);
  EXPECT_THROW(msix.add_capability(c, 1, 4, 1, 0), std::invalid_argument);
}

TEST_F(MsixTest, DisabledSendsNothing) {
  program(0, 0xfee00000, 0x41, false);
  EXPECT_FALSE(msix.notify(0));
  EXPECT_TRUE(sink->sent.empty());
}

TEST_F(MsixTest, DeliversUnmaskedVectors) {
  msix.control_written(0x8000);
  program(1, 0xfee01000, 0x42, false);
  EXPECT_TRUE(msix.notify(1));
  ASSERT_EQ(sink->sent.size(), 1u);
  EXPECT_EQ(sink->sent[0], std::make_pair(uint64_t{0xfee01000}, 0x42u));
  EXPECT_FALSE(msix.notify(3));  // no such vector
  EXPECT_FALSE(msix.notify(MsixTable::kNoVector));
}

TEST_F(MsixTest, MaskedVectorsPendUntilUnmasked) {
  msix.control_written(0x8000);
  program(2, 0xfee00000, 0x50, true);
  EXPECT_TRUE(msix.notify(2));
  EXPECT_TRUE(sink->sent.empty());
  EXPECT_TRUE(msix.pending(2));
  EXPECT_EQ(pba(), 0x4u);
  program(2, 0xfee00000, 0x50, false);  // unmask: the pending message goes
  ASSERT_EQ(sink->sent.size(), 1u);
  EXPECT_EQ(pba(), 0u);
}

// A device thread sending a vector's message while a vCPU masks it: the mask write waits until
// the send is done, so no message of the old setting goes out after the guest's write (and its
// flushing read) returned.
TEST(Msix, AMaskWrittenDuringASendWaitsForIt) {
  class BlockingSink : public MsiSink {
   public:
    void send(uint64_t address, uint32_t data) override {
      entered.set_value();
      release.get_future().wait();
      sent.emplace_back(address, data);
    }
    std::promise<void> entered;
    std::promise<void> release;
    std::vector<std::pair<uint64_t, uint32_t>> sent;
  };
  auto sink = std::make_shared<BlockingSink>();
  MsixTable msix{1, sink};
  msix.control_written(0x8000);
  const uint32_t words[4] = {0xfee00000, 0, 0x41, 0};
  for (uint32_t i = 0; i < 4; ++i) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &words[i], 4);
    std::string why;
    ASSERT_TRUE(msix.table_write(i * 4, b, why)) << why;
  }
  auto entered = sink->entered.get_future();
  std::thread device([&] { msix.notify(0); });
  entered.wait();
  auto masked = std::async(std::launch::async, [&] {
    const std::array<uint8_t, 4> mask{1, 0, 0, 0};
    std::string why;
    return msix.table_write(12, mask, why);
  });
  EXPECT_EQ(masked.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
      << "the mask did not wait for the send in flight";
  sink->release.set_value();
  device.join();
  EXPECT_TRUE(masked.get());
  EXPECT_EQ(sink->sent.size(), 1u);
}

// A device reset forgets what waited behind a mask: it was the old driver's.
TEST_F(MsixTest, ClearPendingForgetsHeldMessages) {
  msix.control_written(0x8000);
  program(0, 0xfee00000, 0x50, true);
  EXPECT_TRUE(msix.notify(0));
  EXPECT_EQ(pba(), 0x1u);
  msix.clear_pending();
  EXPECT_EQ(pba(), 0u);
  program(0, 0xfee00000, 0x50, false);
  EXPECT_TRUE(sink->sent.empty());
}

TEST_F(MsixTest, FunctionMask) {
  msix.control_written(0xc000);
  program(0, 0xfee00000, 0x30, false);
  msix.notify(0);
  EXPECT_TRUE(sink->sent.empty());
  msix.control_written(0x8000);
  EXPECT_EQ(sink->sent.size(), 1u);
}

TEST_F(MsixTest, MalformedTableAccesses) {
  std::string why;
  std::array<uint8_t, 2> two{};
  std::array<uint8_t, 4> four{0xff, 0xff, 0xff, 0xff};
  std::array<uint8_t, 8> eight{};
  EXPECT_FALSE(msix.table_read(0, two, why));
  EXPECT_FALSE(msix.table_read(2, four, why));
  EXPECT_FALSE(msix.table_read(48, four, why));  // past the last entry
  EXPECT_FALSE(msix.table_read(UINT64_MAX - 3, four, why));
  EXPECT_FALSE(msix.table_write(4, eight, why));  // 8 bytes, 4-aligned
  EXPECT_FALSE(msix.pba_read(8, eight, why));
  EXPECT_FALSE(msix.pba_read(0, two, why));
  // Reserved vector-control bits read 0; entries start masked.
  four = {0xff, 0xff, 0xff, 0xff};
  ASSERT_TRUE(msix.table_write(12, four, why));
  ASSERT_TRUE(msix.table_read(12, four, why));
  EXPECT_EQ(four, (std::array<uint8_t, 4>{1, 0, 0, 0}));
  ASSERT_TRUE(msix.table_read(16, eight, why));  // 8-byte read of address low/high
  ASSERT_TRUE(msix.table_read(28, four, why));
  EXPECT_EQ(four[0], 1);
}

TEST_F(MsixTest, ResetMasksEverything) {
  msix.control_written(0x8000);
  program(0, 0xfee00000, 0x30, false);
  msix.reset();
  EXPECT_FALSE(msix.enabled());
  msix.control_written(0x8000);
  msix.notify(0);
  EXPECT_TRUE(sink->sent.empty());
  EXPECT_TRUE(msix.pending(0));
}

// A sink that routes by vector hears each vector's message once the entry is unmasked, before
// any delivery of it, and is asked to deliver vectors (not bare messages).
class VectorSink : public MsiSink {
 public:
  void send(uint64_t address, uint32_t data) override { bare.emplace_back(address, data); }
  void vector_programmed(uint16_t vector, uint64_t address, uint32_t data) override {
    events.push_back({'p', vector, address, data});
  }
  void send_vector(uint16_t vector, uint64_t address, uint32_t data) override {
    events.push_back({'s', vector, address, data});
  }
  struct Event {
    char what;
    uint16_t vector;
    uint64_t address;
    uint32_t data;
    bool operator==(const Event&) const = default;
  };
  std::vector<Event> events;
  std::vector<std::pair<uint64_t, uint32_t>> bare;
};

TEST(Msix, VectorSinksHearProgrammedMessagesBeforeDeliveries) {
  auto sink = std::make_shared<VectorSink>();
  MsixTable msix(2, sink);
  msix.control_written(1u << 15);
  const auto write = [&](uint64_t offset, uint32_t value) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &value, 4);
    std::string why;
    ASSERT_TRUE(msix.table_write(offset, b, why)) << why;
  };
  // Written while masked (as drivers do): nothing yet; a vector sent meanwhile pends.
  write(16 + 0, 0xfee00000);
  write(16 + 4, 0);
  write(16 + 8, 0x4041);
  EXPECT_TRUE(msix.notify(1));
  EXPECT_TRUE(sink->events.empty());
  // Unmasking: the message first, then the pending delivery.
  write(16 + 12, 0);
  using E = VectorSink::Event;
  ASSERT_EQ(sink->events.size(), 2u);
  EXPECT_EQ(sink->events[0], (E{'p', 1, 0xfee00000, 0x4041}));
  EXPECT_EQ(sink->events[1], (E{'s', 1, 0xfee00000, 0x4041}));
  // Rewritten while unmasked (an affinity change): every write is heard.
  write(16 + 8, 0x4042);
  ASSERT_EQ(sink->events.size(), 3u);
  EXPECT_EQ(sink->events[2], (E{'p', 1, 0xfee00000, 0x4042}));
  EXPECT_TRUE(msix.notify(1));
  EXPECT_EQ(sink->events.back(), (E{'s', 1, 0xfee00000, 0x4042}));
  // An 8-byte write of address+data to a masked entry: not heard; vector 0 stays masked.
  std::array<uint8_t, 8> both{};
  std::string why;
  ASSERT_TRUE(msix.table_write(0, both, why)) << why;
  EXPECT_EQ(sink->events.size(), 4u);
  EXPECT_TRUE(sink->bare.empty());
}

// A sink that delivers vectors directly (an eventfd per vector that something else signals):
// the table tells it each change of a vector's state, before the deliveries that change
// releases, and reads its pending bits into the PBA.
class DirectSink : public MsiSink {
 public:
  void send(uint64_t address, uint32_t data) override { bare.emplace_back(address, data); }
  void send_vector(uint16_t vector, uint64_t, uint32_t) override {
    events.push_back({'s', vector});
  }
  int direct_eventfd(uint16_t vector) override { return 100 + vector; }
  void direct_state(uint16_t vector, bool deliverable, uint64_t, uint32_t data) override {
    events.push_back({deliverable ? 'd' : 'm', vector, data});
  }
  bool direct_pending(uint16_t vector) override { return vector == held; }
  struct Event {
    char what;
    uint16_t vector;
    uint32_t data = 0;
    bool operator==(const Event&) const = default;
  };
  std::vector<Event> events;
  std::vector<std::pair<uint64_t, uint32_t>> bare;
  int held = -1;
};

TEST(Msix, DirectSinksHearEveryStateChange) {
  auto sink = std::make_shared<DirectSink>();
  EXPECT_EQ(MsixTable(2, sink).direct_eventfd(1), -1);  // not asked to be direct
  MsixTable msix(2, sink, true);
  EXPECT_EQ(msix.direct_eventfd(1), 101);
  const auto write = [&](uint64_t offset, uint32_t value) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &value, 4);
    std::string why;
    ASSERT_TRUE(msix.table_write(offset, b, why)) << why;
  };
  using E = DirectSink::Event;
  write(16 + 8, 0x41);  // masked, MSI-X off: the message changed, not deliverable
  ASSERT_EQ(sink->events.size(), 1u);
  EXPECT_EQ(sink->events[0], (E{'m', 1, 0x41}));
  msix.control_written(1u << 15);  // enabled; both vectors still masked: no change to report
  EXPECT_EQ(sink->events.size(), 1u);
  EXPECT_TRUE(msix.notify(1));  // masked: held here
  write(16 + 12, 0);            // unmasked: reported first, then the held delivery
  ASSERT_EQ(sink->events.size(), 3u);
  EXPECT_EQ(sink->events[1], (E{'d', 1, 0x41}));
  EXPECT_EQ(sink->events[2], (E{'s', 1}));
  msix.control_written((1u << 15) | (1u << 14));  // function mask
  EXPECT_EQ(sink->events.back(), (E{'m', 1, 0x41}));
  // What the direct path holds while masked shows in the PBA.
  sink->held = 1;
  std::array<uint8_t, 8> pba{};
  std::string why;
  ASSERT_TRUE(msix.pba_read(0, pba, why)) << why;
  EXPECT_EQ(pba[0], 0x2);
  msix.reset();  // nothing deliverable any more: nothing to report for vector 1, already masked
  EXPECT_EQ(sink->events.back(), (E{'m', 1, 0}));
  EXPECT_TRUE(sink->bare.empty());
}

TEST(Msix, BadConstruction) {
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_THROW(MsixTable(0, sink), std::invalid_argument);
  EXPECT_THROW(MsixTable(2049, sink), std::invalid_argument);
  EXPECT_THROW(MsixTable(1, nullptr), std::invalid_argument);
}

}  // namespace pci_msix_test
}  // namespace libvmm::pci
