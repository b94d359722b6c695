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

namespace {

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

}  // namespace
