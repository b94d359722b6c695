// x86 vCPU state that is not about the boot protocol: local APIC, MSRs, FPU (CPUID: cpuid.hpp).
#pragma once

#include <vector>

#include "libvmm/core/kvm.hpp"

namespace libvmm::x86 {

// What firmware would have done before handing over: LINT0 as ExtINT (the PIC's path), LINT1
// as NMI, a sane FPU.
void setup_platform_state(KvmVcpu& vcpu);

}  // namespace libvmm::x86
