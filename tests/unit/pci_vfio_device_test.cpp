// VfioPciDevice as the guest sees it, on a fake VFIO device file (support/fake_vfio_device.hpp):
// configuration space (identity, BAR sizing, the command register passed on, MSI-X and MSI
// capabilities), trapped BAR accesses forwarded at the right region offsets, the emulated
// MSI-X table and PBA, the interrupts VFIO is told to signal, and the BAR pages that go into
// the guest as the guest moves its BARs. Malformed accesses read zeros (or all-ones where the
// device fails) and reach nothing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/pci/host_bridge.hpp"
#include "libvmm/pci/vfio.hpp"
#include "libvmm/pci/vfio_device_file.hpp"
#include "unit/support/fake_vfio_device.hpp"

namespace libvmm::pci {
namespace pci_vfio_device_test {

using test::FakeVfioDevice;
using test::FakeVfioShape;
using test::RecordingBarMapper;
using test::RecordingMsiSink;

constexpr uint32_t kIntxIndex = VFIO_PCI_INTX_IRQ_INDEX;
constexpr uint32_t kMsiIndex = VFIO_PCI_MSI_IRQ_INDEX;
constexpr uint32_t kMsixIndex = VFIO_PCI_MSIX_IRQ_INDEX;

class VfioDeviceTest : public ::testing::Test {
 protected:
  std::shared_ptr<VfioPciDevice> open(FakeVfioShape shape = {}, uint16_t direct = 0,
                                      std::shared_ptr<BarMapper> mapper = nullptr) {
    fake = std::make_shared<FakeVfioDevice>(std::move(shape));
    sink = std::make_shared<RecordingMsiSink>(direct);
    return VfioPciDevice::open(
        fake->file(), "0000:01:00.0", "--vfio 0000:01:00.0",
        [this](uint16_t) -> std::shared_ptr<MsiSink> { return sink; }, std::move(mapper));
  }
  // Why open() refuses `shape` ("(opened)" when it does not).
  std::string refusal(FakeVfioShape shape) {
    try {
      open(std::move(shape));
    } catch (const UserError& e) {
      return e.what();
    }
    return "(opened)";
  }

  static uint32_t config(PciFunction& f, uint32_t offset, size_t size = 4) {
    std::array<uint8_t, 4> b{};
    f.config_read(offset, std::span(b.data(), size));
    uint32_t v = 0;
    std::memcpy(&v, b.data(), size);
    return v;
  }
  static void set_config(PciFunction& f, uint32_t offset, uint32_t value, size_t size = 4) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &value, 4);
    f.config_write(offset, std::span<const uint8_t>(b.data(), size));
  }
  // The offset of the capability `id` the guest finds (0: none).
  static uint32_t capability(PciFunction& f, uint8_t id) {
    uint32_t at = config(f, kCapabilityPointer, 1);
    for (int guard = 0; at != 0 && guard < 48; ++guard) {
      if (config(f, at, 1) == id) return at;
      at = config(f, at + 1, 1);
    }
    return 0;
  }
  static uint64_t bar_read(PciFunction& f, unsigned bar, uint64_t offset, size_t size) {
    std::array<uint8_t, 16> b{};
    b.fill(0xaa);
    f.bar_read(bar, offset, std::span(b.data(), size));
    uint64_t v = 0;
    std::memcpy(&v, b.data(), std::min<size_t>(size, 8));
    return v;
  }
  static void bar_write(PciFunction& f, unsigned bar, uint64_t offset, uint64_t value,
                        size_t size) {
    std::array<uint8_t, 16> b{};
    std::memcpy(b.data(), &value, 8);
    f.bar_write(bar, offset, std::span<const uint8_t>(b.data(), size));
  }
  // MSI-X table entry `v`: message and mask, as a guest driver writes it.
  static void program_vector(PciFunction& f, uint16_t v, uint64_t address, uint32_t data,
                             bool masked, uint64_t table = 0x2000) {
    const uint64_t at = table + 16u * v;
    bar_write(f, 0, at, address, 8);
    bar_write(f, 0, at + 8, data, 4);
    bar_write(f, 0, at + 12, masked ? 1 : 0, 4);
  }
  size_t device_accesses() const { return fake->accesses.size(); }

  EventLoop loop;
  std::shared_ptr<FakeVfioDevice> fake;
  std::shared_ptr<RecordingMsiSink> sink;
};

TEST_F(VfioDeviceTest, IdentityFromTheDeviceAndOnlyItsInterruptCapability) {
  auto dev = open();
  EXPECT_EQ(config(*dev, kVendorId), 0x00101b36u);
  EXPECT_EQ(config(*dev, kRevision) >> 8, 0x010802u);
  EXPECT_EQ(config(*dev, kSubsystemVendorId), 0x11001b36u);
  EXPECT_EQ(config(*dev, kHeaderType, 1), 0u);
  EXPECT_NE(capability(*dev, kCapMsix), 0u);
  EXPECT_EQ(capability(*dev, 0x01), 0u);  // power management: not offered
  EXPECT_EQ(capability(*dev, kCapMsi), 0u);
  EXPECT_EQ(config(*dev, kInterruptPin, 1), 0u);  // until the machine wires it
  EXPECT_EQ(dev->msix_vectors(), 4);
  EXPECT_TRUE(dev->has_intx());
  EXPECT_EQ(fake->resets, 1);  // at open
  ASSERT_TRUE(dev->set_intx(100, 101));
  EXPECT_EQ(config(*dev, kInterruptPin, 1), 1u);
}

