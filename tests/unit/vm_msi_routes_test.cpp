// MSI-X through GSI routes: the table committed to KVM repeats the controller's routes and holds
// one MSI route per programmed vector, rewritten when the guest reprograms it; a vector whose
// route carries its message is delivered through its eventfd (the irqfd), anything else through
// KVM_SIGNAL_MSI. KVM is replaced by recorders.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "../../src/vm/msi_routes.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/kvm.hpp"
#include "libvmm/pci/msix.hpp"

using namespace libvmm;

namespace vm_msi_routes_test {

kvm_irq_routing_entry chip(uint32_t gsi) {
  kvm_irq_routing_entry e{};
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_IRQCHIP;
  e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
  e.u.irqchip.pin = gsi;
  return e;
}

struct Recorder {
  std::vector<std::vector<kvm_irq_routing_entry>> tables;
  std::vector<std::pair<int, uint32_t>> irqfds;
  std::vector<std::pair<uint64_t, uint32_t>> signalled;
  bool refuse = false;
};

uint64_t drain(int fd) {
  uint64_t count = 0;
  if (::read(fd, &count, sizeof count) != sizeof count) return 0;
  return count;
}

struct MsiRoutesTest : ::testing::Test {
  Recorder rec;
  std::shared_ptr<GsiRoutes> routes = std::make_shared<GsiRoutes>(
      std::vector<kvm_irq_routing_entry>{chip(0), chip(1)}, 24, 3,
      [this](const std::vector<kvm_irq_routing_entry>& t) {
        if (rec.refuse) throw std::runtime_error("KVM: KVM_SET_GSI_ROUTING: Invalid argument");
        rec.tables.push_back(t);
      });
  std::shared_ptr<RoutedMsiSink> sink(uint16_t vectors) {
    return std::make_shared<RoutedMsiSink>(
        routes, vectors, [this](int fd, uint32_t gsi) { rec.irqfds.emplace_back(fd, gsi); },
        [this](uint64_t a, uint32_t d) { rec.signalled.emplace_back(a, d); });
  }
};

TEST_F(MsiRoutesTest, EachVectorHasAGsiAndAnIrqfd) {
  auto s = sink(2);
  ASSERT_EQ(rec.irqfds.size(), 2u);
  EXPECT_EQ(rec.irqfds[0].second, 24u);
  EXPECT_EQ(rec.irqfds[1].second, 25u);
  EXPECT_EQ(rec.irqfds[0].first, s->eventfd(0));
  EXPECT_GE(s->eventfd(1), 0);
  EXPECT_EQ(s->eventfd(2), -1);
  EXPECT_TRUE(rec.tables.empty());  // nothing routed before the guest programs a vector
}

TEST_F(MsiRoutesTest, ProgrammingCommitsTheWholeTable) {
  auto s = sink(2);
  s->vector_programmed(1, 0xfee00000, 0x4041);
  ASSERT_EQ(rec.tables.size(), 1u);
  const auto& t = rec.tables.back();
  ASSERT_EQ(t.size(), 3u);  // the controller's two routes and the MSI one
  EXPECT_EQ(t[0].type, KVM_IRQ_ROUTING_IRQCHIP);
  EXPECT_EQ(t[1].gsi, 1u);
  EXPECT_EQ(t[2].gsi, 25u);
  EXPECT_EQ(t[2].type, KVM_IRQ_ROUTING_MSI);
  EXPECT_EQ(t[2].u.msi.address_lo, 0xfee00000u);
  EXPECT_EQ(t[2].u.msi.address_hi, 0u);
  EXPECT_EQ(t[2].u.msi.data, 0x4041u);
  // The same message again: no new table. Another vector: both routes.
  s->vector_programmed(1, 0xfee00000, 0x4041);
  EXPECT_EQ(rec.tables.size(), 1u);
  s->vector_programmed(0, 0x1'fee01000, 0x30);
  ASSERT_EQ(rec.tables.size(), 2u);
  ASSERT_EQ(rec.tables.back().size(), 4u);
  EXPECT_EQ(rec.tables.back()[2].gsi, 24u);
  EXPECT_EQ(rec.tables.back()[2].u.msi.address_hi, 1u);
  EXPECT_EQ(routes->msi_routes(), 2u);
}

// The GICv3 ITS translates per device: each route carries the function's requester ID
// (KVM_MSI_VALID_DEVID), and so does a message signalled without a route.
TEST_F(MsiRoutesTest, RoutesCarryTheRequesterIdWhereTheControllerNeedsIt) {
  std::vector<std::optional<uint32_t>> signalled_devids;
  auto s = std::make_shared<RoutedMsiSink>(
      routes, 1, [this](int fd, uint32_t gsi) { rec.irqfds.emplace_back(fd, gsi); },
      [this](uint64_t a, uint32_t d) { rec.signalled.emplace_back(a, d); }, 0x18);
  auto plain = sink(1);
  s->vector_programmed(0, 0x0808'0040, 7);
  plain->vector_programmed(0, 0xfee00000, 0x41);
  ASSERT_FALSE(rec.tables.empty());
  const auto& t = rec.tables.back();
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[2].flags, uint32_t{KVM_MSI_VALID_DEVID});
  EXPECT_EQ(t[2].u.msi.devid, 0x18u);
  EXPECT_EQ(t[3].flags, 0u);  // a sink without one: no flag
  EXPECT_EQ(t[3].u.msi.devid, 0u);
}

TEST_F(MsiRoutesTest, RoutedVectorsGoThroughTheirEventfd) {
  auto s = sink(2);
  s->vector_programmed(0, 0xfee00000, 0x41);
  s->send_vector(0, 0xfee00000, 0x41);
  s->send_vector(0, 0xfee00000, 0x41);
  EXPECT_EQ(drain(s->eventfd(0)), 2u);
  EXPECT_TRUE(rec.signalled.empty());
  // A message that is not the route (never programmed, or a vector beyond the GSIs): signalled.
  s->send_vector(1, 0xfee00000, 0x42);
  s->send_vector(7, 0xfee00000, 0x43);
  s->send(0xfee00000, 0x44);
  ASSERT_EQ(rec.signalled.size(), 3u);
  EXPECT_EQ(rec.signalled[0].second, 0x42u);
  EXPECT_EQ(drain(s->eventfd(1)), 0u);
}

TEST_F(MsiRoutesTest, ReprogrammingMovesTheRoute) {
  auto s = sink(1);
  s->vector_programmed(0, 0xfee00000, 0x41);
  s->vector_programmed(0, 0xfee02000, 0x51);  // the guest moved the interrupt to CPU 2
  ASSERT_EQ(rec.tables.size(), 2u);
  ASSERT_EQ(rec.tables.back().size(), 3u);
  EXPECT_EQ(rec.tables.back()[2].u.msi.address_lo, 0xfee02000u);
  EXPECT_EQ(rec.tables.back()[2].u.msi.data, 0x51u);
  s->send_vector(0, 0xfee02000, 0x51);
  EXPECT_EQ(drain(s->eventfd(0)), 1u);
  s->send_vector(0, 0xfee00000, 0x41);  // the old message is no longer the route
  EXPECT_EQ(rec.signalled.size(), 1u);
}

TEST_F(MsiRoutesTest, ARefusedTableLeavesTheVectorOnKvmSignalMsi) {
  auto s = sink(1);
  rec.refuse = true;
  s->vector_programmed(0, 0xfee00000, 0x41);
  EXPECT_EQ(routes->msi_routes(), 0u);
  s->send_vector(0, 0xfee00000, 0x41);
  EXPECT_EQ(rec.signalled.size(), 1u);
  EXPECT_EQ(drain(s->eventfd(0)), 0u);
}

TEST_F(MsiRoutesTest, GsisRunOutGracefully) {
  auto a = sink(2);
  auto b = sink(2);  // only one GSI left (3 in all)
  EXPECT_EQ(rec.irqfds.size(), 3u);
  EXPECT_GE(b->eventfd(0), 0);
  EXPECT_EQ(b->eventfd(1), -1);
  b->vector_programmed(1, 0xfee00000, 0x41);  // no GSI: nothing routed, signalled instead
  EXPECT_TRUE(rec.tables.empty());
  b->send_vector(1, 0xfee00000, 0x41);
  EXPECT_EQ(rec.signalled.size(), 1u);
}

// The whole path: an MSI-X table whose sink is routed; the guest programs and unmasks a vector,
// the device notifies it, the eventfd counts it.
TEST_F(MsiRoutesTest, WithAnMsixTable) {
  auto s = sink(2);
  pci::MsixTable table(2, s);
  table.control_written(1u << 15);
  const uint32_t words[4] = {0xfee00000, 0, 0x4049, 0};
  for (uint32_t i = 0; i < 4; ++i) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &words[i], 4);
    std::string why;
    ASSERT_TRUE(table.table_write(16 + i * 4, b, why)) << why;
  }
  ASSERT_EQ(rec.tables.size(), 1u);
  EXPECT_TRUE(table.notify(1));
  EXPECT_EQ(drain(s->eventfd(1)), 1u);
  EXPECT_TRUE(rec.signalled.empty());
}

