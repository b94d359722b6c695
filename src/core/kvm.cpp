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

// The uapi headers declare their flexible arrays with __DECLARE_FLEX_ARRAY, which in C++ adds
// an empty struct member: kvm_cpuid2 and kvm_msrs get sizeof 12 and 16 instead of C's 8, the
// entries move, and the ioctl numbers (which encode sizeof) no longer match the kernel's. So
// these requests are built by hand in the C layout: an 8-byte header, then the entries.
struct FlexHeader {
  uint32_t count;
  uint32_t padding;
};
static_assert(sizeof(FlexHeader) == 8);
#if defined(__x86_64__)
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader);
#endif

// A C-layout request buffer: FlexHeader followed by `count` entries of T.
template <typename T>
class FlexRequest {
 public:
  explicit FlexRequest(size_t count) : bytes_(sizeof(FlexHeader) + count * sizeof(T)) {
    FlexHeader header{static_cast<uint32_t>(count), 0};
    std::memcpy(bytes_.data(), &header, sizeof header);
  }
  FlexRequest(const std::vector<T>& entries) : FlexRequest(entries.size()) {
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
  return checked_ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", 0);
}

#if defined(__x86_64__)
std::vector<kvm_cpuid_entry2> Kvm::supported_cpuid() const {
  for (size_t n = 64; n <= 4096; n *= 2) {
    FlexRequest<kvm_cpuid_entry2> request(n);
    if (::ioctl(fd_.get(), kGetSupportedCpuid, request.data()) == 0) return request.entries();
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

void KvmVm::create_irqchip() {
  checked_ioctl(fd_.get(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", 0);
}

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
#if defined(__aarch64__)
  // The vGIC takes a type and an INTID; `irq` is a GSI, and GSI n is SPI n (INTID n + 32).
  line.irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (irq + 32);
#endif
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

KvmVcpu::~KvmVcpu() {
  ::munmap(run_, run_size_);
}

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
  FlexRequest<kvm_cpuid_entry2> request(entries);
  checked_ioctl(fd_.get(), kSetCpuid2, "KVM_SET_CPUID2", request.data());
}
kvm_lapic_state KvmVcpu::get_lapic() const {
  kvm_lapic_state lapic{};
  checked_ioctl(fd_.get(), KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic);
  return lapic;
}
void KvmVcpu::set_lapic(const kvm_lapic_state& lapic) {
  checked_ioctl(fd_.get(), KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic);
}
void KvmVcpu::set_fpu(const kvm_fpu& fpu) {
  checked_ioctl(fd_.get(), KVM_SET_FPU, "KVM_SET_FPU", &fpu);
}
void KvmVcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  FlexRequest<kvm_msr_entry> request(msrs);
  const int n = checked_ioctl(fd_.get(), kSetMsrs, "KVM_SET_MSRS", request.data());
  if (static_cast<size_t>(n) != msrs.size()) {
    throw SystemError(fmt::format("KVM: KVM_SET_MSRS set {} of {} MSRs", n, msrs.size()), EINVAL);
  }
}
#endif

}  // namespace libvmm