TEST_F(VfioDeviceTest, RefusesWhatItCannotPassThrough) {
  FakeVfioShape bridge;
  bridge.header_type = 1;
  EXPECT_EQ(refusal(bridge),
            "--vfio 0000:01:00.0: the device is a PCI bridge (header type 1); only endpoints "
            "can be passed through");
  FakeVfioShape odd_bar;
  odd_bar.bars[2].size = 0x3000;
  EXPECT_EQ(refusal(odd_bar),
            "--vfio 0000:01:00.0: BAR 2 has a size (0x3000 bytes) this VMM cannot place");
  // Sizes ConfigSpace would refuse: a 32-bit BAR above 2 GiB, a 64-bit BAR 5.
  FakeVfioShape huge_bar;
  huge_bar.bars[2].size = uint64_t{1} << 32;
  EXPECT_EQ(refusal(huge_bar),
            "--vfio 0000:01:00.0: BAR 2 has a size (0x100000000 bytes) this VMM cannot place");
  FakeVfioShape last_mem64;
  last_mem64.bars[5] = {BarKind::mem64, 0x1000, false};
  EXPECT_EQ(refusal(last_mem64),
            "--vfio 0000:01:00.0: BAR 5 is 64-bit but has no register after it for its upper "
            "half");
  FakeVfioShape big_io;
  big_io.bars[4] = {BarKind::io, 0x200, false};
  EXPECT_NE(refusal(big_io), "(opened)");
  FakeVfioShape table_nowhere;
  table_nowhere.table_bar = 4;
  EXPECT_EQ(refusal(table_nowhere),
            "--vfio 0000:01:00.0: the device's MSI-X table or PBA is in a BAR it does not have");
  FakeVfioShape table_in_upper_half;
  table_in_upper_half.pba_bar = 1;
  EXPECT_NE(refusal(table_in_upper_half), "(opened)");
  FakeVfioShape no_vfio_msix;
  no_vfio_msix.vfio_msix_count = 0;
  EXPECT_EQ(refusal(no_vfio_msix),
            "--vfio 0000:01:00.0: VFIO offers no MSI-X interrupts for the device");
  FakeVfioShape silent;
  silent.msix = false;
  silent.interrupt_pin = 0;
  EXPECT_EQ(refusal(silent),
            "--vfio 0000:01:00.0: the device has neither MSI-X, MSI nor an INTx pin VFIO "
            "offers; this VMM passes through MSI-X, MSI and INTx interrupts");
}

TEST_F(VfioDeviceTest, BarsSizeAndProgramAsTheDeviceDeclaresThem) {
  auto dev = open();
  const size_t before = device_accesses();
  for (uint32_t reg = kBar0; reg < kBar0 + 24; reg += 4) set_config(*dev, reg, 0xffffffff);
  EXPECT_EQ(config(*dev, kBar0), 0xffffc004u);  // 16 KiB, 64-bit
  EXPECT_EQ(config(*dev, kBar0 + 4), 0xffffffffu);
  EXPECT_EQ(config(*dev, kBar0 + 8), 0xfffff000u);  // 4 KiB, 32-bit
  EXPECT_EQ(config(*dev, kBar0 + 12), 0u);          // not implemented
  set_config(*dev, kBar0, 0xc0004000);
  set_config(*dev, kBar0 + 4, 0x8);
  set_config(*dev, kBar0 + 8, 0xc0010000);
  EXPECT_FALSE(dev->mappings()[0]);  // memory decoding is off
  set_config(*dev, kCommand, kCommandMemory, 2);
  const auto m = dev->mappings();
  ASSERT_TRUE(m[0] && m[2]);
  EXPECT_EQ(m[0]->address, 0x8c0004000u);
  EXPECT_EQ(m[0]->size, 0x4000u);
  EXPECT_EQ(m[2]->address, 0xc0010000u);
  // The command register only (read, then written): the BARs are ours.
  EXPECT_EQ(device_accesses(), before + 2);
}