// Direct delivery (a VFIO device signals the eventfds itself): the irqfd is registered only
// while the guest has the vector deliverable with a route; while masked, the eventfd counts and
// that is the pending bit, delivered through the irqfd on unmask.
struct DirectMsiTest : MsiRoutesTest {
  std::vector<std::pair<int, uint32_t>> unregistered;
  std::shared_ptr<RoutedMsiSink> direct(uint16_t vectors) {
    return std::make_shared<RoutedMsiSink>(
        routes, vectors, [this](int fd, uint32_t gsi) { rec.irqfds.emplace_back(fd, gsi); },
        [this](int fd, uint32_t gsi) { unregistered.emplace_back(fd, gsi); },
        [this](uint64_t a, uint32_t d) { rec.signalled.emplace_back(a, d); });
  }
  static void signal(int fd) {
    const uint64_t one = 1;
    ASSERT_EQ(::write(fd, &one, sizeof one), 8);
  }
};

TEST_F(DirectMsiTest, IrqfdOnlyWhileDeliverable) {
  auto s = direct(2);
  EXPECT_TRUE(rec.irqfds.empty());  // every vector starts masked
  const int fd = s->direct_eventfd(1);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(s->direct_eventfd(2), -1);
  s->direct_state(1, true, 0xfee00000, 0x41);
  ASSERT_EQ(rec.tables.size(), 1u);  // routed first
  EXPECT_EQ(rec.tables.back().back().u.msi.data, 0x41u);
  ASSERT_EQ(rec.irqfds.size(), 1u);
  EXPECT_EQ(rec.irqfds[0], std::make_pair(fd, 25u));
  EXPECT_EQ(s->attached(), 1u);
  // A new message while deliverable: the route moves, the irqfd stays.
  s->direct_state(1, true, 0xfee01000, 0x42);
  EXPECT_EQ(rec.tables.size(), 2u);
  EXPECT_EQ(rec.irqfds.size(), 1u);
  // Masked: deassigned; the device's signals now count as pending (the PBA bit).
  s->direct_state(1, false, 0xfee01000, 0x42);
  ASSERT_EQ(unregistered.size(), 1u);
  EXPECT_EQ(unregistered[0], std::make_pair(fd, 25u));
  EXPECT_FALSE(s->direct_pending(1));
  signal(fd);
  signal(fd);
  EXPECT_TRUE(s->direct_pending(1));
  EXPECT_TRUE(s->direct_pending(1));  // read twice, still pending
  // Unmasked: assigned again, and the pending signal goes through the irqfd once.
  s->direct_state(1, true, 0xfee01000, 0x42);
  EXPECT_EQ(rec.irqfds.size(), 2u);
  EXPECT_EQ(drain(fd), 1u);
  EXPECT_FALSE(s->direct_pending(1));  // attached: delivered as it comes
  EXPECT_TRUE(rec.signalled.empty());
  // Not the process's to send: vector_programmed does not route direct vectors.
  s->vector_programmed(0, 0xfee00000, 0x99);
  EXPECT_EQ(rec.tables.size(), 2u);
}

