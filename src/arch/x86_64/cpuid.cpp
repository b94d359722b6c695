#include "libvmm/arch/x86_64/cpuid.hpp"

#include <algorithm>

namespace libvmm::x86 {
namespace {

constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCaches = 0x4;
constexpr uint32_t kLeafTopology = 0xB;
constexpr uint32_t kLeafTopologyV2 = 0x1F;
constexpr uint32_t kLeafVendor = 0x0;
constexpr uint32_t kLeafAmdSizes = 0x80000008;
constexpr uint32_t kLeafAmdCaches = 0x8000001D;
constexpr uint32_t kLeafAmdTopology = 0x8000001E;
constexpr uint32_t kTscDeadlineBit = 1u << 24;  // CPUID.1:ECX
constexpr uint32_t kHypervisorBit = 1u << 31;   // CPUID.1:ECX
constexpr uint32_t kHttBit = 1u << 28;          // CPUID.1:EDX: EBX[23:16] is valid
// Leaf 0xB/0x1F ECX[15:8]: the level's type.
constexpr uint32_t kLevelSmt = 1;
constexpr uint32_t kLevelCore = 2;

// Bits of the APIC ID that number the cores of the package: enough for every vCPU.
uint32_t core_bits(uint32_t vcpus) {
  uint32_t bits = 0;
  while ((1u << bits) < vcpus) ++bits;
  return bits;
}

// The guest's topology, whatever the host's: one package whose cores are the vCPUs, one
// thread each (APIC ID = vCPU index). KVM hands the host's own topology leaves through, so an
// SMT host's guest would pair vCPUs 0/1, 2/3... as hyperthread siblings (and schedule and
// mitigate as if they were), and a small host package split many vCPUs into "packages".
void set_topology_level(kvm_cpuid_entry2& e, uint32_t apic_id, uint32_t vcpus) {
  e.edx = apic_id;  // x2APIC ID
  switch (e.index) {
    case 0:  // threads of a core: one
      e.eax = 0;
      e.ebx = 1;
      e.ecx = (kLevelSmt << 8) | 0;
      break;
    case 1:  // cores of the package: the vCPUs
      e.eax = core_bits(vcpus);
      e.ebx = vcpus;
      e.ecx = (kLevelCore << 8) | 1;
      break;
    default:  // no further level
      e.eax = 0;
      e.ebx = 0;
      e.ecx = e.index & 0xff;
      break;
  }
}

// AMD (and Hygon, its licensee) number their topology in their own leaves, which are reserved
// on Intel.
bool amd_like(const std::vector<kvm_cpuid_entry2>& table) {
  for (const auto& e : table) {
    if (e.function != kLeafVendor) continue;
    // "AuthenticAMD" / "HygonGenuine": EBX holds the first four letters.
    return e.ebx == 0x68747541 || e.ebx == 0x6f677948;
  }
  return false;
}

// EAX[25:14] of a cache leaf (Intel's 4, AMD's 0x8000001D): the logical processors sharing the
// cache, less one: one for a core's own caches (L1, L2), the whole package for the last level.
uint32_t with_cache_sharing(uint32_t eax, uint32_t addressable) {
  const uint32_t level = (eax >> 5) & 0x7;
  const uint32_t sharing = level >= 3 ? addressable - 1 : 0;
  return (eax & ~(0xfffu << 14)) | ((sharing & 0xfff) << 14);
}

}  // namespace

std::vector<kvm_cpuid_entry2> guest_cpuid(std::vector<kvm_cpuid_entry2> supported,
                                          const CpuidFacts& facts) {
  const uint32_t vcpus = facts.vcpu_count == 0 ? 1 : facts.vcpu_count;
  const uint32_t apic_id = facts.vcpu_index;
  const uint32_t addressable = 1u << core_bits(vcpus);
  const bool amd = amd_like(supported);
  // KVM since Linux 6.3 (and stable kernels back to 5.10) lists only subleaf 0 of the topology
  // leaves, zeroed; a level there without subleaf 1 would make every vCPU a package of its
  // own. Subleaf 1 (the cores) is added; KVM answers the levels past it as "none".
  for (const uint32_t function : {kLeafTopology, kLeafTopologyV2}) {
    const auto has = [&supported, function](uint32_t index) {
      return std::any_of(supported.begin(), supported.end(), [&](const kvm_cpuid_entry2& e) {
        return e.function == function && e.index == index;
      });
    };
    if (has(0) && !has(1)) {
      kvm_cpuid_entry2 cores{};
      cores.function = function;
      cores.index = 1;
      cores.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
      supported.push_back(cores);
    }
  }
  for (auto& e : supported) {
    switch (e.function) {
      case kLeafFeatures:
        // EBX[31:24] initial APIC ID, EBX[23:16] addressable logical processors per package.
        e.ebx = (e.ebx & 0x0000ffff) | (apic_id << 24) | ((addressable & 0xff) << 16);
        e.ecx |= kHypervisorBit;
        if (facts.tsc_deadline_timer) e.ecx |= kTscDeadlineBit;
        if (vcpus > 1) {
          e.edx |= kHttBit;
        } else {
          e.edx &= ~kHttBit;
        }
        break;
      case kLeafCaches:
        if ((e.eax & 0x1f) == 0) break;  // no cache at this index
        // EAX[31:26] cores per package - 1.
        e.eax = (with_cache_sharing(e.eax, addressable) & 0x03ffffff) |
                (((addressable - 1) & 0x3f) << 26);
        break;
      case kLeafAmdCaches:
        if ((e.eax & 0x1f) == 0) break;
        e.eax = with_cache_sharing(e.eax, addressable);
        break;
      case kLeafTopology:
      case kLeafTopologyV2:
        set_topology_level(e, apic_id, vcpus);
        break;
      case kLeafAmdSizes:
        // ECX[15:12] APIC ID bits for the cores, ECX[7:0] cores (threads) per package - 1.
        if (amd) e.ecx = (e.ecx & ~0xf0ffu) | (core_bits(vcpus) << 12) | ((vcpus - 1) & 0xff);
        break;
      case kLeafAmdTopology:
        // EAX extended APIC ID; EBX[15:8] threads per core - 1 (0), EBX[7:0] core ID; ECX one
        // node.
        e.eax = apic_id;
        e.ebx = apic_id & 0xff;
        e.ecx = 0;
        break;
      default:
        break;
    }
  }
  return supported;
}

}  // namespace libvmm::x86
