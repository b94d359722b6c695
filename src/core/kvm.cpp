#include "libvmm/core/kvm.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "libvmm/core/error.hpp"

namespace libvmm {
namespace {

template <typename Arg>
int ioctl_retrying(int fd, unsigned long request, const std::string& what, Arg arg) {
  int ret;
  do {
    ret = ::ioctl(fd, request, arg);
  } while (ret < 0 && errno == EINTR);
  if (ret < 0) throw_errno("KVM: " + what);
  return ret;
}

}  // namespace

int kvm_ioctl(int fd, unsigned long request, const std::string& what, const void* arg) {
  return ioctl_retrying(fd, request, what, arg);
}

int kvm_ioctl(int fd, unsigned long request, const std::string& what, unsigned long arg) {
  return ioctl_retrying(fd, request, what, arg);
}

// ---------------------------------------------------------------------------------------------
// Kvm

Kvm::Kvm(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CLOEXEC)) {
  if (!fd_) {
    const int err = errno;
    if (err == ENOENT) {
      throw UserError(
          fmt::format("{}: no such device: this host has no KVM (load kvm-intel or "
                      "kvm-amd, or enable virtualization in the firmware)",
                      path));
    }
    if (err == EACCES || err == EPERM) {
      throw UserError(
          fmt::format("{}: permission denied: run as root or add yourself to the "
                      "'kvm' group",
                      path));
    }
    throw UserError(fmt::format("{}: cannot open: {}", path, std::strerror(err)));
  }
  const int version = ::ioctl(fd_.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    throw UserError(fmt::format("{}: KVM API version {} is not the expected {}", path, version,
                                KVM_API_VERSION));
  }
}

int Kvm::check_extension(long capability) const {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

void Kvm::require_extension(long capability, const char* name) const {
  if (check_extension(capability) <= 0) {
    throw UserError(fmt::format("/dev/kvm: this host's KVM lacks {}, which libvmm needs", name));
  }
}

int Kvm::vcpu_mmap_size() const {
  return kvm_ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", 0UL);
}

KvmVm Kvm::create_vm() const {
  int fd;
  do {
    fd = ::ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_errno("KVM: KVM_CREATE_VM");
  return KvmVm(*this, UniqueFd(fd));
}

// ---------------------------------------------------------------------------------------------
// KvmVm

int KvmVm::check_extension(long capability) const {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

bool KvmVm::try_enable_cap(uint32_t capability) {
  if (check_extension(capability) <= 0) return false;
  kvm_enable_cap cap{};
  cap.cap = capability;
  return ::ioctl(fd_.get(), KVM_ENABLE_CAP, &cap) == 0;
}

bool KvmVm::supports_device(uint32_t type) const {
  kvm_create_device test{};
  test.type = type;
  test.flags = KVM_CREATE_DEVICE_TEST;
  return ::ioctl(fd_.get(), KVM_CREATE_DEVICE, &test) == 0;
}

void KvmVm::set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                   bool readonly) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = readonly ? KVM_MEM_READONLY : 0;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  kvm_ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region);
}

void KvmVm::create_irqchip() {
  kvm_ioctl(fd_.get(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", 0UL);
}

void KvmVm::irq_line(uint32_t irq, bool level) {
  kvm_irq_level line{};
  line.irq = irq;
  line.level = level ? 1 : 0;
  kvm_ioctl(fd_.get(), KVM_IRQ_LINE, "KVM_IRQ_LINE", &line);
}

void KvmVm::register_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  kvm_ioctl(fd_.get(), KVM_IRQFD, "KVM_IRQFD", &irqfd);
}

void KvmVm::register_irqfd(int eventfd, uint32_t gsi, int resamplefd) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_RESAMPLE;
  irqfd.resamplefd = static_cast<uint32_t>(resamplefd);
  kvm_ioctl(fd_.get(), KVM_IRQFD, "KVM_IRQFD (resample)", &irqfd);
}

void KvmVm::unregister_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  kvm_ioctl(fd_.get(), KVM_IRQFD, "KVM_IRQFD (deassign)", &irqfd);
}

