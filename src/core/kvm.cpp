#include "libvmm/core/kvm.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "libvmm/core/error.hpp"

namespace libvmm {
namespace {

template <typename... Args>
int checked_ioctl(int fd, unsigned long request, const char* what, Args... args) {
  int ret;
  do {
    ret = ::ioctl(fd, request, args...);
  } while (ret < 0 && errno == EINTR);
  if (ret < 0) throw_errno(std::string("KVM: ") + what);
  return ret;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Kvm

Kvm::Kvm(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CLOEXEC)) {
  if (!fd_) {
    const int err = errno;
    if (err == ENOENT) {
      throw UserError(fmt::format("{}: no such device: this host has no KVM (load kvm-intel or "
                                  "kvm-amd, or enable virtualization in the firmware)",
                                  path));
    }
    if (err == EACCES || err == EPERM) {
      throw UserError(fmt::format("{}: permission denied: run as root or add yourself to the "
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
  return checked_ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", 0);
}

#if defined(__x86_64__)
std::vector<kvm_cpuid_entry2> Kvm::supported_cpuid() const {
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
    cpuid->nent = n;
    if (::ioctl(fd_.get(), KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
      return {cpuid->entries, cpuid->entries + cpuid->nent};
    }
    if (errno != E2BIG) throw_errno("KVM: KVM_GET_SUPPORTED_CPUID");
  }
  throw SystemError("KVM: KVM_GET_SUPPORTED_CPUID", E2BIG);
}
#endif

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

void KvmVm::set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                   bool readonly) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = readonly ? KVM_MEM_READONLY : 0;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  checked_ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region);
}

void KvmVm::create_irqchip() { checked_ioctl(fd_.get(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", 0); }

#if defined(__x86_64__)
void KvmVm::set_tss_addr(uint64_t addr) {
  checked_ioctl(fd_.get(), KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", static_cast<unsigned long>(addr));
}

void KvmVm::set_identity_map_addr(uint64_t addr) {
  checked_ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &addr);
}

void KvmVm::create_pit2() {
  kvm_pit_config config{};
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  checked_ioctl(fd_.get(), KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &config);
}
#endif

void KvmVm::irq_line(uint32_t irq, bool level) {
  kvm_irq_level line{};
  line.irq = irq;
  line.level = level ? 1 : 0;
  checked_ioctl(fd_.get(), KVM_IRQ_LINE, "KVM_IRQ_LINE", &line);
}

void KvmVm::register_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  checked_ioctl(fd_.get(), KVM_IRQFD, "KVM_IRQFD", &irqfd);
}

void KvmVm::unregister_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  checked_ioctl(fd_.get(), KVM_IRQFD, "KVM_IRQFD (deassign)", &irqfd);
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
  checked_ioctl(fd_.get(), KVM_IOEVENTFD, "KVM_IOEVENTFD", &io);
}

std::unique_ptr<KvmVcpu> KvmVm::create_vcpu(uint32_t index) const {
  const int fd = checked_ioctl(fd_.get(), KVM_CREATE_VCPU, "KVM_CREATE_VCPU",
                               static_cast<unsigned long>(index));
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

KvmVcpu::~KvmVcpu() { ::munmap(run_, run_size_); }

bool KvmVcpu::run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) == 0) return true;
  if (errno == EINTR || errno == EAGAIN) return false;
  throw_errno(fmt::format("KVM: KVM_RUN on vCPU {}", index_));
}

#if defined(__x86_64__)
kvm_regs KvmVcpu::get_regs() const {
  kvm_regs regs{};
  checked_ioctl(fd_.get(), KVM_GET_REGS, "KVM_GET_REGS", &regs);
  return regs;
}
void KvmVcpu::set_regs(const kvm_regs& regs) {
  checked_ioctl(fd_.get(), KVM_SET_REGS, "KVM_SET_REGS", &regs);
}
kvm_sregs KvmVcpu::get_sregs() const {
  kvm_sregs sregs{};
  checked_ioctl(fd_.get(), KVM_GET_SREGS, "KVM_GET_SREGS", &sregs);
  return sregs;
}
void KvmVcpu::set_sregs(const kvm_sregs& sregs) {
  checked_ioctl(fd_.get(), KVM_SET_SREGS, "KVM_SET_SREGS", &sregs);
}
void KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + entries.size() * sizeof(kvm_cpuid_entry2));
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
  cpuid->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(cpuid->entries, entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  checked_ioctl(fd_.get(), KVM_SET_CPUID2, "KVM_SET_CPUID2", cpuid);
}
kvm_lapic_state KvmVcpu::get_lapic() const {
  kvm_lapic_state lapic{};
  checked_ioctl(fd_.get(), KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic);
  return lapic;
}
void KvmVcpu::set_lapic(const kvm_lapic_state& lapic) {
  checked_ioctl(fd_.get(), KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic);
}
void KvmVcpu::set_fpu(const kvm_fpu& fpu) { checked_ioctl(fd_.get(), KVM_SET_FPU, "KVM_SET_FPU", &fpu); }
void KvmVcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  std::vector<uint8_t> buf(sizeof(kvm_msrs) + msrs.size() * sizeof(kvm_msr_entry));
  auto* list = reinterpret_cast<kvm_msrs*>(buf.data());
  list->nmsrs = static_cast<uint32_t>(msrs.size());
  std::memcpy(list->entries, msrs.data(), msrs.size() * sizeof(kvm_msr_entry));
  const int n = checked_ioctl(fd_.get(), KVM_SET_MSRS, "KVM_SET_MSRS", list);
  if (static_cast<size_t>(n) != msrs.size()) {
    throw SystemError(fmt::format("KVM: KVM_SET_MSRS set {} of {} MSRs", n, msrs.size()), EINVAL);
  }
}
#endif

}  // namespace libvmm