TEST_F(VfioDeviceTest, CommandRegisterPassesOnDecodingAndBusMasterOnly) {
  auto dev = open();
  set_config(*dev, kCommand, kCommandMemory | kCommandBusMaster | kCommandSerr, 2);
  // INTx stays disabled on the device while the guest has no line for it.
  EXPECT_EQ(fake->command(), kCommandMemory | kCommandBusMaster | kCommandIntxDisable);
  ASSERT_FALSE(fake->accesses.empty());
  EXPECT_EQ(fake->accesses.back().region, uint32_t{VFIO_PCI_CONFIG_REGION_INDEX});
  EXPECT_EQ(fake->accesses.back().offset, kCommand);
  EXPECT_EQ(fake->accesses.back().bytes.size(), 2u);
  ASSERT_TRUE(dev->set_intx(100, 101));
  set_config(*dev, kCommand, kCommandIo, 2);
  EXPECT_EQ(fake->command(), kCommandIo);  // the guest's INTx disable bit now: clear
  set_config(*dev, kCommand, kCommandIo | kCommandIntxDisable, 2);
  EXPECT_EQ(fake->command(), kCommandIo | kCommandIntxDisable);
  // A write next to the command register leaves the device alone.
  const size_t before = device_accesses();
  set_config(*dev, kInterruptLine, 0x0b, 1);
  EXPECT_EQ(device_accesses(), before);
}

// The device's own command bits (SERR#, parity) are written back as the device has them now,
// not as it had them when it was opened: a reset since then cleared them.
TEST_F(VfioDeviceTest, CommandBitsOfTheDeviceAreTakenFreshAtEachWrite) {
  FakeVfioShape shape;
  shape.command = kCommandSerr | kCommandIntxDisable;
  auto dev = open(shape);
  auto& config_region = fake->region(VFIO_PCI_CONFIG_REGION_INDEX);
  config_region[kCommand] = 0;  // a reset of the device
  config_region[kCommand + 1] = 0;
  set_config(*dev, kCommand, kCommandMemory, 2);
  EXPECT_EQ(fake->command(), kCommandMemory | kCommandIntxDisable) << "no stale SERR#";
}

TEST_F(VfioDeviceTest, TrappedAccessesReachTheirRegionOffset) {
  auto dev = open();
  for (const size_t size : {1u, 2u, 4u, 8u}) {
    bar_write(*dev, 2, 0x100, 0x8877665544332211, size);
    const FakeVfioDevice::Access& w = fake->accesses.back();
    EXPECT_TRUE(w.write);
    EXPECT_EQ(w.region, uint32_t{VFIO_PCI_BAR2_REGION_INDEX});
    EXPECT_EQ(w.offset, 0x100u);
    EXPECT_EQ(w.bytes.size(), size);
    const uint64_t mask = size == 8 ? ~0ull : (1ull << (8 * size)) - 1;
    EXPECT_EQ(bar_read(*dev, 2, 0x100, size), 0x8877665544332211 & mask) << size;
    EXPECT_FALSE(fake->accesses.back().write);
  }
  // BAR 0 outside the MSI-X pages goes to the device too, at its last bytes.
  bar_write(*dev, 0, 0x3ff8, 0x0123456789abcdef, 8);
  EXPECT_EQ(fake->accesses.back().region, uint32_t{VFIO_PCI_BAR0_REGION_INDEX});
  EXPECT_EQ(fake->accesses.back().offset, 0x3ff8u);
  EXPECT_EQ(bar_read(*dev, 0, 0x3ff8, 8), 0x0123456789abcdefu);
}

TEST_F(VfioDeviceTest, AccessesOutsideABarReachNothingAndReadZero) {
  auto dev = open();
  const size_t before = device_accesses();
  struct Case {
    unsigned bar;
    uint64_t offset;
    size_t size;
  };
  for (const Case c :
       {Case{2, 0xffe, 4}, Case{2, 0x1000, 1}, Case{2, UINT64_MAX, 1}, Case{2, UINT64_MAX - 3, 8},
        Case{0, 0x4000, 8}, Case{1, 0, 4}, Case{3, 0, 4}, Case{6, 0, 4}, Case{UINT32_MAX, 0, 4}}) {
    EXPECT_EQ(bar_read(*dev, c.bar, c.offset, c.size), 0u) << c.bar << " " << c.offset;
    bar_write(*dev, c.bar, c.offset, ~0ull, c.size);
  }
  EXPECT_EQ(device_accesses(), before);
}

TEST_F(VfioDeviceTest, OddSizesStayInsideTheBar) {
  auto dev = open();
  // The bridge only sends 1, 2, 4 and 8 bytes; others must still not reach past the BAR.
  for (const size_t size : {0u, 3u, 16u}) {
    bar_read(*dev, 2, 0xff0, size);
    bar_write(*dev, 2, 0xff0, 0, size);
    EXPECT_EQ(bar_read(*dev, 2, 0x1000 - size + 1, size), 0u);
  }
  for (const FakeVfioDevice::Access& a : fake->accesses) {
    if (a.region != VFIO_PCI_BAR2_REGION_INDEX) continue;
    EXPECT_LE(a.offset + a.bytes.size(), 0x1000u);
  }
  // The MSI-X table takes 4 and 8 bytes only.
  program_vector(*dev, 0, 0xfee00000, 0x41, false);
  for (const size_t size : {0u, 1u, 2u, 3u, 16u}) {
    EXPECT_EQ(bar_read(*dev, 0, 0x2000, size), 0u) << size;
    bar_write(*dev, 0, 0x2000, ~0ull, size);
  }
  EXPECT_EQ(bar_read(*dev, 0, 0x2000, 8), 0xfee00000u);
}

