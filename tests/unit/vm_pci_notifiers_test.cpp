// A virtio-pci function's notify ioeventfds follow BAR 0: moved with it, withdrawn while it
// decodes nowhere (so another BAR placed there gets its own notifications), back when it decodes
// again; a refused address leaves that queue on the slow path. KVM is replaced by recorders.
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "../../src/vm/pci_notifiers.hpp"
#include "libvmm/virtio/pci_transport.hpp"

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

}  // namespace vm_pci_notifiers_test
