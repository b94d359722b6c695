#include "libvmm/core/guest_memory.hpp"

#include <fmt/format.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "libvmm/core/error.hpp"

namespace libvmm {

// ---------------------------------------------------------------------------------------------
// MemoryRegion

MemoryRegion::MemoryRegion(std::string name, UniqueFd fd, uint8_t* host, uint64_t size)
    : name_(std::move(name)), fd_(std::move(fd)), host_(host), size_(size) {}

MemoryRegion::~MemoryRegion() {
  ::munmap(host_, size_);
}

std::shared_ptr<MemoryRegion> MemoryRegion::create(std::string name, uint64_t size,
                                                   bool hugepages) {
  const uint64_t page = hugepages ? 2 * MiB : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (size == 0 || size % page != 0) {
    throw UserError(
        fmt::format("memory region '{}': size {:#x} is not a non-zero multiple of the "
                    "page size {:#x}",
                    name, size, page));
  }
  unsigned flags = MFD_CLOEXEC;
  if (hugepages) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  UniqueFd fd(::memfd_create(name.c_str(), flags));
  if (!fd) {
    if (hugepages) {
      throw UserError(
          fmt::format("memory region '{}': the host cannot give 2 MiB huge pages ({}); "
                      "reserve some (/proc/sys/vm/nr_hugepages) or drop page_size",
                      name, std::strerror(errno)));
    }
    throw_errno(fmt::format("memory region '{}': memfd_create", name));
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    throw_errno(fmt::format("memory region '{}': ftruncate to {:#x}", name, size));
  }
  // MAP_NORESERVE: guest RAM is populated on demand, like any process's memory. Not for huge
  // pages: without a reservation a missing huge page is a SIGBUS later, not an error now.
  const int reserve = hugepages ? 0 : MAP_NORESERVE;
  void* host = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | reserve, fd.get(), 0);
  if (host == MAP_FAILED) {
    if (hugepages && errno == ENOMEM) {
      throw UserError(
          fmt::format("memory region '{}': not enough free 2 MiB huge pages for {} MiB "
                      "(see /proc/sys/vm/nr_hugepages)",
                      name, size / MiB));
    }
    throw_errno(fmt::format("memory region '{}': mmap of {:#x} bytes", name, size));
  }
  return std::shared_ptr<MemoryRegion>(
      new MemoryRegion(std::move(name), std::move(fd), static_cast<uint8_t*>(host), size));
}

std::shared_ptr<MemoryRegion> MemoryRegion::from_fd(std::string name, UniqueFd fd, uint64_t size,
                                                    bool writable) {
  if (size == 0) throw UserError(fmt::format("memory region '{}': size is zero", name));
  const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* host = ::mmap(nullptr, size, prot, MAP_SHARED, fd.get(), 0);
  if (host == MAP_FAILED) throw_errno(fmt::format("memory region '{}': mmap", name));
  return std::shared_ptr<MemoryRegion>(
      new MemoryRegion(std::move(name), std::move(fd), static_cast<uint8_t*>(host), size));
}

// ---------------------------------------------------------------------------------------------
// GuestMemory

const GuestMapping& GuestMemory::map(uint64_t gpa, std::shared_ptr<MemoryRegion> region,
                                     uint64_t region_offset, uint64_t size, bool readonly) {
  if (!region) throw UserError("guest memory: mapping without a region");
  if (size == 0)
    throw UserError(fmt::format("guest memory: empty mapping of '{}'", region->name()));
  if (gpa + size < gpa) {
    throw UserError(fmt::format("guest memory: mapping of '{}' at {:#x} wraps the address space",
                                region->name(), gpa));
  }
  if (region_offset > region->size() || size > region->size() - region_offset) {
    throw UserError(
        fmt::format("guest memory: mapping of {:#x} bytes at offset {:#x} is larger "
                    "than region '{}' ({:#x} bytes)",
                    size, region_offset, region->name(), region->size()));
  }
  for (const auto& m : mappings_) {
    if (gpa < m.end() && m.gpa < gpa + size) {
      throw UserError(
          fmt::format("guest memory: '{}' at [{:#x}, {:#x}) overlaps '{}' at [{:#x}, {:#x})",
                      region->name(), gpa, gpa + size, m.region->name(), m.gpa, m.end()));
    }
  }
  GuestMapping mapping{gpa, size, std::move(region), region_offset, readonly};
  auto pos = std::upper_bound(mappings_.begin(), mappings_.end(), gpa,
                              [](uint64_t a, const GuestMapping& m) { return a < m.gpa; });
  return *mappings_.insert(pos, std::move(mapping));
}

