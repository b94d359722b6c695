// The CPUID table a vCPU is given: KVM's supported set with the VMM's facts filled in.
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

#include "libvmm/arch/x86_64/cpuid.hpp"

using namespace libvmm::x86;

namespace x86_64_cpuid_test {

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index = 0) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  return e;
}

const kvm_cpuid_entry2& find(const std::vector<kvm_cpuid_entry2>& table, uint32_t function,
                             uint32_t index = 0) {
  for (const auto& e : table) {
    if (e.function == function && e.index == index) return e;
  }
  throw std::out_of_range("no such leaf");
}

std::vector<kvm_cpuid_entry2> supported() {
  auto features = leaf(0x1);
  features.ebx = 0xaabb0800;  // family/brand bits below bit 16 are KVM's and stay
  features.ecx = 0x00000201;
  auto topology = leaf(0xB, 1);
  return {leaf(0x0), features, topology, leaf(0x1F), leaf(0x40000000)};
}

TEST(X86CpuidTest, FillsInTheApicIdAndCountAndTheHypervisorBit) {
  const auto table = guest_cpuid(supported(), {3, 4, false});
  const auto& features = find(table, 0x1);
  EXPECT_EQ(features.ebx >> 24, 3u);
  EXPECT_EQ((features.ebx >> 16) & 0xff, 4u);
  EXPECT_EQ(features.ebx & 0xffff, 0x0800u);
  EXPECT_NE(features.ecx & (1u << 31), 0u);
  EXPECT_EQ(find(table, 0xB, 1).edx, 3u);
  EXPECT_EQ(find(table, 0x1F).edx, 3u);
  EXPECT_EQ(table.size(), supported().size());
}

TEST(X86CpuidTest, OffersTheTscDeadlineTimerOnlyWhenKvmEmulatesIt) {
  constexpr uint32_t kTscDeadline = 1u << 24;
  EXPECT_EQ(find(guest_cpuid(supported(), {0, 1, false}), 0x1).ecx & kTscDeadline, 0u);
  const auto table = guest_cpuid(supported(), {0, 1, true});
  const auto& features = find(table, 0x1);
  EXPECT_NE(features.ecx & kTscDeadline, 0u);
  EXPECT_EQ(features.ecx & 0x201u, 0x201u);  // what KVM listed stays
}

}  // namespace x86_64_cpuid_test
