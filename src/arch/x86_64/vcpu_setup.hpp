// x86 vCPU state that is not about the boot protocol: CPUID, local APIC, FPU.
#pragma once

#include <vector>

#include "libvmm/core/kvm.hpp"

namespace libvmm::x86 {

// KVM's supported CPUID with this vCPU's APIC ID filled in.
std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(std::vector<kvm_cpuid_entry2> supported,
                                             uint32_t index, uint32_t vcpu_count);

// What firmware would have done before handing over: LINT0 as ExtINT (the PIC's path), LINT1
// as NMI, a sane FPU.
void setup_platform_state(KvmVcpu& vcpu);

}  // namespace libvmm::x86
