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
  EXPECT_NE(features.edx & (1u << 28), 0u) << "HTT: more than one logical processor";
  EXPECT_EQ(find(table, 0xB, 1).edx, 3u);
  EXPECT_EQ(find(table, 0x1F).edx, 3u);
  // KVM listed 0x1F's subleaf 0 only: its cores' level is added.
  EXPECT_EQ(find(table, 0x1F, 1).edx, 3u);
  EXPECT_EQ(table.size(), supported().size() + 1);
}

// KVM since Linux 6.3 (and its stable backports) lists only subleaf 0 of 0xB and 0x1F, zeroed.
// A guest shown the thread level alone would make each vCPU a package: the cores' level is
// added, marked as indexed, so that KVM answers it (and "no level" past it).
TEST(X86CpuidTest, AddsTheCoreLevelWhenKvmListsOnlySubleafZero) {
  auto only_b = leaf(0xB, 0);
  only_b.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  auto only_1f = leaf(0x1F, 0);
  only_1f.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  const auto table = guest_cpuid({leaf(0x0), leaf(0x1), only_b, only_1f}, {2, 3, false});
  for (const uint32_t function : {0xBu, 0x1Fu}) {
    const auto& threads = find(table, function, 0);
    EXPECT_EQ(threads.ebx, 1u);
    EXPECT_EQ(threads.ecx, 1u << 8);
    const auto& cores = find(table, function, 1);
    EXPECT_EQ(cores.ecx, (2u << 8) | 1) << "the core level";
    EXPECT_EQ(cores.ebx, 3u) << "3 vCPUs";
    EXPECT_EQ(cores.eax, 2u) << "2 bits of the APIC ID";
    EXPECT_EQ(cores.edx, 2u) << "this vCPU's x2APIC ID";
    EXPECT_EQ(cores.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
  }
  EXPECT_EQ(table.size(), 6u);
}

// KVM passes the host's topology leaves through: an SMT host's (SMT shift 1, 2 threads per
// core) would make vCPUs 0/1, 2/3... hyperthread siblings. The guest sees one package whose
// cores are its vCPUs, one thread each.
TEST(X86CpuidTest, TheTopologyIsTheVcpusAsCoresNotTheHosts) {
  auto smt = leaf(0xB, 0);
  smt.eax = 1;  // the host's SMT shift
  smt.ebx = 2;  // 2 threads per core
  smt.ecx = (1u << 8) | 0;
  auto core = leaf(0xB, 1);
  core.eax = 5;
  core.ebx = 32;
  core.ecx = (2u << 8) | 1;
  auto v2_die = leaf(0x1F, 2);  // a level this guest does not have
  v2_die.eax = 7;
  v2_die.ebx = 64;
  v2_die.ecx = (5u << 8) | 2;
  auto l1 = leaf(0x4, 0);
  l1.eax = (1u << 5) | 1 | (1u << 14) | (15u << 26);  // L1 data, 2 threads, 16 cores
  auto l3 = leaf(0x4, 3);
  l3.eax = (3u << 5) | 3 | (31u << 14) | (15u << 26);
  auto amd = leaf(0x8000001E);
  amd.ebx = 1u << 8;  // 2 threads per core
  auto sizes = leaf(0x80000008);
  sizes.ecx = (6u << 12) | 31;
  auto amd_l2 = leaf(0x8000001D, 2);
  amd_l2.eax = (2u << 5) | 3 | (1u << 14);  // L2, shared by the core's 2 threads
  auto vendor = leaf(0x0);
  vendor.ebx = 0x68747541;  // "Auth" enticAMD
  const auto table = guest_cpuid({vendor, leaf(0x1), smt, core, leaf(0x1F, 0), leaf(0x1F, 1),
                                  v2_die, l1, l3, amd, sizes, amd_l2},
                                 {2, 3, false});
  for (uint32_t function : {0xBu, 0x1Fu}) {
    const auto& threads = find(table, function, 0);
    EXPECT_EQ(threads.eax, 0u) << "no APIC ID bits for threads";
    EXPECT_EQ(threads.ebx, 1u);
    EXPECT_EQ(threads.ecx, (1u << 8) | 0);
    EXPECT_EQ(threads.edx, 2u);
    const auto& cores = find(table, function, 1);
    EXPECT_EQ(cores.eax, 2u) << "3 vCPUs need 2 APIC ID bits";
    EXPECT_EQ(cores.ebx, 3u);
    EXPECT_EQ(cores.ecx, (2u << 8) | 1);
  }
  EXPECT_EQ(find(table, 0x1F, 2).ecx, 2u) << "an invalid level";
  EXPECT_EQ(find(table, 0x1F, 2).ebx, 0u);
  EXPECT_EQ((find(table, 0x4, 0).eax >> 14) & 0xfff, 0u) << "L1: one thread";
  EXPECT_EQ(find(table, 0x4, 0).eax >> 26, 3u) << "4 addressable cores";
  EXPECT_EQ(find(table, 0x4, 0).eax & 0x3fff, (1u << 5) | 1) << "the cache itself stays";
  EXPECT_EQ((find(table, 0x4, 3).eax >> 14) & 0xfff, 3u) << "L3: the package";
  EXPECT_EQ((find(table, 0x8000001E).ebx >> 8) & 0xff, 0u) << "AMD: one thread per core";
  EXPECT_EQ(find(table, 0x8000001E).eax, 2u);
  EXPECT_EQ(find(table, 0x80000008).ecx & 0xff, 2u);
  EXPECT_EQ((find(table, 0x80000008).ecx >> 12) & 0xf, 2u);
  EXPECT_EQ((find(table, 0x8000001D, 2).eax >> 14) & 0xfff, 0u) << "AMD L2: one thread";
  EXPECT_EQ(find(table, 0x8000001D, 2).eax & 0x3fff, (2u << 5) | 3);
  // On Intel, 0x80000008's ECX is reserved: left as KVM has it.
  EXPECT_EQ(find(guest_cpuid({leaf(0x0), sizes}, {0, 3, false}), 0x80000008).ecx, sizes.ecx);
  EXPECT_EQ(find(guest_cpuid({leaf(0x1)}, {0, 1, false}), 0x1).edx & (1u << 28), 0u)
      << "one vCPU: no HTT";
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