TEST_F(VfioDeviceTest, FailingDeviceReadsAllOnes) {
  auto dev = open();
  fake->fail_io = true;
  EXPECT_EQ(bar_read(*dev, 2, 0x10, 4), 0xffffffffu);
  bar_write(*dev, 2, 0x10, 1, 4);                 // logged, no more
  set_config(*dev, kCommand, kCommandMemory, 2);  // likewise
  EXPECT_EQ(config(*dev, kCommand, 2), kCommandMemory);
}

TEST_F(VfioDeviceTest, MsixTableIsEmulatedAndDirectVectorsFollowIt) {
  auto dev = open({}, 2);  // vectors 0 and 1 as irqfds
  dev->start(loop);
  EXPECT_EQ(dev->direct_vectors(), 2);
  // No INTx wired: VFIO signals all of MSI-X from the start.
  ASSERT_EQ(fake->triggers[kMsixIndex].size(), 4u);
  EXPECT_EQ(fake->triggers[kMsixIndex][0], sink->direct_eventfd(0));
  EXPECT_NE(fake->triggers[kMsixIndex][2], sink->direct_eventfd(2));
  const size_t device_before = device_accesses();
  program_vector(*dev, 1, 0xfee01000, 0x42, false);
  EXPECT_EQ(bar_read(*dev, 0, 0x2010, 8), 0xfee01000u);
  EXPECT_EQ(bar_read(*dev, 0, 0x2018, 4), 0x42u);
  EXPECT_EQ(bar_read(*dev, 0, 0x2000 + 12, 4), 1u);  // vector 0: masked at reset
  EXPECT_EQ(device_accesses(), device_before);       // the table never reaches the device
  // The sink hears of the new message, not deliverable while MSI-X is off.
  ASSERT_FALSE(sink->states.empty());
  EXPECT_EQ(sink->states.back(), (RecordingMsiSink::DirectState{1, false, 0xfee01000, 0x42}));
  const uint32_t cap = capability(*dev, kCapMsix);
  ASSERT_NE(cap, 0u);
  EXPECT_EQ(config(*dev, cap + 4), 0x2000u);  // table: BAR 0
  EXPECT_EQ(config(*dev, cap + 8), 0x3000u);
  set_config(*dev, cap + 2, 0x8000, 2);  // enable
  EXPECT_EQ(sink->states.back(), (RecordingMsiSink::DirectState{1, true, 0xfee01000, 0x42}));
  set_config(*dev, cap + 2, 0xc000, 2);  // function mask
  EXPECT_EQ(sink->states.back(), (RecordingMsiSink::DirectState{1, false, 0xfee01000, 0x42}));
  set_config(*dev, cap + 2, 0x8000, 2);
  bar_write(*dev, 0, 0x201c, 1, 4);  // vector 1 masked
  EXPECT_EQ(sink->states.back(), (RecordingMsiSink::DirectState{1, false, 0xfee01000, 0x42}));
  // Vectors past the direct ones go through the table: VFIO keeps the same eventfds.
  program_vector(*dev, 3, 0xfee02000, 0x43, false);
  EXPECT_EQ(sink->states.back().vector, 1);
  EXPECT_EQ(fake->kinds_on(), 1u);
}

TEST_F(VfioDeviceTest, PbaReadsTheSinksPendingBitsAndIgnoresWrites) {
  auto dev = open({}, 2);
  dev->start(loop);
  sink->pending = {false, true};
  EXPECT_EQ(bar_read(*dev, 0, 0x3000, 8), 0x2u);
  EXPECT_EQ(bar_read(*dev, 0, 0x3000, 4), 0x2u);
  const size_t before = device_accesses();
  bar_write(*dev, 0, 0x3000, ~0ull, 8);
  EXPECT_EQ(bar_read(*dev, 0, 0x3000, 8), 0x2u);
  // Straddling the PBA's start or end, or unaligned: zero, and nothing reaches the device.
  EXPECT_EQ(bar_read(*dev, 0, 0x2ffc, 8), 0u);
  EXPECT_EQ(bar_read(*dev, 0, 0x3004, 8), 0u);
  EXPECT_EQ(bar_read(*dev, 0, 0x3001, 4), 0u);
  EXPECT_EQ(device_accesses(), before);
}

TEST_F(VfioDeviceTest, TableStraddlesReadZeroAndWriteNothing) {
  auto dev = open();
  program_vector(*dev, 0, 0xfee00000, 0x41, false);
  const size_t before = device_accesses();
  EXPECT_EQ(bar_read(*dev, 0, 0x1ffc, 8), 0u);  // the table's first byte and one before
  bar_write(*dev, 0, 0x1ffc, ~0ull, 8);
  EXPECT_EQ(bar_read(*dev, 0, 0x203c, 8), 0u);  // past its last vector (4 x 16 bytes)
  bar_write(*dev, 0, 0x203c, ~0ull, 8);
  EXPECT_EQ(bar_read(*dev, 0, 0x2002, 4), 0u);  // unaligned
  EXPECT_EQ(device_accesses(), before);
  EXPECT_EQ(bar_read(*dev, 0, 0x2000, 8), 0xfee00000u);
  // Just past the table: the device's own register.
  bar_read(*dev, 0, 0x2040, 4);
  EXPECT_EQ(fake->accesses.back().offset, 0x2040u);
}

