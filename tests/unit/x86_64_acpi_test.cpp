#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <stdexcept>

#include "../../src/arch/board.hpp"
#include "libvmm/arch/x86_64/acpi.hpp"
#include "libvmm/core/guest_memory.hpp"

using namespace libvmm::x86;

namespace x86_64_acpi_test {

uint8_t sum(const std::vector<uint8_t>& t, size_t off, size_t len) {
  return std::accumulate(t.begin() + static_cast<long>(off),
                         t.begin() + static_cast<long>(off + len), uint8_t{0},
                         [](uint8_t a, uint8_t b) { return static_cast<uint8_t>(a + b); });
}
template <typename T>
T at(const std::vector<uint8_t>& t, size_t off) {
  T v;
  std::memcpy(&v, t.data() + off, sizeof v);
  return v;
}

TEST(Acpi, TablesChainAndChecksum) {
  const uint64_t base = kAcpiTablesAddr;
  const auto t = build_acpi_tables(base, 4);
  ASSERT_LE(t.size(), kAcpiTablesAreaSize);
  ASSERT_EQ(std::memcmp(t.data(), "RSD PTR ", 8), 0);
  EXPECT_EQ(sum(t, 0, 20), 0);  // ACPI 1.0 checksum
  EXPECT_EQ(sum(t, 0, 36), 0);  // extended checksum
  const auto xsdt = at<uint64_t>(t, 24) - base;
  ASSERT_EQ(std::memcmp(t.data() + xsdt, "XSDT", 4), 0);
  EXPECT_EQ(sum(t, xsdt, at<uint32_t>(t, xsdt + 4)), 0);
  const auto fadt = at<uint64_t>(t, xsdt + 36) - base;
  ASSERT_EQ(std::memcmp(t.data() + fadt, "FACP", 4), 0);
  EXPECT_EQ(at<uint32_t>(t, fadt + 4), 276u);
  EXPECT_EQ(sum(t, fadt, 276), 0);
  EXPECT_EQ(at<uint32_t>(t, fadt + 64), kAcpiPmBasePort + 4u);  // PM1a_CNT_BLK
  const auto dsdt = at<uint64_t>(t, fadt + 140) - base;         // X_DSDT
  EXPECT_EQ(at<uint32_t>(t, fadt + 40), base + dsdt);           // DSDT (32-bit) agrees
  ASSERT_EQ(std::memcmp(t.data() + dsdt, "DSDT", 4), 0);
  EXPECT_EQ(sum(t, dsdt, at<uint32_t>(t, dsdt + 4)), 0);
  EXPECT_EQ(std::memcmp(t.data() + dsdt + 36, "\x08_S5_", 5), 0);
  const auto facs = at<uint32_t>(t, fadt + 36) - base;
  EXPECT_EQ(facs % 64, 0u);
  ASSERT_EQ(std::memcmp(t.data() + facs, "FACS", 4), 0);

  const auto madt = at<uint64_t>(t, xsdt + 44) - base;
  ASSERT_EQ(std::memcmp(t.data() + madt, "APIC", 4), 0);
  const auto madt_len = at<uint32_t>(t, madt + 4);
  EXPECT_EQ(sum(t, madt, madt_len), 0);
  EXPECT_EQ(at<uint32_t>(t, madt + 36), 0xFEE00000u);
  // Entries: 4 local APICs with IDs 0..3, then the IOAPIC and the NMI entry.
  size_t at_entry = madt + 44, cpus = 0, ioapics = 0, overrides = 0;
  while (at_entry < madt + madt_len) {
    const uint8_t type = t[at_entry], len = t[at_entry + 1];
    ASSERT_GT(len, 0);
    if (type == 0) {
      EXPECT_EQ(t[at_entry + 3], cpus++);
    }
    if (type == 1) ++ioapics;
    if (type == 2) {  // the SCI's override: ISA IRQ 9 = GSI 9, level, active-high
      ++overrides;
      EXPECT_EQ(t[at_entry + 3], 9);
      EXPECT_EQ(at<uint32_t>(t, at_entry + 4), 9u);
      EXPECT_EQ(at<uint16_t>(t, at_entry + 8), 0x0Du);
    }
    at_entry += len;
  }
  EXPECT_EQ(at_entry, madt + madt_len);
  EXPECT_EQ(cpus, 4u);
  EXPECT_EQ(ioapics, 1u);
  EXPECT_EQ(overrides, 1u);
  EXPECT_EQ(at<uint32_t>(t, fadt + 112) & (1u << 4), 0u);  // PWR_BUTTON clear: fixed feature
  EXPECT_NE(at<uint32_t>(t, fadt + 112) & 1u, 0u);         // WBINVD, as the spec requires
}

// A vCPU count whose MADT length wraps in 32 bits (0x20000000 x 8 = 2^32) is refused, not
// written past the table's buffer.
TEST(Acpi, AVcpuCountTooLargeForTheMadtIsRefused) {
  EXPECT_THROW(build_acpi_tables(0xe0000, 0x20000000), std::length_error);
  EXPECT_THROW(build_acpi_tables(0xe0000, 0), std::length_error);
  EXPECT_NO_THROW(build_acpi_tables(0xe0000, 32));
}

TEST(Acpi, McfgDescribesTheEcamOnlyWhenGiven) {
  const uint64_t base = kAcpiTablesAddr;
  const auto without = build_acpi_tables(base, 1);
  const auto xsdt0 = at<uint64_t>(without, 24) - base;
  EXPECT_EQ(at<uint32_t>(without, xsdt0 + 4), 36u + 2 * 8);  // FADT and MADT only

  const auto t = build_acpi_tables(base, 1, {}, McfgEntry{0xE0000000, 0, 0});
  const auto xsdt = at<uint64_t>(t, 24) - base;
  ASSERT_EQ(at<uint32_t>(t, xsdt + 4), 36u + 3 * 8);
  EXPECT_EQ(sum(t, xsdt, 36 + 3 * 8), 0);
  const auto mcfg = at<uint64_t>(t, xsdt + 52) - base;
  ASSERT_EQ(std::memcmp(t.data() + mcfg, "MCFG", 4), 0);
  ASSERT_EQ(at<uint32_t>(t, mcfg + 4), 60u);  // header, 8 reserved bytes, one allocation
  EXPECT_EQ(sum(t, mcfg, 60), 0);
  EXPECT_EQ(at<uint64_t>(t, mcfg + 44), 0xE0000000u);  // base address
  EXPECT_EQ(at<uint16_t>(t, mcfg + 52), 0u);           // segment
  EXPECT_EQ(t[mcfg + 54], 0);                          // start bus
  EXPECT_EQ(t[mcfg + 55], 0);                          // end bus
  // It does not overlap the tables around it.
  const auto fadt = at<uint64_t>(t, xsdt + 36) - base;
  const auto facs = at<uint32_t>(t, fadt + 36) - base;
  EXPECT_TRUE(mcfg >= facs + 64 || mcfg + 60 <= facs);
  EXPECT_LE(mcfg + 60, fadt);
  ASSERT_EQ(std::memcmp(t.data() + facs, "FACS", 4), 0);
}

TEST(Acpi, PciNodesRefuseLayoutsTheyCannotDescribe) {
  libvmm::pci::HostBridgeLayout layout{
      {0xE0000000, 0x100000}, {0xC0000000, 0x10000000}, {}, {0xC000, 0x4000}};
  EXPECT_EQ(pci_host_bridge_nodes(layout, {}).size(), 2u);
  EXPECT_THROW(pci_host_bridge_nodes(layout, {{32, 0, 16}}), std::invalid_argument);
  EXPECT_THROW(pci_host_bridge_nodes(layout, {{1, 4, 16}}), std::invalid_argument);
  auto high = layout;
  high.mmio32 = {0xFFFF0000, 0x20000};  // crosses 4 GiB
  EXPECT_THROW(pci_host_bridge_nodes(high, {}), std::invalid_argument);
  auto io = layout;
  io.io = {0xF000, 0x2000};  // past port 0xFFFF
  EXPECT_THROW(pci_host_bridge_nodes(io, {}), std::invalid_argument);
}

// The PCI host bridge's windows (what the DSDT's PCI0 and the MCFG describe) overlap none of
// the machine's own windows nor RAM of any size, and are what pci_windows() reserves.
TEST(Acpi, PciWindowsAvoidTheMachinesDevicesAndRam) {
  const libvmm::Board* board = libvmm::find_board("x86_64");
  ASSERT_NE(board, nullptr);
  const std::vector<libvmm::DeviceWindow> pci = board->pci_windows();
  ASSERT_EQ(pci.size(), 3u);  // ECAM, the 32-bit and the 64-bit BAR windows
  const auto overlap = [](uint64_t a, uint64_t as, uint64_t b, uint64_t bs) {
    return a < b + bs && b < a + as;
  };
  for (const auto& w : pci) {
    for (const auto& d : board->device_windows()) {
      EXPECT_FALSE(overlap(w.gpa, w.size, d.gpa, d.size)) << w.name << " / " << d.name;
    }
    for (const auto& r : board->ram_layout(255 * libvmm::GiB)) {  // the most RAM there can be
      EXPECT_FALSE(overlap(w.gpa, w.size, r.gpa, r.size)) << w.name;
    }
    EXPECT_FALSE(overlap(w.gpa, w.size, kAcpiTablesAddr, kAcpiTablesAreaSize));
  }
  for (size_t i = 0; i < pci.size(); ++i) {
    for (size_t j = i + 1; j < pci.size(); ++j) {
      EXPECT_FALSE(overlap(pci[i].gpa, pci[i].size, pci[j].gpa, pci[j].size));
    }
  }
  const auto layout = board->pci_layout();
  ASSERT_TRUE(layout);
  EXPECT_EQ(pci[0].gpa, layout->ecam.base);
  EXPECT_EQ(pci[1].gpa, layout->mmio32.base);
  EXPECT_EQ(pci[2].gpa, layout->mmio64.base);
  EXPECT_GE(layout->mmio64.base, 4 * libvmm::GiB);
  EXPECT_LE(layout->mmio64.base + layout->mmio64.size, 1ull << 39);  // 39 physical address bits
  EXPECT_NO_THROW(pci_host_bridge_nodes(*layout, {}));
}

TEST(AcpiPmDevice, PowersOffOnS5WithSleepEnable) {
  int power_offs = 0;
  AcpiPmDevice pm([&] { ++power_offs; });
  uint8_t cnt[2];
  pm.read(4, cnt);
  EXPECT_EQ(cnt[0] & 1, 1);  // SCI_EN: always in ACPI mode

  const uint16_t s5_without_enable = 5 << 10;
  pm.write(4, {reinterpret_cast<const uint8_t*>(&s5_without_enable), 2});
  EXPECT_EQ(power_offs, 0);
  const uint16_t s3 = (3 << 10) | (1 << 13);
  pm.write(4, {reinterpret_cast<const uint8_t*>(&s3), 2});
  EXPECT_EQ(power_offs, 0);
  const uint16_t s5 = (5 << 10) | (1 << 13);
  pm.write(4, {reinterpret_cast<const uint8_t*>(&s5), 2});
  EXPECT_EQ(power_offs, 1);
}

class FakeIrq : public libvmm::IrqLine {
 public:
  uint32_t number() const override { return 9; }
  void set_level(bool asserted) override {
    level = asserted;
    ++changes;
  }
  void pulse() override { ++pulses; }
  bool level = false;
  int changes = 0, pulses = 0;
};

TEST(AcpiPmDevice, PowerButtonSetsStatusAndRaisesTheSciWhenEnabled) {
  auto sci = std::make_shared<FakeIrq>();
  AcpiPmDevice pm([] {}, sci);
  EXPECT_FALSE(pm.press_power_button());  // not enabled: no driver listens, nothing changes
  uint8_t sts[2];
  pm.read(0, sts);
  EXPECT_EQ(sts[1], 0x00);
  EXPECT_FALSE(sci->level);
  const uint8_t enable[2] = {0x00, 0x01};  // PWRBTN_EN
  pm.write(2, enable);
  EXPECT_FALSE(sci->level);
  EXPECT_TRUE(pm.press_power_button());
  pm.read(0, sts);
  EXPECT_EQ(sts[1], 0x01);  // PWRBTN_STS (bit 8)
  EXPECT_TRUE(sci->level);
  const uint8_t other_bits[2] = {0xFF, 0x00};
  pm.write(0, other_bits);  // clearing other bits leaves it
  EXPECT_TRUE(sci->level);
  const uint8_t clear[2] = {0x00, 0x01};
  pm.write(0, clear);  // write-1-to-clear
  EXPECT_FALSE(sci->level);
  pm.read(0, sts);
  EXPECT_EQ(sts[1], 0x00);
  EXPECT_TRUE(pm.press_power_button());
  EXPECT_TRUE(sci->level);
  EXPECT_TRUE(pm.press_power_button());  // again while pending: no extra edge
  EXPECT_EQ(sci->changes, 3);
  const uint8_t disable[2] = {0x00, 0x00};
  pm.write(2, disable);  // the status stays, the SCI drops
  EXPECT_FALSE(sci->level);
  pm.read(0, sts);
  EXPECT_EQ(sts[1], 0x01);
  EXPECT_EQ(sci->pulses, 0);
}

TEST(AcpiPmDevice, StatusReadsZeroAndOddAccessesAreHarmless) {
  AcpiPmDevice pm([] {});
  uint8_t b[4] = {0xff, 0xff, 0xff, 0xff};
  pm.read(0, b);
  EXPECT_EQ(b[0], 0);
  EXPECT_EQ(b[1], 0);
  const uint8_t junk[4] = {0xff, 0xff, 0xff, 0xff};
  pm.write(5, junk);  // runs past the block: the extra bytes are ignored
  uint8_t past[2];
  pm.read(6, past);
  EXPECT_EQ(past[0], 0xFF);
}

}  // namespace x86_64_acpi_test