TEST_F(DirectMsiTest, UnmaskWithoutSignalsSendsNothing) {
  auto s = direct(1);
  s->direct_state(0, true, 0xfee00000, 0x41);
  s->direct_state(0, false, 0xfee00000, 0x41);
  s->direct_state(0, true, 0xfee00000, 0x41);
  EXPECT_EQ(drain(s->direct_eventfd(0)), 0u);
  EXPECT_EQ(rec.tables.size(), 1u);  // same message: the route was kept
}

TEST_F(DirectMsiTest, ARefusedRouteKeepsTheVectorPending) {
  auto s = direct(1);
  rec.refuse = true;
  s->direct_state(0, true, 0xfee00000, 0x41);
  EXPECT_TRUE(rec.irqfds.empty());  // never an irqfd on a GSI without the guest's route
  signal(s->direct_eventfd(0));
  EXPECT_TRUE(s->direct_pending(0));
  rec.refuse = false;
  s->direct_state(0, true, 0xfee00000, 0x41);  // the guest writes the entry again
  EXPECT_EQ(rec.irqfds.size(), 1u);
  EXPECT_EQ(drain(s->direct_eventfd(0)), 1u);
}

// An attached vector the guest reprograms to a message KVM refuses: KVM keeps the old route, so
// the irqfd comes off it and the device's signals wait as pending (they went to the old message).
TEST_F(DirectMsiTest, ARefusedRerouteDetachesTheVectorFromItsOldRoute) {
  auto s = direct(1);
  const int fd = s->direct_eventfd(0);
  s->direct_state(0, true, 0xfee00000, 0x41);
  ASSERT_EQ(s->attached(), 1u);
  rec.refuse = true;
  s->direct_state(0, true, 0xfee01000, 0x42);
  EXPECT_EQ(s->attached(), 0u);
  ASSERT_EQ(unregistered.size(), 1u);
  EXPECT_EQ(unregistered[0].first, fd);
  signal(fd);
  EXPECT_TRUE(s->direct_pending(0));
  rec.refuse = false;
  s->direct_state(0, true, 0xfee01000, 0x42);  // the guest writes the entry again
  EXPECT_EQ(s->attached(), 1u);
  EXPECT_EQ(rec.tables.back().back().u.msi.data, 0x42u);
  EXPECT_EQ(drain(fd), 1u) << "the pending signal, through the irqfd";
}