TEST_F(VfioDeviceTest, IntxUntilTheGuestEnablesMsixAndBackWhenItDisablesIt) {
  auto dev = open();
  ASSERT_TRUE(dev->set_intx(100, 101));
  dev->start(loop);
  EXPECT_EQ(fake->triggers[kIntxIndex], std::vector<int32_t>{100});
  EXPECT_EQ(fake->irq_sets.back().action, uint32_t{VFIO_IRQ_SET_ACTION_UNMASK});
  EXPECT_EQ(fake->irq_sets.back().fds, std::vector<int32_t>{101});
  const uint32_t cap = capability(*dev, kCapMsix);
  set_config(*dev, cap + 2, 0x8000, 2);
  EXPECT_TRUE(fake->triggers[kIntxIndex].empty());
  EXPECT_EQ(fake->triggers[kMsixIndex].size(), 4u);
  set_config(*dev, cap + 2, 0xc000, 2);  // a mask changes nothing in VFIO
  EXPECT_EQ(fake->triggers[kMsixIndex].size(), 4u);
  set_config(*dev, cap + 2, 0, 2);
  EXPECT_TRUE(fake->triggers[kMsixIndex].empty());
  EXPECT_EQ(fake->triggers[kIntxIndex], std::vector<int32_t>{100});
  // VFIO refusing the switch: the guest is told (logged); nothing is half on.
  fake->refuse_set_irqs = true;
  set_config(*dev, cap + 2, 0x8000, 2);
  EXPECT_LE(fake->kinds_on(), 1u);
}

TEST_F(VfioDeviceTest, AKindVfioKeepsOnIsTurnedOffAtTheNextSwitch) {
  auto dev = open();
  ASSERT_TRUE(dev->set_intx(100, 101));
  dev->start(loop);
  const uint32_t cap = capability(*dev, kCapMsix);
  // VFIO keeps INTx on: MSI-X cannot go on, and INTx is still what the device signals.
  fake->refuse_irqs_off = true;
  set_config(*dev, cap + 2, 0x8000, 2);
  EXPECT_EQ(fake->triggers[kIntxIndex], std::vector<int32_t>{100});
  EXPECT_TRUE(fake->triggers[kMsixIndex].empty());
  // The guest's next write of the control register tries again: INTx off, MSI-X on (had the
  // record said "none", nothing would turn INTx off and VFIO would refuse MSI-X again).
  fake->refuse_irqs_off = false;
  set_config(*dev, cap + 2, 0x8000, 2);
  EXPECT_TRUE(fake->triggers[kIntxIndex].empty());
  EXPECT_EQ(fake->triggers[kMsixIndex].size(), 4u);
  EXPECT_EQ(fake->kinds_on(), 1u);
}

// INTx half on (its trigger taken, its unmask eventfd refused) is turned off again: recorded as
// "none" while VFIO still had INTx on, the next kind would have been refused (VFIO allows one).
TEST_F(VfioDeviceTest, IntxRefusedHalfWayIsTurnedOffSoTheNextKindCanGoOn) {
  auto dev = open();
  ASSERT_TRUE(dev->set_intx(100, 101));
  dev->start(loop);
  const uint32_t cap = capability(*dev, kCapMsix);
  set_config(*dev, cap + 2, 0x8000, 2);  // MSI-X on
  fake->refuse_unmask = true;
  set_config(*dev, cap + 2, 0, 2);  // MSI-X off: back to INTx, whose unmask VFIO refuses
  EXPECT_EQ(fake->kinds_on(), 0u);
  fake->refuse_unmask = false;
  set_config(*dev, cap + 2, 0x8000, 2);
  EXPECT_EQ(fake->triggers[kMsixIndex].size(), 4u);
  EXPECT_EQ(fake->kinds_on(), 1u);
}

TEST_F(VfioDeviceTest, StartFailsWhenVfioRefusesTheVectors) {
  auto dev = open();
  fake->refuse_set_irqs = true;
  EXPECT_THROW(dev->start(loop), UserError);
}

FakeVfioShape msi_shape() {
  FakeVfioShape s;
  s.msix = false;
  s.msi = true;
  return s;
}

