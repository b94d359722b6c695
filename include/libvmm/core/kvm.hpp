// Thin, typed wrapper over the KVM ioctl API: the system (/dev/kvm), a VM, a vCPU.
// Every failing ioctl becomes an exception naming the operation.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class KvmVm;
class KvmVcpu;

// /dev/kvm. Opening it checks the API version; missing device or permission is a UserError.
class Kvm {
 public:
  explicit Kvm(const std::string& path = "/dev/kvm");

  int check_extension(long capability) const;  // KVM_CHECK_EXTENSION on the system fd
  // Throws UserError naming the capability when KVM lacks it.
  void require_extension(long capability, const char* name) const;
  int vcpu_mmap_size() const;
#if defined(__x86_64__)
  // KVM_GET_SUPPORTED_CPUID: what this host's KVM can offer a guest.
  std::vector<kvm_cpuid_entry2> supported_cpuid() const;
#endif
  KvmVm create_vm() const;
  int fd() const {
    return fd_.get();
  }

 private:
  UniqueFd fd_;
};

class KvmVm {
 public:
  KvmVm(const Kvm& kvm, UniqueFd fd) : kvm_(&kvm), fd_(std::move(fd)) {}

  int check_extension(long capability) const;  // on the VM fd (per-VM answers)
  void set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                              bool readonly);
  void create_irqchip();
#if defined(__x86_64__)
  void set_tss_addr(uint64_t addr);
  void set_identity_map_addr(uint64_t addr);
  void create_pit2();
#endif
  // Drives an interrupt controller input (x86: GSI; AArch64: irq type/number encoding).
  void irq_line(uint32_t irq, bool level);
  // KVM_IRQFD: writing to `eventfd` injects `gsi` (edge) without a trip through this process.
  void register_irqfd(int eventfd, uint32_t gsi);
  void unregister_irqfd(int eventfd, uint32_t gsi);
  // KVM_IOEVENTFD: a guest write of `len` bytes at `addr` signals `eventfd` instead of exiting.
  // `datamatch` (when set) restricts it to writes of that value (e.g. a queue index).
  void register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool mmio,
                          std::optional<uint64_t> datamatch);
  std::unique_ptr<KvmVcpu> create_vcpu(uint32_t index) const;
  int fd() const {
    return fd_.get();
  }
  const Kvm& kvm() const {
    return *kvm_;
  }

 private:
  const Kvm* kvm_;
  UniqueFd fd_;
};

class KvmVcpu {
 public:
  KvmVcpu(uint32_t index, UniqueFd fd, kvm_run* run, size_t run_size);
  ~KvmVcpu();
  KvmVcpu(const KvmVcpu&) = delete;
  KvmVcpu& operator=(const KvmVcpu&) = delete;

  // KVM_RUN. Returns false when interrupted by a signal (EINTR) or immediate_exit.
  bool run();
  kvm_run& state() { return *run_; }
  uint32_t index() const { return index_; }
  int fd() const { return fd_.get(); }

#if defined(__x86_64__)
  kvm_regs get_regs() const;
  void set_regs(const kvm_regs& regs);
  kvm_sregs get_sregs() const;
  void set_sregs(const kvm_sregs& sregs);
  void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  kvm_lapic_state get_lapic() const;
  void set_lapic(const kvm_lapic_state& lapic);
  void set_fpu(const kvm_fpu& fpu);
  void set_msrs(const std::vector<kvm_msr_entry>& msrs);
#endif

 private:
  uint32_t index_;
  UniqueFd fd_;
  kvm_run* run_;
  size_t run_size_;
};

}  // namespace libvmm
