// A virtio-pci function's notify ioeventfds follow BAR 0: moved with it, withdrawn while it
// decodes nowhere (so another BAR placed there gets its own notifications), back when it decodes
// again; a refused address leaves that queue on the slow path. KVM is replaced by recorders.
#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "../../src/vm/pci_notifiers.hpp"
#include "libvmm/pci/config_space.hpp"
#include "libvmm/pci/host_bridge.hpp"
#include "libvmm/virtio/pci_transport.hpp"
#include "libvmm/virtio/virtio_device.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;

namespace vm_pci_notifiers_test {

// KVM's ioeventfds as (fd, address), refusing an address taken by another fd, as KVM does.
struct FakeKvm {
  std::set<std::pair<int, uint64_t>> registered;
  std::set<uint64_t> taken;  // by another device
  int removed = 0;

  PciNotifyEventfds::Register add() {
    return [this](int fd, uint64_t addr) {
      if (taken.count(addr) != 0) throw std::runtime_error("KVM_IOEVENTFD: File exists");
      registered.insert({fd, addr});
    };
  }
  PciNotifyEventfds::Unregister remove() {
    return [this](int fd, uint64_t addr) {
      EXPECT_EQ(registered.erase({fd, addr}), 1u) << "withdrawn where it was not registered";
      ++removed;
    };
  }
};

uint64_t notify(uint64_t base, uint16_t q) {
  return VirtioPciTransport::notify_address(base, q);
}

TEST(PciNotifyEventfds, FollowBarZeroWhereTheGuestMovesIt) {
  FakeKvm kvm;
  PciNotifyEventfds n(0x4000'0000, kvm.add(), kvm.remove());
  n.add_queue(10);
  n.add_queue(11);
  EXPECT_EQ(kvm.registered, (std::set<std::pair<int, uint64_t>>{{10, notify(0x4000'0000, 0)},
                                                                {11, notify(0x4000'0000, 1)}}));
  n.bar_moved(0x4000'0000);  // the same place: nothing to do
  EXPECT_EQ(kvm.removed, 0);
  n.bar_moved(0x5000'0000);
  EXPECT_EQ(kvm.registered, (std::set<std::pair<int, uint64_t>>{{10, notify(0x5000'0000, 0)},
                                                                {11, notify(0x5000'0000, 1)}}));
  EXPECT_EQ(n.base(), 0x5000'0000u);
}

// While BAR 0 decodes nowhere (sizing, Memory Space off) its notify addresses are free: a BAR of
// another function placed there gets them. When it decodes again, the eventfds come back.
TEST(PciNotifyEventfds, AreWithdrawnWhileBarZeroDecodesNowhere) {
  FakeKvm kvm;
  PciNotifyEventfds n(0x4000'0000, kvm.add(), kvm.remove());
  n.add_queue(10);
  n.bar_moved(std::nullopt);
  EXPECT_TRUE(kvm.registered.empty());
  EXPECT_EQ(n.base(), std::nullopt);
  n.bar_moved(std::nullopt);  // still nowhere: nothing withdrawn twice
  EXPECT_EQ(kvm.removed, 1);
  n.bar_moved(0x4000'0000);  // sizing done: back where it was
  EXPECT_EQ(kvm.registered, (std::set<std::pair<int, uint64_t>>{{10, notify(0x4000'0000, 0)}}));
}

// An address KVM refuses (another ioeventfd there) leaves that queue on the slow path; the next
// move tries again, and nothing is withdrawn that was never registered.
TEST(PciNotifyEventfds, ARefusedAddressLeavesThatQueueOnTheSlowPathUntilTheNextMove) {
  FakeKvm kvm;
  PciNotifyEventfds n(0x4000'0000, kvm.add(), kvm.remove());
  n.add_queue(10);
  n.add_queue(11);
  kvm.taken.insert(notify(0x5000'0000, 1));
  n.bar_moved(0x5000'0000);
  EXPECT_EQ(kvm.registered, (std::set<std::pair<int, uint64_t>>{{10, notify(0x5000'0000, 0)}}));
  n.bar_moved(0x6000'0000);  // queue 1 was not registered: only queue 0 withdrawn
  EXPECT_EQ(kvm.registered, (std::set<std::pair<int, uint64_t>>{{10, notify(0x6000'0000, 0)},
                                                                {11, notify(0x6000'0000, 1)}}));
  EXPECT_EQ(kvm.removed, 3);
}

// A device with two queues and nothing else: enough for a transport.
class QuietDevice final : public VirtioDevice {
 public:
  std::string name() const override { return "virtio-quiet"; }
  uint32_t device_id() const override { return 42; }
  uint64_t device_features() const override { return 0; }
  std::vector<uint16_t> queue_max_sizes() const override { return {8, 8}; }
  uint32_t config_size() const override { return 0; }
  void read_config(uint32_t, std::span<uint8_t>) override {}
  void activate(VirtioTransport&, uint64_t) override {}
  void queue_notify(uint16_t, Virtqueue&) override {}
  void reset() override {}
};

class NoMsi final : public pci::MsiSink {
 public:
  void send(uint64_t, uint32_t) override {}
};

// A function's BAR 0 decodes nowhere until the guest turns Memory Space on: its eventfds stay
// out of KVM until then (another function's BAR may be put at that address first), and come in
// at BAR 0 once the guest's command write makes it decode.
TEST(PciNotifyEventfds, StayOutOfKvmUntilTheGuestFirstTurnsMemorySpaceOn) {
  test::TestMemory memory{1 << 20};
  auto bridge = pci::HostBridge::create(
      {{0xb000'0000, 1 << 20}, {0xc000'0000, 1 << 24}, {}, {0xc000, 0x1000}});
  auto transport = std::make_shared<VirtioPciTransport>(std::make_shared<QuietDevice>(), memory,
                                                        std::make_shared<NoMsi>(), nullptr);
  const uint8_t number = bridge->add(transport);
  FakeKvm kvm;
  auto n = PciNotifyEventfds::follow(*transport, kvm.add(), kvm.remove());
  n->add_queue(10);
  n->add_queue(11);
  EXPECT_TRUE(kvm.registered.empty());
  EXPECT_EQ(n->base(), std::nullopt);

  const std::array<uint8_t, 2> memory_on{pci::kCommandMemory, 0};
  bridge->config_write(uint32_t{number} << 3, pci::kCommand, memory_on);
  const std::optional<pci::BarMapping> bar = transport->mappings()[0];
  ASSERT_TRUE(bar);
  const uint64_t bar0 = bar->address;
  EXPECT_EQ(n->base(), bar0);
  EXPECT_EQ(kvm.registered,
            (std::set<std::pair<int, uint64_t>>{{10, notify(bar0, 0)}, {11, notify(bar0, 1)}}));
}

}  // namespace vm_pci_notifiers_test
