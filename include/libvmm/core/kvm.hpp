// Thin, typed wrapper over the architecture-neutral KVM ioctl API: the system (/dev/kvm), a VM,
// a vCPU. Every failing ioctl becomes an exception naming the operation. The corners only one
// architecture has live with it (x86_64: include/libvmm/arch/x86_64/kvm_x86.hpp; AArch64:
// src/arch/aarch64/kvm_arm.hpp), built on kvm_ioctl() and the fds below.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class KvmVm;
class KvmVcpu;

// An ioctl on a KVM fd, retried on EINTR; returns its result, or throws SystemError
// "KVM: `what`". The architectures' own requests go through it.
int kvm_ioctl(int fd, unsigned long request, const std::string& what, const void* arg);
int kvm_ioctl(int fd, unsigned long request, const std::string& what, unsigned long arg);

// /dev/kvm. Opening it checks the API version; missing device or permission is a UserError.
class Kvm {
 public:
  explicit Kvm(const std::string& path = "/dev/kvm");

  int check_extension(long capability) const;  // KVM_CHECK_EXTENSION on the system fd
  // Throws UserError naming the capability when KVM lacks it.
  void require_extension(long capability, const char* name) const;
  int vcpu_mmap_size() const;
  KvmVm create_vm() const;
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

class KvmVm {
 public:
  KvmVm(const Kvm& kvm, UniqueFd fd) : kvm_(&kvm), fd_(std::move(fd)) {}

  int check_extension(long capability) const;  // on the VM fd (per-VM answers)
  // KVM_ENABLE_CAP with no arguments; false when KVM does not offer or refuses it.
  bool try_enable_cap(uint32_t capability);
  // Whether this VM can create a KVM device of `type` (KVM_CREATE_DEVICE_TEST;
  // core/kvm_device.hpp).
  bool supports_device(uint32_t type) const;
  void set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                              bool readonly);
  void create_irqchip();
  // KVM_IRQ_LINE: drives an interrupt controller input, `irq` as this architecture's KVM
  // encodes it (KvmIrqRoute::line, core/kvm_irq.hpp).
  void irq_line(uint32_t irq, bool level);
  // KVM_IRQFD: writing to `eventfd` injects `gsi` (edge) without a trip through this process.
  void register_irqfd(int eventfd, uint32_t gsi);
  // A level-triggered one (KVM_IRQFD_FLAG_RESAMPLE): `gsi` stays asserted until the guest's
  // EOI, which deasserts it and signals `resamplefd` (a device's INTx, unmasked by it).
  void register_irqfd(int eventfd, uint32_t gsi, int resamplefd);
  void unregister_irqfd(int eventfd, uint32_t gsi);
  // KVM_IOEVENTFD: a guest write of `len` bytes at `addr` signals `eventfd` instead of exiting.
  // `datamatch` (when set) restricts it to writes of that value (e.g. a queue index).
  void register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool mmio,
                          std::optional<uint64_t> datamatch);
  // The same with KVM_IOEVENTFD_FLAG_DEASSIGN: false when KVM had no such ioeventfd.
  bool unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool mmio,
                            std::optional<uint64_t> datamatch);
  // KVM_SIGNAL_MSI: one message-signalled interrupt (a PCI function's MSI-X vector). False when
  // KVM refuses or drops it (an address the guest programmed that no CPU answers). `devid`: the
  // sender's requester ID, which an MSI controller that translates per device needs (the GICv3
  // ITS: KVM_MSI_VALID_DEVID).
  bool signal_msi(uint64_t address, uint32_t data, std::optional<uint32_t> devid = std::nullopt);
  // KVM_REGISTER_COALESCED_MMIO for the ports [port, port + size): KVM queues their writes
  // in the VM's ring (CoalescedWrites) instead of exiting. False where KVM cannot
  // (KVM_CAP_COALESCED_PIO) or refuses.
  bool register_coalesced_pio(uint16_t port, uint32_t size);
  std::unique_ptr<KvmVcpu> create_vcpu(uint32_t index) const;
  int fd() const { return fd_.get(); }
  const Kvm& kvm() const { return *kvm_; }

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

  // KVM_GET_ONE_REG / KVM_SET_ONE_REG of a 64-bit register; `id` is the architecture's
  // register id (it must have KVM_REG_SIZE_U64).
  uint64_t get_one_reg(uint64_t id) const;
  void set_one_reg(uint64_t id, uint64_t value);

 private:
  uint32_t index_;
  UniqueFd fd_;
  kvm_run* run_;
  size_t run_size_;
};

}  // namespace libvmm
