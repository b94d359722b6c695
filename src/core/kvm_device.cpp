#include "libvmm/core/kvm_device.hpp"

#include <fmt/format.h>
#include <sys/ioctl.h>

namespace libvmm {

KvmDevice::KvmDevice(const KvmVm& vm, uint32_t type, std::string name) : name_(std::move(name)) {
  kvm_create_device create{};
  create.type = type;
  kvm_ioctl(vm.fd(), KVM_CREATE_DEVICE, "KVM_CREATE_DEVICE " + name_, &create);
  fd_ = UniqueFd(static_cast<int>(create.fd));
}

void KvmDevice::set_attr(uint32_t group, uint64_t attr, const void* value, const char* what) {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uint64_t>(value);
  kvm_ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, fmt::format("{}: {}", name_, what), &a);
}

void KvmDevice::get_attr(uint32_t group, uint64_t attr, void* value, const char* what) const {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uint64_t>(value);
  kvm_ioctl(fd_.get(), KVM_GET_DEVICE_ATTR, fmt::format("{}: {}", name_, what), &a);
}

bool KvmDevice::has_attr(uint32_t group, uint64_t attr) const {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  return ::ioctl(fd_.get(), KVM_HAS_DEVICE_ATTR, &a) == 0;
}

}  // namespace libvmm