TEST_F(VfioDeviceTest, MsiVectorsFollowWhatTheGuestEnables) {
  auto dev = open(msi_shape(), 1);
  EXPECT_EQ(dev->msix_vectors(), 0);
  EXPECT_EQ(dev->msi_vectors(), 4);
  EXPECT_EQ(capability(*dev, kCapMsix), 0u);
  const uint32_t cap = capability(*dev, kCapMsi);
  ASSERT_NE(cap, 0u);
  EXPECT_EQ(config(*dev, cap + 2, 2), 0x184u);  // per-vector masks, 64-bit, 4 vectors capable
  ASSERT_TRUE(dev->set_intx(100, 101));
  dev->start(loop);
  EXPECT_EQ(fake->triggers[kIntxIndex], std::vector<int32_t>{100});
  set_config(*dev, cap + 4, 0xfee00000);
  set_config(*dev, cap + 8, 0);
  set_config(*dev, cap + 12, 0x40, 2);
  EXPECT_TRUE(fake->triggers[kMsiIndex].empty());  // not enabled yet
  set_config(*dev, cap + 2, 0x11, 2);              // enable, 2 vectors
  EXPECT_TRUE(fake->triggers[kIntxIndex].empty());
  ASSERT_EQ(fake->triggers[kMsiIndex].size(), 2u);
  EXPECT_EQ(fake->triggers[kMsiIndex][0], sink->direct_eventfd(0));
  ASSERT_FALSE(sink->states.empty());
  EXPECT_EQ(sink->states.back(), (RecordingMsiSink::DirectState{0, true, 0xfee00000, 0x40}));
  set_config(*dev, cap + 2, 0x71, 2);  // more than it may: as many as it offers
  EXPECT_EQ(fake->triggers[kMsiIndex].size(), 4u);
  set_config(*dev, cap + 2, 0x70, 2);  // disable: back to INTx
  EXPECT_TRUE(fake->triggers[kMsiIndex].empty());
  EXPECT_EQ(fake->triggers[kIntxIndex], std::vector<int32_t>{100});
  EXPECT_FALSE(sink->states.back().deliverable);
}

TEST_F(VfioDeviceTest, AnMsiSwitchVfioRefusedIsTriedAgainAtTheNextWrite) {
  auto dev = open(msi_shape(), 1);
  ASSERT_TRUE(dev->set_intx(100, 101));
  dev->start(loop);
  const uint32_t cap = capability(*dev, kCapMsi);
  set_config(*dev, cap + 4, 0xfee00000);
  fake->refuse_set_irqs = true;
  set_config(*dev, cap + 2, 0x11, 2);  // enable, 2 vectors: refused
  EXPECT_TRUE(fake->triggers[kMsiIndex].empty());
  fake->refuse_set_irqs = false;
  set_config(*dev, cap + 2, 0x11, 2);  // the same value again
  EXPECT_EQ(fake->triggers[kMsiIndex].size(), 2u);
  EXPECT_EQ(fake->kinds_on(), 1u);
}

// Per-vector masks: a masked vector that goes straight to KVM is not deliverable at the sink
// (which holds its signals); one through the loop is held pending by the device, reads as
// pending, and goes out when the guest unmasks it.
TEST_F(VfioDeviceTest, MaskedMsiVectorsAreHeldPendingAndSentAtTheUnmask) {
  auto dev = open(msi_shape(), 1);  // vector 0 is the sink's irqfd, 1-3 go through the loop
  dev->start(loop);
  const uint32_t cap = capability(*dev, kCapMsi);
  EXPECT_EQ(config(*dev, cap + 2, 2) & 0x100u, 0x100u);  // per-vector masking offered
  set_config(*dev, cap + 4, 0xfee00000);
  set_config(*dev, cap + 12, 0x40, 2);
  set_config(*dev, cap + 16, 0x3);     // vectors 0 and 1 masked
  set_config(*dev, cap + 2, 0x21, 2);  // enable, 4 vectors
  ASSERT_EQ(fake->triggers[kMsiIndex].size(), 4u);
  ASSERT_FALSE(sink->states.empty());
  EXPECT_EQ(sink->states.back(), (RecordingMsiSink::DirectState{0, false, 0xfee00000, 0x40}));

  // The device signals vectors 1 (masked) and 2 (not).
  const uint64_t one = 1;
  for (int v : {1, 2}) {
    ASSERT_EQ(::write(fake->triggers[kMsiIndex][v], &one, sizeof one), 8);
  }
  loop.post([this] { loop.stop(); });
  loop.run();
  ASSERT_EQ(sink->sent.size(), 1u);
  EXPECT_EQ(sink->sent[0], (RecordingMsiSink::Message{0xfee00000, 0x42}));
  // Pending: vector 1 (the device's own bit) and vector 0 (the sink's).
  sink->pending = {true};
  EXPECT_EQ(config(*dev, cap + 20), 0x3u);

  // Unmasked: vector 1 goes out now, and the sink may deliver vector 0.
  set_config(*dev, cap + 16, 0x0);
  ASSERT_EQ(sink->sent.size(), 2u);
  EXPECT_EQ(sink->sent[1], (RecordingMsiSink::Message{0xfee00000, 0x41}));
  EXPECT_EQ(sink->states.back(), (RecordingMsiSink::DirectState{0, true, 0xfee00000, 0x40}));
  sink->pending = {false};
  EXPECT_EQ(config(*dev, cap + 20), 0x0u);
}

