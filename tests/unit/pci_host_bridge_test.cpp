#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/pci/host_bridge.hpp"

namespace libvmm::pci {
namespace pci_host_bridge_test {

// A function with a 4 KiB memory BAR 0 of scratch registers and a 32-byte I/O BAR 2.
class ScratchFunction final : public PciFunction {
 public:
  ScratchFunction() : PciFunction(Identity{0x1af4, 0x1044, 0, 0xff0000, 0, 0}) {
    config_.add_bar(0, {BarKind::mem32, 0x1000, false});
    config_.add_bar(2, {BarKind::io, 0x20, false});
  }
  std::string name() const override { return "scratch"; }
  void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override {
    uint8_t* r = bar == 0 ? mem.data() : io.data();
    std::memcpy(data.data(), r + offset, data.size());
  }
  void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) override {
    uint8_t* r = bar == 0 ? mem.data() : io.data();
    std::memcpy(r + offset, data.data(), data.size());
  }
  void bar_moved(unsigned bar, std::optional<BarMapping> old,
                 std::optional<BarMapping> now) override {
    moves.push_back({bar, old, now});
  }
  struct Move {
    unsigned bar;
    std::optional<BarMapping> old, now;
  };
  std::array<uint8_t, 0x1000> mem{};
  std::array<uint8_t, 0x20> io{};
  std::vector<Move> moves;
};

HostBridgeLayout layout() {
  return {{0xb0000000, 1 << 20}, {0xc0000000, 0x100000}, {}, {0xc000, 0x1000}};
}

uint32_t ecam_read32(BusDevice& ecam, uint32_t device, uint32_t reg) {
  std::array<uint8_t, 4> b{};
  ecam.read((device << 15) | reg, b);
  uint32_t v;
  std::memcpy(&v, b.data(), 4);
  return v;
}
void ecam_write32(BusDevice& ecam, uint32_t device, uint32_t reg, uint32_t value) {
  std::array<uint8_t, 4> b{};
  std::memcpy(b.data(), &value, 4);
  ecam.write((device << 15) | reg, b);
}

TEST(PciHostBridge, BridgeAtZeroAndEmptySlots) {
  auto bridge = HostBridge::create(layout());
  auto ecam = bridge->ecam();
  EXPECT_EQ(ecam_read32(*ecam, 0, 0), 0x00081b36u);
  EXPECT_EQ(ecam_read32(*ecam, 0, 8) >> 8, 0x060000u);  // host bridge class
  EXPECT_EQ(ecam_read32(*ecam, 5, 0), 0xffffffffu);     // nothing there
  ecam_write32(*ecam, 5, 4, 0x7);                       // ignored
  // Other functions and buses are empty.
  std::array<uint8_t, 4> b{};
  ecam->read((1u << 20) | 0, b);  // bus 1
  EXPECT_EQ(b, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
}

TEST(PciHostBridge, PlacesBarsAndRoutesAccesses) {
  auto bridge = HostBridge::create(layout());
  auto f = std::make_shared<ScratchFunction>();
  const uint8_t dev = bridge->add(f);
  EXPECT_EQ(dev, 1);
  auto ecam = bridge->ecam();
  EXPECT_EQ(ecam_read32(*ecam, dev, 0), 0x10441af4u);
  EXPECT_EQ(ecam_read32(*ecam, dev, 0x10), 0xc0000000u);
  EXPECT_EQ(ecam_read32(*ecam, dev, 0x18), 0xc001u);
  // No decoding until the command register says so.
  auto mmio = bridge->window(BarKind::mem32);
  std::array<uint8_t, 4> b{1, 2, 3, 4};
  mmio->write(0x10, b);
  EXPECT_EQ(f->mem[0x10], 0);
  ecam_write32(*ecam, dev, 4, kCommandMemory | kCommandIo);
  ASSERT_EQ(f->moves.size(), 2u);
  EXPECT_FALSE(f->moves[0].old);
  EXPECT_EQ(f->moves[0].now->address, 0xc0000000u);
  mmio->write(0x10, b);
  EXPECT_EQ(f->mem[0x10], 1);
  auto io = bridge->window(BarKind::io);
  io->write(0x4, b);
  EXPECT_EQ(f->io[4], 1);
  // Outside any BAR: all-ones.
  std::array<uint8_t, 4> r{};
  mmio->read(0x2000, r);
  EXPECT_EQ(r, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  // Straddling the BAR's end: refused.
  mmio->read(0xffe, r);
  EXPECT_EQ(r[0], 0xff);
}

TEST(PciHostBridge, GuestMovesABar) {
  auto bridge = HostBridge::create(layout());
  auto f = std::make_shared<ScratchFunction>();
  const uint8_t dev = bridge->add(f);
  auto ecam = bridge->ecam();
  ecam_write32(*ecam, dev, 4, kCommandMemory);
  f->moves.clear();
  // Sizing: the BAR leaves the window while all-ones are in it (Linux disables decoding first,
  // but a guest need not).
  ecam_write32(*ecam, dev, 0x10, 0xffffffff);
  EXPECT_EQ(ecam_read32(*ecam, dev, 0x10), 0xfffff000u);
  ASSERT_EQ(f->moves.size(), 1u);
  EXPECT_FALSE(f->moves[0].now);
  ecam_write32(*ecam, dev, 0x10, 0xc0042000);
  ASSERT_EQ(f->moves.size(), 2u);
  EXPECT_EQ(f->moves[1].now->address, 0xc0042000u);
  auto mmio = bridge->window(BarKind::mem32);
  std::array<uint8_t, 1> b{9};
  mmio->write(0x42008, b);
  EXPECT_EQ(f->mem[8], 9);
  mmio->write(0x8, b);  // the old place decodes nothing now
  EXPECT_EQ(f->mem[8], 9);
}

// A function with one 64-bit memory BAR (0 and 1) of 8 KiB.
class Bar64Function final : public PciFunction {
 public:
  Bar64Function() : PciFunction(Identity{0x1b36, 0x0010, 0, 0x010802, 0, 0}) {
    config_.add_bar(0, {BarKind::mem64, 0x2000, false});
  }
  std::string name() const override { return "bar64"; }
  void bar_read(unsigned, uint64_t offset, std::span<uint8_t> data) override {
    std::memcpy(data.data(), mem.data() + offset, data.size());
  }
  void bar_write(unsigned, uint64_t offset, std::span<const uint8_t> data) override {
    std::memcpy(mem.data() + offset, data.data(), data.size());
  }
  std::array<uint8_t, 0x2000> mem{};
};

TEST(PciHostBridge, SixtyFourBitBarsGoInTheSixtyFourBitWindow) {
  HostBridgeLayout with64 = layout();
  with64.mmio64 = {0x40'0000'0000, 0x40'0000'0000};
  auto bridge = HostBridge::create(with64);
  const uint8_t dev = bridge->add(std::make_shared<Bar64Function>());
  const uint8_t dev32 = bridge->add(std::make_shared<ScratchFunction>());
  auto ecam = bridge->ecam();
  EXPECT_EQ(ecam_read32(*ecam, dev, 0x10), 0x4u);  // 64-bit, low dword of 0x40'0000'0000
  EXPECT_EQ(ecam_read32(*ecam, dev, 0x14), 0x40u);
  EXPECT_EQ(ecam_read32(*ecam, dev32, 0x10), 0xc0000000u);  // 32-bit BARs stay below 4 GiB
  ecam_write32(*ecam, dev, 4, kCommandMemory);
  auto high = bridge->window(BarKind::mem64);
  std::array<uint8_t, 1> b{7};
  high->write(0x1ff0, b);
  auto f = std::static_pointer_cast<Bar64Function>(bridge->function(dev));
  EXPECT_EQ(f->mem[0x1ff0], 7);
  // The guest moves it 1 MiB up inside the window: it decodes there.
  ecam_write32(*ecam, dev, 0x10, 0x0010'0004);
  high->write(0x10'0008, b);
  EXPECT_EQ(f->mem[8], 7);

  // Without a 64-bit window (size 0), 64-bit BARs go in the 32-bit one.
  auto low_only = HostBridge::create(layout());
  const uint8_t d = low_only->add(std::make_shared<Bar64Function>());
  auto e = low_only->ecam();
  EXPECT_EQ(ecam_read32(*e, d, 0x10), 0xc0000004u);
  EXPECT_EQ(ecam_read32(*e, d, 0x14), 0u);
}

TEST(PciHostBridge, LegacyConfigMechanism) {
  auto bridge = HostBridge::create(layout());
  bridge->add(std::make_shared<ScratchFunction>());
  auto ports = bridge->legacy_config();
  const uint32_t address = 0x80000000u | (1u << 11) | 0x00;
  std::array<uint8_t, 4> a{};
  std::memcpy(a.data(), &address, 4);
  ports->write(0, a);
  std::array<uint8_t, 4> back{};
  ports->read(0, back);
  EXPECT_EQ(back, a);
  std::array<uint8_t, 4> v{};
  ports->read(4, v);
  EXPECT_EQ(v, (std::array<uint8_t, 4>{0xf4, 0x1a, 0x44, 0x10}));
  std::array<uint8_t, 2> hi{};
  ports->read(6, hi);  // CFE: the upper half of the dword
  EXPECT_EQ(hi, (std::array<uint8_t, 2>{0x44, 0x10}));
  // Disabled address: all-ones.
  const uint32_t off = (1u << 11);
  std::memcpy(a.data(), &off, 4);
  ports->write(0, a);
  ports->read(4, v);
  EXPECT_EQ(v, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  // Byte accesses to CONFIG_ADDRESS do not change it (Linux's type-1 probe writes 0xCFB).
  std::array<uint8_t, 1> one{1};
  ports->write(3, one);
  ports->read(0, back);
  EXPECT_EQ(back, a);
}

TEST(PciHostBridge, FullWindowAndFullBus) {
  HostBridgeLayout small = layout();
  small.mmio32.size = 0x1000;
  auto bridge = HostBridge::create(small);
  bridge->add(std::make_shared<ScratchFunction>());
  EXPECT_THROW(bridge->add(std::make_shared<ScratchFunction>()), UserError);
  HostBridgeLayout roomy = layout();
  roomy.mmio32.size = 0x1000000;
  auto bus = HostBridge::create(roomy);
  for (int i = 1; i < 32; ++i) bus->add(std::make_shared<ScratchFunction>());
  EXPECT_THROW(bus->add(std::make_shared<ScratchFunction>()), UserError);
}

}  // namespace pci_host_bridge_test
}  // namespace libvmm::pci
