// The MultiProcessor Specification table.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/mptable.hpp"
#include "libvmm/core/error.hpp"

using namespace libvmm;
using namespace libvmm::x86;

namespace x86_64_mptable_test {

template <typename T>
T read_at(const std::vector<uint8_t>& bytes, size_t offset) {
  T value;
  EXPECT_LE(offset + sizeof(T), bytes.size());
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

uint8_t byte_sum(const std::vector<uint8_t>& bytes, size_t offset, size_t len) {
  return static_cast<uint8_t>(
      std::accumulate(bytes.begin() + offset, bytes.begin() + offset + len, 0u));
}

class MpTableTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(MpTableTest, DescribesCpusIoapicAndInterrupts) {
  const uint32_t n = GetParam();
  const auto table = build_mptable(n, kMpTableAddr);
  EXPECT_LE(table.size(), kMpTableAreaSize);

  const auto fp = read_at<mp::FloatingPointer>(table, 0);
  EXPECT_EQ(std::string(fp.signature, 4), "_MP_");
  EXPECT_EQ(fp.config_table, kMpTableAddr + 16);
  EXPECT_EQ(fp.length, 1);
  EXPECT_EQ(fp.spec_rev, 4);
  EXPECT_EQ(byte_sum(table, 0, 16), 0);

  const auto hdr = read_at<mp::ConfigHeader>(table, 16);
  EXPECT_EQ(std::string(hdr.signature, 4), "PCMP");
  EXPECT_EQ(hdr.base_table_length, table.size() - 16);
  EXPECT_EQ(hdr.spec_rev, 4);
  EXPECT_EQ(hdr.local_apic_address, kLapicAddr);
  EXPECT_EQ(hdr.entry_count, n + 1 + 1 + 24 + 2);
  EXPECT_EQ(byte_sum(table, 16, hdr.base_table_length), 0);

  size_t at = 16 + sizeof(mp::ConfigHeader);
  for (uint32_t cpu = 0; cpu < n; ++cpu, at += sizeof(mp::Processor)) {
    const auto p = read_at<mp::Processor>(table, at);
    EXPECT_EQ(p.type, mp::kProcessor);
    EXPECT_EQ(p.local_apic_id, cpu);
    EXPECT_EQ(p.flags, cpu == 0 ? mp::kCpuEnabled | mp::kCpuBootProcessor : mp::kCpuEnabled);
  }
  const auto bus = read_at<mp::Bus>(table, at);
  at += sizeof(bus);
  EXPECT_EQ(bus.type, mp::kBus);
  EXPECT_EQ(std::string(bus.bus_type, 6), "ISA   ");

  const auto ioapic = read_at<mp::Ioapic>(table, at);
  at += sizeof(ioapic);
  EXPECT_EQ(ioapic.type, mp::kIoapic);
  EXPECT_EQ(ioapic.id, n);
  EXPECT_EQ(ioapic.version, 0x11);
  EXPECT_EQ(ioapic.flags, mp::kIoapicEnabled);
  EXPECT_EQ(ioapic.address, kIoapicAddr);

  for (uint8_t pin = 0; pin < 24; ++pin, at += sizeof(mp::Interrupt)) {
    const auto irq = read_at<mp::Interrupt>(table, at);
    EXPECT_EQ(irq.type, mp::kIoInterrupt);
    EXPECT_EQ(irq.interrupt_type, mp::kInt);
    EXPECT_EQ(irq.flags, 0);
    EXPECT_EQ(irq.source_bus, bus.bus_id);
    EXPECT_EQ(irq.source_irq, pin);
    EXPECT_EQ(irq.dest_apic, n);
    EXPECT_EQ(irq.dest_pin, pin);
  }
  const auto lint0 = read_at<mp::Interrupt>(table, at);
  const auto lint1 = read_at<mp::Interrupt>(table, at + 8);
  EXPECT_EQ(lint0.type, mp::kLocalInterrupt);
  EXPECT_EQ(lint0.interrupt_type, mp::kExtInt);
  EXPECT_EQ(lint0.dest_apic, 0xFF);
  EXPECT_EQ(lint0.dest_pin, 0);
  EXPECT_EQ(lint1.type, mp::kLocalInterrupt);
  EXPECT_EQ(lint1.interrupt_type, mp::kNmi);
  EXPECT_EQ(lint1.dest_apic, 0xFF);
  EXPECT_EQ(lint1.dest_pin, 1);
  EXPECT_EQ(at + 16, table.size());
}

INSTANTIATE_TEST_SUITE_P(Cpus, MpTableTest, ::testing::Values(1u, 2u, 4u, 32u));

// PCI INTx lines for guests without ACPI: PCI bus 0 (Linux matches entries by PCI bus number),
// ISA moves to bus 1, one level/active-low entry per route, and the pins those routes use lose
// their ISA entry (a pin has one trigger mode).
TEST(MpTable, DescribesPciIntxRoutes) {
  const std::vector<PciIntxRoute> routes{{1, 0, 16}, {2, 0, 17}, {3, 1, 16}};
  size_t left_out = 99;
  const auto table = build_mptable(2, kMpTableAddr, routes, &left_out);
  EXPECT_EQ(left_out, 0u);
  const auto hdr = read_at<mp::ConfigHeader>(table, 16);
  EXPECT_EQ(byte_sum(table, 16, hdr.base_table_length), 0);
  EXPECT_EQ(hdr.entry_count, 2 + 2 + 1 + (24 - 2) + 2 + 3);
  size_t at = 16 + sizeof(mp::ConfigHeader) + 2 * sizeof(mp::Processor);
  const auto pci = read_at<mp::Bus>(table, at);
  const auto isa = read_at<mp::Bus>(table, at + 8);
  EXPECT_EQ(std::string(pci.bus_type, 6), "PCI   ");
  EXPECT_EQ(pci.bus_id, 0);
  EXPECT_EQ(std::string(isa.bus_type, 6), "ISA   ");
  EXPECT_EQ(isa.bus_id, 1);
  at += 16 + sizeof(mp::Ioapic);
  std::vector<mp::Interrupt> io;
  for (; at + 8 <= table.size(); at += 8) {
    const auto e = read_at<mp::Interrupt>(table, at);
    if (e.type == mp::kIoInterrupt) io.push_back(e);
  }
  ASSERT_EQ(io.size(), 22u + 3u);
  for (const auto& e : io) {
    if (e.source_bus == 1) {
      EXPECT_NE(e.dest_pin, 16);
      EXPECT_NE(e.dest_pin, 17);
    }
  }
  const mp::Interrupt& last = io.back();  // device 3, INTB
  EXPECT_EQ(last.source_bus, 0);
  EXPECT_EQ(last.source_irq, 3 << 2 | 1);
  EXPECT_EQ(last.dest_pin, 16);
  EXPECT_EQ(last.flags, 0);  // conforms to PCI: level, active low
  EXPECT_EQ(io[io.size() - 3].source_irq, 1 << 2);
  EXPECT_EQ(io[io.size() - 3].dest_pin, 16);
}

TEST(MpTable, LeavesOutPciRoutesThatDoNotFitTheKib) {
  std::vector<PciIntxRoute> routes;
  for (uint8_t device = 1; device < 32; ++device) {
    routes.push_back({device, 0, static_cast<uint32_t>(16 + device % 8)});
  }
  size_t left_out = 0;
  const auto table = build_mptable(32, kMpTableAddr, routes, &left_out);
  EXPECT_LE(table.size(), kMpTableAreaSize);
  EXPECT_GT(left_out, 0u);
  EXPECT_LT(left_out, routes.size());
  size_t fits = 0;
  EXPECT_EQ(build_mptable(4, kMpTableAddr, routes, &fits).size() <= kMpTableAreaSize, true);
  EXPECT_EQ(fits, 0u);
  EXPECT_THROW(build_mptable(1, kMpTableAddr, {{1, 0, 24}}), std::invalid_argument);
}

TEST(MpTable, RejectsUnsupportedVcpuCounts) {
  for (uint32_t n : {0u, 33u}) {
    try {
      build_mptable(n, kMpTableAddr);
      FAIL() << n;
    } catch (const UserError& e) {
      EXPECT_THAT(e.what(), ::testing::StartsWith("--vcpus: "));
    }
  }
}

TEST(MpTable, IsWrittenIntoTheEbda) {
  GuestMemory memory;
  memory.map(0, MemoryRegion::create("ram", 1 * MiB), 0, 1 * MiB);
  write_mptable(memory, 2);
  const auto expected = build_mptable(2, kMpTableAddr);
  std::vector<uint8_t> got(expected.size());
  ASSERT_TRUE(memory.read(kMpTableAddr, got.data(), got.size()));
  EXPECT_EQ(got, expected);
}

}  // namespace x86_64_mptable_test
