// A KVM device (KVM_CREATE_DEVICE): an in-kernel device model such as AArch64's vGIC or
// RISC-V's AIA, configured through attributes. Architecture-neutral: the types, groups and
// attributes come from the architecture that creates it.
#pragma once

#include <cstdint>
#include <string>

#include "libvmm/core/kvm.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class KvmDevice {
 public:
  // Creates a device of `type` on `vm` (see KvmVm::supports_device() to ask first); `name`
  // names it in messages ("vGICv3").
  KvmDevice(const KvmVm& vm, uint32_t type, std::string name);

  // KVM_SET_DEVICE_ATTR with `value` pointing at the attribute's data; throws SystemError
  // "KVM: NAME: what" when KVM refuses.
  void set_attr(uint32_t group, uint64_t attr, const void* value, const char* what);
  // KVM_GET_DEVICE_ATTR into `value` (the attribute's size); throws like set_attr.
  void get_attr(uint32_t group, uint64_t attr, void* value, const char* what) const;
  // KVM_HAS_DEVICE_ATTR: whether this device knows the attribute.
  bool has_attr(uint32_t group, uint64_t attr) const;

  int fd() const { return fd_.get(); }
  const std::string& name() const { return name_; }

 private:
  UniqueFd fd_;
  std::string name_;
};

}  // namespace libvmm