TEST_F(DirectMsiTest, TheTableSaysWhenAVectorIsDeliverable) {
  pci::MsixTable table(2, direct(2));
  auto state = [&table](uint16_t v) { return *table.state(v); };
  EXPECT_FALSE(state(0).deliverable);  // power-on: disabled, masked
  EXPECT_FALSE(table.state(2));
  const uint32_t words[4] = {0xfee00000, 0, 0x4049, 0};  // unmasked entry
  for (uint32_t i = 0; i < 4; ++i) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &words[i], 4);
    std::string why;
    ASSERT_TRUE(table.table_write(i * 4, b, why)) << why;
  }
  EXPECT_FALSE(state(0).deliverable);  // MSI-X still disabled
  table.control_written(1u << 15 | 1u << 14);
  EXPECT_FALSE(state(0).deliverable);  // function masked
  table.control_written(1u << 15);
  EXPECT_EQ(state(0), (pci::MsixTable::VectorState{true, 0xfee00000, 0x4049}));
  EXPECT_FALSE(state(1).deliverable);  // its entry is masked
}

// The table as KVM takes it (a C++ compiler lays struct kvm_irq_routing out differently from
// the kernel: ENOTTY once): on this host's KVM, when there is one.
TEST(MsiRoutesKvm, KvmTakesTheTable) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/kvm";
  Kvm kvm;
  KvmVm vm = kvm.create_vm();
#if defined(__x86_64__)
  vm.create_irqchip();
  std::vector<kvm_irq_routing_entry> base;
  for (uint32_t gsi = 0; gsi < 24; ++gsi) base.push_back(chip(gsi));
  GsiRoutes routes(base, 24, 4,
                   [&vm](const std::vector<kvm_irq_routing_entry>& t) { set_gsi_routing(vm, t); });
  const auto gsi = routes.allocate();
  ASSERT_TRUE(gsi);
  EXPECT_NO_THROW(routes.set_msi(*gsi, 0xfee00000, 0x41));
  EXPECT_NO_THROW(routes.set_msi(*gsi, 0xfee01000, 0x42));
  EXPECT_EQ(routes.msi_routes(), 1u);
  // Direct vectors: KVM takes the irqfd on the routed GSI, and lets it go on a mask.
  auto shared = std::make_shared<GsiRoutes>(
      base, 24, 4, [&vm](const std::vector<kvm_irq_routing_entry>& t) { set_gsi_routing(vm, t); });
  auto sink = RoutedMsiSink::for_vm(vm, shared, 2, true);
  sink->direct_state(1, true, 0xfee00000, 0x41);
  EXPECT_EQ(sink->attached(), 1u);
  sink->direct_state(1, false, 0xfee00000, 0x41);
  EXPECT_EQ(sink->attached(), 0u);
  sink->direct_state(1, true, 0xfee00000, 0x41);
  EXPECT_EQ(sink->attached(), 1u);
#else
  GTEST_SKIP() << "x86_64 routes only";
#endif
}

}  // namespace vm_msi_routes_test
