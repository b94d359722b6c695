// The x86-only corners of the KVM API: CPUID, the register files, the local APIC, FPU and MSRs,
// and the VM-wide setup only Intel/AMD KVM has (TSS and identity map addresses, the PIT).
// Built for x86_64 hosts only.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "libvmm/core/kvm.hpp"

namespace libvmm::x86 {

// KVM_GET_SUPPORTED_CPUID: what this host's KVM can offer a guest.
std::vector<kvm_cpuid_entry2> supported_cpuid(const Kvm& kvm);

// KVM_SET_TSS_ADDR: 3 pages of guest-physical space KVM needs on Intel (unused by the guest).
void set_tss_addr(KvmVm& vm, uint64_t addr);
// KVM_SET_IDENTITY_MAP_ADDR: 1 page for Intel's real-mode identity map.
void set_identity_map_addr(KvmVm& vm, uint64_t addr);
// KVM_CREATE_PIT2: the in-kernel i8254 timer, its speaker port a dummy.
void create_pit2(KvmVm& vm);
// KVM_CAP_X86_DISABLE_EXITS: the exits (KVM_X86_DISABLE_EXITS_HLT, _PAUSE, ...) this VM's KVM
// can leave to the guest (0: none), and leaving them there. Before any vCPU is created.
uint32_t exits_kvm_can_disable(const KvmVm& vm);
void disable_exits(KvmVm& vm, uint32_t exits);

kvm_regs get_regs(const KvmVcpu& vcpu);
void set_regs(KvmVcpu& vcpu, const kvm_regs& regs);
kvm_sregs get_sregs(const KvmVcpu& vcpu);
void set_sregs(KvmVcpu& vcpu, const kvm_sregs& sregs);
void set_cpuid(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& entries);
kvm_lapic_state get_lapic(const KvmVcpu& vcpu);
void set_lapic(KvmVcpu& vcpu, const kvm_lapic_state& lapic);
void set_fpu(KvmVcpu& vcpu, const kvm_fpu& fpu);
void set_msrs(KvmVcpu& vcpu, const std::vector<kvm_msr_entry>& msrs);

}  // namespace libvmm::x86