TEST_F(VfioDeviceTest, AMaskedMsiVectorsPendingSignalGoesWithMsiOff) {
  auto dev = open(msi_shape(), 1);
  dev->start(loop);
  const uint32_t cap = capability(*dev, kCapMsi);
  set_config(*dev, cap + 4, 0xfee00000);
  set_config(*dev, cap + 16, 0x8);
  set_config(*dev, cap + 2, 0x21, 2);  // enable, 4 vectors
  const uint64_t one = 1;
  ASSERT_EQ(::write(fake->triggers[kMsiIndex][3], &one, sizeof one), 8);
  loop.post([this] { loop.stop(); });
  loop.run();
  EXPECT_EQ(config(*dev, cap + 20), 0x8u);
  set_config(*dev, cap + 2, 0x20, 2);
  set_config(*dev, cap + 16, 0x0);
  set_config(*dev, cap + 2, 0x21, 2);
  EXPECT_TRUE(sink->sent.empty());
  EXPECT_EQ(config(*dev, cap + 20), 0x0u);
}

TEST_F(VfioDeviceTest, MsiVectorsAreAsFewAsVfioOffers) {
  FakeVfioShape s = msi_shape();
  s.msi_capable_log2 = 5;
  s.vfio_msi_count = 3;
  auto dev = open(s);
  EXPECT_EQ(dev->msi_vectors(), 2);
  FakeVfioShape reserved = msi_shape();
  reserved.msi_capable_log2 = 7;  // a reserved encoding: at most 32
  EXPECT_EQ(open(reserved)->msi_vectors(), 32);
}

TEST_F(VfioDeviceTest, BarPagesGoIntoTheGuestWhereItPlacesThemLessTheMsixPages) {
  auto mapper = std::make_shared<RecordingBarMapper>();
  auto dev = open({}, 0, mapper);
  // BAR 0 less its table and PBA pages, and all of BAR 2.
  EXPECT_EQ(dev->mmapped_ranges(), 2u);
  EXPECT_EQ(dev->ranges_in_guest(), 0u);
  auto bridge = HostBridge::create({{0xb0000000, 1 << 20}, {0xc0000000, 1 << 20}, {0, 0}, {0, 0}});
  const uint8_t number = bridge->add(dev);
  const uint32_t bdf = uint32_t{number} << 3;
  auto write = [&](uint32_t offset, uint32_t value, size_t size) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &value, 4);
    bridge->config_write(bdf, offset, std::span<const uint8_t>(b.data(), size));
  };
  write(kCommand, kCommandMemory, 2);
  EXPECT_EQ(dev->ranges_in_guest(), 2u);
  const auto m = dev->mappings();
  ASSERT_TRUE(m[0] && m[2]);
  std::vector<uint64_t> where;
  for (const auto& [handle, slot] : mapper->slots) where.push_back(slot.gpa);
  std::sort(where.begin(), where.end());
  EXPECT_EQ(where, (std::vector<uint64_t>{std::min(m[0]->address, m[2]->address),
                                          std::max(m[0]->address, m[2]->address)}));
  for (const auto& [handle, slot] : mapper->slots) {
    EXPECT_EQ(slot.size, slot.gpa == m[0]->address ? 0x2000u : 0x1000u);
  }
  // Moved: out of the old place, into the new one.
  write(kBar0 + 8, 0xc00f0000, 4);
  EXPECT_EQ(dev->ranges_in_guest(), 2u);
  bool moved = false;
  for (const auto& [handle, slot] : mapper->slots) moved |= slot.gpa == 0xc00f0000;
  EXPECT_TRUE(moved);
  // A slot KVM will not delete stays where it is, and the BAR's pages are not given a second
  // one (which would leak the first, its handle forgotten).
  mapper->refuse_unmap = true;
  write(kBar0 + 8, 0xc00e0000, 4);
  EXPECT_EQ(mapper->slots.size(), 2u);
  mapper->refuse_unmap = false;
  // Decoding off: out of the guest before the device hears of it.
  write(kCommand, 0, 2);
  EXPECT_EQ(dev->ranges_in_guest(), 0u);
  EXPECT_TRUE(mapper->slots.empty());
  // A mapper that refuses leaves the pages trapping.
  mapper->refuse = true;
  write(kCommand, kCommandMemory, 2);
  EXPECT_EQ(dev->ranges_in_guest(), 0u);
  // bar_moved for a BAR that has no pages, or to I/O space, or nowhere: nothing.
  mapper->refuse = false;
  dev->bar_moved(3, std::nullopt, BarMapping{3, BarKind::mem32, 0xd0000000, 0x1000});
  dev->bar_moved(7, std::nullopt, BarMapping{7, BarKind::mem32, 0xd0000000, 0x1000});
  dev->bar_moved(2, std::nullopt, BarMapping{2, BarKind::io, 0x1000, 0x1000});
  EXPECT_EQ(dev->ranges_in_guest(), 0u);
  dev.reset();
  bridge.reset();
  EXPECT_TRUE(fake->maps.empty());  // every mmap undone at close
}

