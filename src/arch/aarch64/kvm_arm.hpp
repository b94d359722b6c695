// The arm64-only corners of the KVM API the AArch64 machine needs: vCPU init, one-reg access,
// and KVM devices (the vGIC). Internal to the library; built for aarch64 hosts only.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>

#include "libvmm/core/kvm.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm::aarch64 {

// KVM_ARM_PREFERRED_TARGET, then KVM_ARM_VCPU_INIT with PSCI 0.2; every vCPU but the first
// starts powered off and waits for the guest's PSCI CPU_ON.
void init_vcpu(const KvmVm& vm, KvmVcpu& vcpu);

// A KVM_REG_ARM_CORE register id from its offset in struct kvm_regs.
uint64_t core_reg_id(size_t offset_in_kvm_regs);
void set_one_reg(KvmVcpu& vcpu, uint64_t id, uint64_t value);
uint64_t get_one_reg(KvmVcpu& vcpu, uint64_t id);

// A KVM device (KVM_CREATE_DEVICE) and its attributes.
class KvmDevice {
 public:
  // Whether this VM can create a device of `type` (KVM_CREATE_DEVICE_TEST).
  static bool supported(const KvmVm& vm, uint32_t type);
  KvmDevice(const KvmVm& vm, uint32_t type, std::string name);

  void set_attr(uint32_t group, uint64_t attr, const void* value, const char* what);
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string name_;
};

// KVM_ENABLE_CAP on the VM; false when KVM does not offer it.
bool enable_vm_cap(const KvmVm& vm, uint32_t capability);

}  // namespace libvmm::aarch64
