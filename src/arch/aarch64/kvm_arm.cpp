#include "kvm_arm.hpp"

#include <fmt/format.h>
#include <sys/ioctl.h>

#include <cerrno>

#include "libvmm/core/error.hpp"

namespace libvmm::aarch64 {
namespace {

template <typename T>
void checked_ioctl(int fd, unsigned long request, T* arg, const std::string& what) {
  int ret;
  do {
    ret = ::ioctl(fd, request, arg);
  } while (ret < 0 && errno == EINTR);
  if (ret < 0) throw_errno("KVM: " + what);
}

}  // namespace

void init_vcpu(const KvmVm& vm, KvmVcpu& vcpu) {
  kvm_vcpu_init init{};
  checked_ioctl(vm.fd(), KVM_ARM_PREFERRED_TARGET, &init, "KVM_ARM_PREFERRED_TARGET");
  init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
  if (vcpu.index() != 0) init.features[0] |= 1u << KVM_ARM_VCPU_POWER_OFF;
  checked_ioctl(vcpu.fd(), KVM_ARM_VCPU_INIT, &init,
                fmt::format("KVM_ARM_VCPU_INIT (vCPU {})", vcpu.index()));
}

uint64_t core_reg_id(size_t offset_in_kvm_regs) {
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
         (offset_in_kvm_regs / sizeof(uint32_t));
}

void set_one_reg(KvmVcpu& vcpu, uint64_t id, uint64_t value) {
  kvm_one_reg reg{id, reinterpret_cast<uint64_t>(&value)};
  checked_ioctl(vcpu.fd(), KVM_SET_ONE_REG, &reg, fmt::format("KVM_SET_ONE_REG {:#x}", id));
}

uint64_t get_one_reg(KvmVcpu& vcpu, uint64_t id) {
  uint64_t value = 0;
  kvm_one_reg reg{id, reinterpret_cast<uint64_t>(&value)};
  checked_ioctl(vcpu.fd(), KVM_GET_ONE_REG, &reg, fmt::format("KVM_GET_ONE_REG {:#x}", id));
  return value;
}

bool KvmDevice::supported(const KvmVm& vm, uint32_t type) {
  kvm_create_device test{};
  test.type = type;
  test.flags = KVM_CREATE_DEVICE_TEST;
  return ::ioctl(vm.fd(), KVM_CREATE_DEVICE, &test) == 0;
}

KvmDevice::KvmDevice(const KvmVm& vm, uint32_t type, std::string name) : name_(std::move(name)) {
  kvm_create_device create{};
  create.type = type;
  checked_ioctl(vm.fd(), KVM_CREATE_DEVICE, &create, "KVM_CREATE_DEVICE " + name_);
  fd_ = UniqueFd(static_cast<int>(create.fd));
}

void KvmDevice::set_attr(uint32_t group, uint64_t attr, const void* value, const char* what) {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uint64_t>(value);
  checked_ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &a, fmt::format("{}: {}", name_, what));
}

bool enable_vm_cap(const KvmVm& vm, uint32_t capability) {
  if (vm.check_extension(capability) <= 0) return false;
  kvm_enable_cap cap{};
  cap.cap = capability;
  return ::ioctl(vm.fd(), KVM_ENABLE_CAP, &cap) == 0;
}

}  // namespace libvmm::aarch64
