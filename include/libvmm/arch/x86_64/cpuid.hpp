// The CPUID table a vCPU reports: KVM_GET_SUPPORTED_CPUID's, with what only the VMM knows
// filled in (the vCPU's APIC ID and count, the hypervisor bit) and what KVM supports but does
// not list there.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace libvmm::x86 {

struct CpuidFacts {
  uint32_t vcpu_index = 0;  // the vCPU's APIC ID
  uint32_t vcpu_count = 1;
  // KVM_CAP_TSC_DEADLINE_TIMER with the in-kernel local APIC. KVMs before Linux 6.14 emulate
  // the TSC-deadline timer but leave its bit out of the supported set: without it a guest
  // calibrates its APIC timer against the PIT at boot (100 ms of guest time) and programs it
  // through the slower one-shot mode.
  bool tsc_deadline_timer = false;
};

std::vector<kvm_cpuid_entry2> guest_cpuid(std::vector<kvm_cpuid_entry2> supported,
                                          const CpuidFacts& facts);

}  // namespace libvmm::x86
