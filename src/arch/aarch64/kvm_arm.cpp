#include "kvm_arm.hpp"

#include <fmt/format.h>

namespace libvmm::aarch64 {

void init_vcpu(const KvmVm& vm, KvmVcpu& vcpu) {
  kvm_vcpu_init init{};
  kvm_ioctl(vm.fd(), KVM_ARM_PREFERRED_TARGET, "KVM_ARM_PREFERRED_TARGET", &init);
  init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
  if (vcpu.index() != 0) init.features[0] |= 1u << KVM_ARM_VCPU_POWER_OFF;
  kvm_ioctl(vcpu.fd(), KVM_ARM_VCPU_INIT, fmt::format("KVM_ARM_VCPU_INIT (vCPU {})", vcpu.index()),
            &init);
}

uint64_t core_reg_id(size_t offset_in_kvm_regs) {
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
         (offset_in_kvm_regs / sizeof(uint32_t));
}

uint64_t sys_reg_id(unsigned op0, unsigned op1, unsigned crn, unsigned crm, unsigned op2) {
  return ARM64_SYS_REG(op0, op1, crn, crm, op2);
}

}  // namespace libvmm::aarch64