const GuestMapping* GuestMemory::find(uint64_t gpa) const {
  auto it = std::upper_bound(mappings_.begin(), mappings_.end(), gpa,
                             [](uint64_t a, const GuestMapping& m) { return a < m.gpa; });
  if (it == mappings_.begin()) return nullptr;
  --it;
  return gpa < it->end() ? &*it : nullptr;
}

bool GuestMemory::iovecs(uint64_t gpa, uint64_t len, bool for_write,
                         std::vector<iovec>& out) const {
  if (gpa + len < gpa) return false;
  const size_t first = out.size();
  while (len > 0) {
    const GuestMapping* m = find(gpa);
    if (m == nullptr || (for_write && m->readonly)) {
      out.resize(first);
      return false;
    }
    const uint64_t offset = gpa - m->gpa;
    const uint64_t chunk = std::min(len, m->size - offset);
    out.push_back(iovec{m->host() + offset, chunk});
    gpa += chunk;
    len -= chunk;
  }
  return true;
}

bool GuestMemory::contains(uint64_t gpa, uint64_t len) const {
  if (gpa + len < gpa) return false;
  while (len > 0) {
    const GuestMapping* m = find(gpa);
    if (m == nullptr) return false;
    const uint64_t chunk = std::min(len, m->end() - gpa);
    gpa += chunk;
    len -= chunk;
  }
  return true;
}

std::optional<std::span<uint8_t>> GuestMemory::slice(uint64_t gpa, uint64_t len,
                                                     bool for_write) const {
  if (gpa + len < gpa) return std::nullopt;
  const GuestMapping* m = find(gpa);
  if (m == nullptr || (for_write && m->readonly)) return std::nullopt;
  const uint64_t offset = gpa - m->gpa;
  if (len > m->size - offset) return std::nullopt;
  return std::span<uint8_t>(m->host() + offset, len);
}

bool GuestMemory::read(uint64_t gpa, void* dst, uint64_t len) const {
  if (auto s = slice(gpa, len)) {  // the common case: one mapping
    std::memcpy(dst, s->data(), len);
    return true;
  }
  std::vector<iovec> iov;
  if (!iovecs(gpa, len, false, iov)) return false;
  auto* out = static_cast<uint8_t*>(dst);
  for (const auto& v : iov) {
    std::memcpy(out, v.iov_base, v.iov_len);
    out += v.iov_len;
  }
  return true;
}

bool GuestMemory::write(uint64_t gpa, const void* src, uint64_t len) const {
  if (auto s = slice(gpa, len, true)) {
    std::memcpy(s->data(), src, len);
    return true;
  }
  std::vector<iovec> iov;
  if (!iovecs(gpa, len, true, iov)) return false;
  const auto* in = static_cast<const uint8_t*>(src);
  for (const auto& v : iov) {
    std::memcpy(v.iov_base, in, v.iov_len);
    in += v.iov_len;
  }
  return true;
}

bool GuestMemory::fill(uint64_t gpa, uint8_t value, uint64_t len) const {
  std::vector<iovec> iov;
  if (!iovecs(gpa, len, true, iov)) return false;
  for (const auto& v : iov) std::memset(v.iov_base, value, v.iov_len);
  return true;
}

// The host view of a 2-byte aligned guest field (host alignment follows, since mappings start
// on page boundaries of their regions; checked anyway).
static uint16_t* aligned_u16(const std::optional<std::span<uint8_t>>& s) {
  if (!s || reinterpret_cast<uintptr_t>(s->data()) % alignof(uint16_t) != 0) return nullptr;
  return static_cast<uint16_t*>(static_cast<void*>(s->data()));
}

std::optional<uint16_t> GuestMemory::load_u16(uint64_t gpa, std::memory_order order) const {
  if (gpa % 2 != 0) return std::nullopt;
  uint16_t* field = aligned_u16(slice(gpa, 2));
  if (field == nullptr) return std::nullopt;
  return std::atomic_ref<uint16_t>(*field).load(order);
}

bool GuestMemory::store_u16(uint64_t gpa, uint16_t value, std::memory_order order) const {
  if (gpa % 2 != 0) return false;
  uint16_t* field = aligned_u16(slice(gpa, 2, true));
  if (field == nullptr) return false;
  std::atomic_ref<uint16_t>(*field).store(value, order);
  return true;
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const auto& m : mappings_) total += m.size;
  return total;
}

}  // namespace libvmm