void KvmVm::register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool mmio,
                               std::optional<uint64_t> datamatch) {
  kvm_ioeventfd io{};
  io.addr = addr;
  io.len = len;
  io.fd = eventfd;
  if (!mmio) io.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    io.datamatch = *datamatch;
  }
  kvm_ioctl(fd_.get(), KVM_IOEVENTFD, "KVM_IOEVENTFD", &io);
}

bool KvmVm::unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool mmio,
                                 std::optional<uint64_t> datamatch) {
  kvm_ioeventfd io{};
  io.addr = addr;
  io.len = len;
  io.fd = eventfd;
  io.flags = KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (!mmio) io.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    io.datamatch = *datamatch;
  }
  return ::ioctl(fd_.get(), KVM_IOEVENTFD, &io) == 0;
}

bool KvmVm::signal_msi(uint64_t address, uint32_t data, std::optional<uint32_t> devid) {
  kvm_msi msi{};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  if (devid) {
    msi.flags = KVM_MSI_VALID_DEVID;
    msi.devid = *devid;
  }
  return ::ioctl(fd_.get(), KVM_SIGNAL_MSI, &msi) > 0;
}

bool KvmVm::register_coalesced_pio(uint16_t port, uint32_t size) {
  if (check_extension(KVM_CAP_COALESCED_PIO) <= 0) return false;
  kvm_coalesced_mmio_zone zone{};
  zone.addr = port;
  zone.size = size;
  zone.pio = 1;
  return ::ioctl(fd_.get(), KVM_REGISTER_COALESCED_MMIO, &zone) == 0;
}

std::unique_ptr<KvmVcpu> KvmVm::create_vcpu(uint32_t index) const {
  const int fd =
      kvm_ioctl(fd_.get(), KVM_CREATE_VCPU, "KVM_CREATE_VCPU", static_cast<unsigned long>(index));
  UniqueFd vcpu_fd(fd);
  const auto size = static_cast<size_t>(kvm_->vcpu_mmap_size());
  void* run = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) throw_errno("KVM: mmap of the vCPU run structure");
  return std::make_unique<KvmVcpu>(index, std::move(vcpu_fd), static_cast<kvm_run*>(run), size);
}

// ---------------------------------------------------------------------------------------------
// KvmVcpu

KvmVcpu::KvmVcpu(uint32_t index, UniqueFd fd, kvm_run* run, size_t run_size)
    : index_(index), fd_(std::move(fd)), run_(run), run_size_(run_size) {}

KvmVcpu::~KvmVcpu() {
  ::munmap(run_, run_size_);
}

bool KvmVcpu::run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) == 0) return true;
  if (errno == EINTR || errno == EAGAIN) return false;
  throw_errno(fmt::format("KVM: KVM_RUN on vCPU {}", index_));
}

uint64_t KvmVcpu::get_one_reg(uint64_t id) const {
  if ((id & KVM_REG_SIZE_MASK) != KVM_REG_SIZE_U64) {
    throw std::invalid_argument(fmt::format("KVM_GET_ONE_REG {:#x}: not a 64-bit register", id));
  }
  uint64_t value = 0;
  kvm_one_reg reg{id, reinterpret_cast<uint64_t>(&value)};
  kvm_ioctl(fd_.get(), KVM_GET_ONE_REG, fmt::format("KVM_GET_ONE_REG {:#x}", id), &reg);
  return value;
}

void KvmVcpu::set_one_reg(uint64_t id, uint64_t value) {
  if ((id & KVM_REG_SIZE_MASK) != KVM_REG_SIZE_U64) {
    throw std::invalid_argument(fmt::format("KVM_SET_ONE_REG {:#x}: not a 64-bit register", id));
  }
  kvm_one_reg reg{id, reinterpret_cast<uint64_t>(&value)};
  kvm_ioctl(fd_.get(), KVM_SET_ONE_REG, fmt::format("KVM_SET_ONE_REG {:#x}", id), &reg);
}

}  // namespace libvmm
