#include "vcpu_setup.hpp"

#include <cstring>

#include "libvmm/arch/x86_64/kvm_x86.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm::x86 {
namespace {

constexpr size_t kApicLvtLint0 = 0x350;
constexpr size_t kApicLvtLint1 = 0x360;
constexpr uint32_t kApicModeNmi = 0x4 << 8;
constexpr uint32_t kApicModeExtInt = 0x7 << 8;
constexpr uint32_t kApicModeMask = 0x7 << 8;

constexpr uint32_t kMsrMiscEnable = 0x1a0;  // IA32_MISC_ENABLE
constexpr uint64_t kMiscEnableFastString = 1ull << 0;
constexpr uint64_t kMiscEnableBtsUnavailable = 1ull << 11;
constexpr uint64_t kMiscEnablePebsUnavailable = 1ull << 12;

uint32_t apic_reg(const kvm_lapic_state& s, size_t offset) {
  uint32_t v;
  std::memcpy(&v, s.regs + offset, sizeof v);
  return v;
}
void set_apic_reg(kvm_lapic_state& s, size_t offset, uint32_t v) {
  std::memcpy(s.regs + offset, &v, sizeof v);
}

}  // namespace

void setup_platform_state(KvmVcpu& vcpu) {
  kvm_lapic_state lapic = get_lapic(vcpu);
  set_apic_reg(lapic, kApicLvtLint0,
               (apic_reg(lapic, kApicLvtLint0) & ~kApicModeMask) | kApicModeExtInt);
  set_apic_reg(lapic, kApicLvtLint1,
               (apic_reg(lapic, kApicLvtLint1) & ~kApicModeMask) | kApicModeNmi);
  set_lapic(vcpu, lapic);

  // IA32_MISC_ENABLE as firmware leaves it: fast string operations on. KVM's reset value has
  // only "PEBS and BTS unavailable", and Linux on an Intel CPU then says "Disabled fast string
  // operations" and gives up REP MOVSB/STOSB (ERMS) for memcpy, memset and clear_page for the
  // guest's whole life.
  // A KVM that refuses the write (not every one emulates the MSR) leaves the guest as before.
  try {
    set_msrs(vcpu,
             {{kMsrMiscEnable, 0,
               kMiscEnableFastString | kMiscEnableBtsUnavailable | kMiscEnablePebsUnavailable}});
  } catch (const SystemError& e) {
    log::debug("vCPU {}: IA32_MISC_ENABLE stays KVM's: {}", vcpu.index(), e.what());
  }

  kvm_fpu fpu{};
  fpu.fcw = 0x37f;     // x87 default control word
  fpu.mxcsr = 0x1f80;  // SSE exceptions masked
  set_fpu(vcpu, fpu);
}

}  // namespace libvmm::x86
