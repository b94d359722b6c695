#include "libvmm/arch/x86_64/kvm_x86.hpp"

#include <fmt/format.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "libvmm/core/error.hpp"

namespace libvmm::x86 {
namespace {

// The uapi headers declare their flexible arrays with __DECLARE_FLEX_ARRAY, which in C++ adds
// an empty struct member: kvm_cpuid2 and kvm_msrs get sizeof 12 and 16 instead of C's 8, the
// entries move, and the ioctl numbers (which encode sizeof) no longer match the kernel's. So
// these requests are built by hand in the C layout: an 8-byte header, then the entries.
struct FlexHeader {
  uint32_t count;
  uint32_t padding;
};
static_assert(sizeof(FlexHeader) == 8);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader);

// A C-layout request buffer: FlexHeader followed by `count` entries of T.
template <typename T>
class FlexRequest {
 public:
  explicit FlexRequest(size_t count) : bytes_(sizeof(FlexHeader) + count * sizeof(T)) {
    FlexHeader header{static_cast<uint32_t>(count), 0};
    std::memcpy(bytes_.data(), &header, sizeof header);
  }
  explicit FlexRequest(const std::vector<T>& entries) : FlexRequest(entries.size()) {
    std::memcpy(bytes_.data() + sizeof(FlexHeader), entries.data(), entries.size() * sizeof(T));
  }
  void* data() { return bytes_.data(); }
  uint32_t count() const {
    FlexHeader header;
    std::memcpy(&header, bytes_.data(), sizeof header);
    return header.count;
  }
  std::vector<T> entries() const {
    std::vector<T> out(count());
    std::memcpy(out.data(), bytes_.data() + sizeof(FlexHeader), out.size() * sizeof(T));
    return out;
  }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace

std::vector<kvm_cpuid_entry2> supported_cpuid(const Kvm& kvm) {
  for (size_t n = 64; n <= 4096; n *= 2) {
    FlexRequest<kvm_cpuid_entry2> request(n);
    if (::ioctl(kvm.fd(), kGetSupportedCpuid, request.data()) == 0) return request.entries();
    if (errno != E2BIG) throw_errno("KVM: KVM_GET_SUPPORTED_CPUID");
  }
  throw SystemError("KVM: KVM_GET_SUPPORTED_CPUID", E2BIG);
}

void set_tss_addr(KvmVm& vm, uint64_t addr) {
  kvm_ioctl(vm.fd(), KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", static_cast<unsigned long>(addr));
}

void set_identity_map_addr(KvmVm& vm, uint64_t addr) {
  kvm_ioctl(vm.fd(), KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &addr);
}

void create_pit2(KvmVm& vm) {
  kvm_pit_config config{};
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  kvm_ioctl(vm.fd(), KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &config);
}

uint32_t exits_kvm_can_disable(const KvmVm& vm) {
  const int mask = vm.check_extension(KVM_CAP_X86_DISABLE_EXITS);
  return mask > 0 ? static_cast<uint32_t>(mask) : 0;
}

void disable_exits(KvmVm& vm, uint32_t exits) {
  kvm_enable_cap cap{};
  cap.cap = KVM_CAP_X86_DISABLE_EXITS;
  cap.args[0] = exits;
  kvm_ioctl(vm.fd(), KVM_ENABLE_CAP, "KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS)", &cap);
}

kvm_regs get_regs(const KvmVcpu& vcpu) {
  kvm_regs regs{};
  kvm_ioctl(vcpu.fd(), KVM_GET_REGS, "KVM_GET_REGS", &regs);
  return regs;
}

void set_regs(KvmVcpu& vcpu, const kvm_regs& regs) {
  kvm_ioctl(vcpu.fd(), KVM_SET_REGS, "KVM_SET_REGS", &regs);
}

kvm_sregs get_sregs(const KvmVcpu& vcpu) {
  kvm_sregs sregs{};
  kvm_ioctl(vcpu.fd(), KVM_GET_SREGS, "KVM_GET_SREGS", &sregs);
  return sregs;
}

void set_sregs(KvmVcpu& vcpu, const kvm_sregs& sregs) {
  kvm_ioctl(vcpu.fd(), KVM_SET_SREGS, "KVM_SET_SREGS", &sregs);
}

void set_cpuid(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& entries) {
  FlexRequest<kvm_cpuid_entry2> request(entries);
  kvm_ioctl(vcpu.fd(), kSetCpuid2, "KVM_SET_CPUID2", request.data());
}

kvm_lapic_state get_lapic(const KvmVcpu& vcpu) {
  kvm_lapic_state lapic{};
  kvm_ioctl(vcpu.fd(), KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic);
  return lapic;
}

void set_lapic(KvmVcpu& vcpu, const kvm_lapic_state& lapic) {
  kvm_ioctl(vcpu.fd(), KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic);
}

void set_fpu(KvmVcpu& vcpu, const kvm_fpu& fpu) {
  kvm_ioctl(vcpu.fd(), KVM_SET_FPU, "KVM_SET_FPU", &fpu);
}

void set_msrs(KvmVcpu& vcpu, const std::vector<kvm_msr_entry>& msrs) {
  FlexRequest<kvm_msr_entry> request(msrs);
  const int n = kvm_ioctl(vcpu.fd(), kSetMsrs, "KVM_SET_MSRS", request.data());
  if (static_cast<size_t>(n) != msrs.size()) {
    throw SystemError(fmt::format("KVM: KVM_SET_MSRS set {} of {} MSRs", n, msrs.size()), EINVAL);
  }
}

}  // namespace libvmm::x86
