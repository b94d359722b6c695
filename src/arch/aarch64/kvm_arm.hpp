// The arm64-only corners of the KVM API the AArch64 machine needs: vCPU init and core register
// ids. (One-reg access, KVM devices and capabilities are core: core/kvm.hpp, kvm_device.hpp.)
// Internal to the library; built for aarch64 hosts only.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>

#include "libvmm/core/kvm.hpp"

namespace libvmm::aarch64 {

// KVM_ARM_PREFERRED_TARGET, then KVM_ARM_VCPU_INIT with PSCI 0.2; every vCPU but the first
// starts powered off and waits for the guest's PSCI CPU_ON.
void init_vcpu(const KvmVm& vm, KvmVcpu& vcpu);

// A KVM_REG_ARM_CORE register id from its offset in struct kvm_regs.
uint64_t core_reg_id(size_t offset_in_kvm_regs);

// A system register's one-reg id from its encoding (op0, op1, CRn, CRm, op2).
uint64_t sys_reg_id(unsigned op0, unsigned op1, unsigned crn, unsigned crm, unsigned op2);

}  // namespace libvmm::aarch64