TEST_F(VfioDeviceTest, SparseMmapAreasAndRefusedMmaps) {
  FakeVfioShape sparse;
  sparse.sparse = {{0x1000, 0x1000}};  // BAR 0 page 1 only; BAR 2 lists it too (page 1: none)
  auto mapper = std::make_shared<RecordingBarMapper>();
  auto dev = open(sparse, 0, mapper);
  EXPECT_EQ(dev->mmapped_ranges(), 1u);
  FakeVfioShape none;
  none.mmappable = false;
  EXPECT_EQ(open(none, 0, mapper)->mmapped_ranges(), 0u);
}

TEST_F(VfioDeviceTest, MmapsStayInsideTheBarsSizedAtOpen) {
  auto mapper = std::make_shared<RecordingBarMapper>();
  auto mapped_bytes = [&](const FakeVfioShape& shape) {
    auto dev = open(shape, 0, mapper);
    size_t total = 0;
    for (const auto& [host, size] : fake->maps) total += size;
    return std::pair{dev->mmapped_ranges(), total};
  };
  const auto expected = mapped_bytes(FakeVfioShape{});
  FakeVfioShape grown;
  grown.second_answer_growth = 1 << 20;  // the second query says every BAR is 1 MiB larger
  EXPECT_EQ(mapped_bytes(grown), expected);
}

TEST_F(VfioDeviceTest, HostileRegionCapabilityChainsAreBounded) {
  auto mapper = std::make_shared<RecordingBarMapper>();
  // A chain that points at itself, a header past the end, an area count far beyond the bytes.
  std::vector<std::vector<uint8_t>> chains;
  vfio_region_info_cap_sparse_mmap loop_cap{};
  loop_cap.header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
  loop_cap.header.next = sizeof(vfio_region_info);
  loop_cap.nr_areas = 0xffffffff;
  std::vector<uint8_t> bytes(sizeof loop_cap);
  std::memcpy(bytes.data(), &loop_cap, sizeof loop_cap);
  chains.push_back(bytes);
  chains.push_back({1, 0, 1, 0, 0xff, 0xff, 0, 0});
  chains.push_back({0xff});
  for (uint32_t cap_offset : {uint32_t{sizeof(vfio_region_info)}, 0u, 3u, 0xfffffffcu}) {
    for (const auto& chain : chains) {
      FakeVfioShape s;
      s.raw_caps = chain;
      s.raw_cap_offset = cap_offset;
      auto dev = open(s, 0, mapper);
      EXPECT_LE(dev->mmapped_ranges(), 2u);
    }
  }
}

TEST_F(VfioDeviceTest, CloseTurnsInterruptsOffAndResets) {
  auto dev = open();
  ASSERT_TRUE(dev->set_intx(100, 101));
  dev->start(loop);
  set_config(*dev, capability(*dev, kCapMsix) + 2, 0x8000, 2);
  EXPECT_EQ(fake->kinds_on(), 1u);
  dev.reset();
  EXPECT_EQ(fake->kinds_on(), 0u);
  EXPECT_EQ(fake->resets, 2);
}

// The real device file on a plain file: reads, writes and mmaps reach their offsets, and the
// VFIO ioctls fail (ENOTTY), which open() reports as no PCI device.
TEST(VfioDeviceFd, ReadsWritesAndMapsAtOffsetsAndRefusesIoctlsOnAPlainFile) {
  char path[] = "/tmp/libvmm-vfio-fd-XXXXXX";
  const int raw = ::mkstemp(path);
  ASSERT_GE(raw, 0);
  ::unlink(path);
  ASSERT_EQ(::ftruncate(raw, 0x3000), 0);
  auto file = std::make_unique<VfioDeviceFd>(UniqueFd(raw));
  const std::array<uint8_t, 4> out{1, 2, 3, 4};
  EXPECT_EQ(file->write(0x1ffe, out), 4);
  std::array<uint8_t, 4> in{};
  EXPECT_EQ(file->read(0x1ffe, in), 4);
  EXPECT_EQ(in, out);
  void* page = file->map(0x1000, 0x1000);
  ASSERT_NE(page, nullptr);
  EXPECT_EQ(static_cast<uint8_t*>(page)[0xffe], 1);
  file->unmap(page, 0x1000);
  vfio_device_info info{};
  info.argsz = sizeof info;
  errno = 0;
  EXPECT_FALSE(file->device_info(info));
  EXPECT_EQ(errno, ENOTTY);
  std::vector<uint8_t> reply;
  EXPECT_FALSE(file->region_info_with_caps(VFIO_PCI_BAR0_REGION_INDEX, reply));
  EXPECT_FALSE(file->set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, {}));
  EXPECT_FALSE(file->reset());
  try {
    VfioPciDevice::open(std::move(file), "0000:01:00.0", "--vfio 0000:01:00.0",
                        [](uint16_t) { return std::make_shared<RecordingMsiSink>(); });
    FAIL() << "opened a plain file";
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(), "--vfio 0000:01:00.0: VFIO does not describe it as a PCI device");
  }
}

}  // namespace pci_vfio_device_test
}  // namespace libvmm::pci
