#include "libvmm/arch/x86_64/cpuid.hpp"

namespace libvmm::x86 {
namespace {

constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafTopology = 0xB;
constexpr uint32_t kLeafTopologyV2 = 0x1F;
constexpr uint32_t kTscDeadlineBit = 1u << 24;  // CPUID.1:ECX
constexpr uint32_t kHypervisorBit = 1u << 31;   // CPUID.1:ECX

}  // namespace

std::vector<kvm_cpuid_entry2> guest_cpuid(std::vector<kvm_cpuid_entry2> supported,
                                          const CpuidFacts& facts) {
  for (auto& e : supported) {
    if (e.function == kLeafFeatures) {
      // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
      e.ebx = (e.ebx & 0x0000ffff) | (facts.vcpu_index << 24) | ((facts.vcpu_count & 0xff) << 16);
      e.ecx |= kHypervisorBit;
      if (facts.tsc_deadline_timer) e.ecx |= kTscDeadlineBit;
    } else if (e.function == kLeafTopology || e.function == kLeafTopologyV2) {
      e.edx = facts.vcpu_index;  // x2APIC ID
    }
  }
  return supported;
}

}  // namespace libvmm::x86
