#include "libvmm/core/coalesced_writes.hpp"

#include <linux/kvm.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/kvm.hpp"

namespace libvmm {
namespace {

// The ring's layout as the kernel's C compiler makes it: `first` and `last` (__u32 each), then
// the entries from byte 8. Not struct kvm_coalesced_mmio_ring's offsets: in C++ the uapi
// header's __DECLARE_FLEX_ARRAY adds an empty struct, which puts the entries at 16.
constexpr size_t kFirstOffset = 0;
constexpr size_t kLastOffset = 4;
constexpr size_t kEntriesOffset = 8;
static_assert(sizeof(kvm_coalesced_mmio) == 24 && offsetof(kvm_coalesced_mmio, len) == 8 &&
              offsetof(kvm_coalesced_mmio, data) == 16);

}  // namespace

CoalescedWrites::CoalescedWrites(std::span<uint8_t> page) : page_(page) {
  // KVM_COALESCED_MMIO_MAX, with this page's size for the kernel's PAGE_SIZE.
  if (page_.size() > kEntriesOffset) {
    capacity_ = static_cast<uint32_t>((page_.size() - kEntriesOffset) / sizeof(kvm_coalesced_mmio));
  }
}

CoalescedWrites::~CoalescedWrites() {
  if (mapped_) ::munmap(page_.data(), page_.size());
}

std::unique_ptr<CoalescedWrites> CoalescedWrites::map(const KvmVm& vm, int vcpu_fd) {
  // KVM_CAP_COALESCED_MMIO answers with the ring's page offset in a vCPU's mapping.
  const int page_offset = vm.check_extension(KVM_CAP_COALESCED_MMIO);
  if (page_offset <= 0) return nullptr;
  const auto page_size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* page = ::mmap(nullptr, page_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd,
                      static_cast<off_t>(page_offset) * static_cast<off_t>(page_size));
  if (page == MAP_FAILED) throw_errno("KVM: mmap of the coalesced-writes ring");
  auto writes =
      std::make_unique<CoalescedWrites>(std::span(static_cast<uint8_t*>(page), page_size));
  writes->mapped_ = true;
  return writes;
}

void CoalescedWrites::replay(const Bus* pio, const Bus* mmio) {
  if (capacity_ == 0) return;
  // KVM advances `last` after writing an entry; this side advances `first` after using one.
  // (Through void*: the page is page-aligned, which the compiler cannot know.)
  std::atomic_ref<uint32_t> last(
      *static_cast<uint32_t*>(static_cast<void*>(page_.data() + kLastOffset)));
  std::atomic_ref<uint32_t> first(
      *static_cast<uint32_t*>(static_cast<void*>(page_.data() + kFirstOffset)));
  if (first.load(std::memory_order_relaxed) == last.load(std::memory_order_acquire)) return;
  std::lock_guard lock(mutex_);
  uint32_t at = first.load(std::memory_order_relaxed);
  const uint32_t end = last.load(std::memory_order_acquire);
  // Indices from the kernel, checked all the same: a ring that makes no sense is left alone.
  if (at >= capacity_ || end >= capacity_) return;
  while (at != end) {
    kvm_coalesced_mmio entry;
    std::memcpy(&entry, page_.data() + kEntriesOffset + size_t{at} * sizeof entry, sizeof entry);
    const std::span<const uint8_t> data(entry.data,
                                        std::min<size_t>(entry.len, sizeof(entry.data)));
    const Bus* bus = entry.pio ? pio : mmio;
    if (bus != nullptr && !data.empty()) bus->write(entry.phys_addr, data);
    replayed_.fetch_add(1, std::memory_order_relaxed);
    at = (at + 1) % capacity_;
    first.store(at, std::memory_order_release);
  }
}

}  // namespace libvmm
