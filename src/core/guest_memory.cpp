#include "libvmm/core/guest_memory.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/memfd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/sigbus_guard.hpp"
#include "libvmm/core/size.hpp"

namespace libvmm {

// ---------------------------------------------------------------------------------------------
// MemoryRegion

MemoryRegion::MemoryRegion(std::string name, UniqueFd fd, uint8_t* host, uint64_t size,
                           MemoryBacking backing)
    : name_(std::move(name)), fd_(std::move(fd)), host_(host), size_(size), backing_(backing) {}

MemoryRegion::~MemoryRegion() {
  sigbus_guard_.reset();
  ::munmap(host_, size_);
}

void MemoryRegion::guard_against_shrinking(int notify) {
  sigbus_guard_ = std::make_unique<SigbusGuard>(host_, size_, notify);
}

bool MemoryRegion::shrunk() const {
  return sigbus_guard_ && sigbus_guard_->tripped();
}

RegionShrinkWatch::RegionShrinkWatch() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!fd_) throw_errno("eventfd for shared regions");
}

RegionShrinkWatch::~RegionShrinkWatch() {
  // A region still held elsewhere keeps its guard, which may yet write to the descriptor: left
  // open rather than closed under it (and reused for another file).
  for (const Watched& w : watched_) {
    if (!w.region.expired()) {
      static_cast<void>(fd_.release());
      return;
    }
  }
}

bool RegionShrinkWatch::add(const std::shared_ptr<MemoryRegion>& region) {
  // Half the process's guards at most: the rest are for what needs one later (each VM's kernel
  // and initrd while they load, a vhost-user back-end's regions).
  if (watched_.size() >= SigbusGuard::kMaxGuards / 2) return false;
  try {
    region->guard_against_shrinking(fd_.get());
  } catch (const std::runtime_error&) {
    return false;
  }
  watched_.push_back({region, false});
  return true;
}

std::vector<std::string> RegionShrinkWatch::take_shrunk() {
  uint64_t count = 0;
  static_cast<void>(::read(fd_.get(), &count, sizeof count));
  std::vector<std::string> names;
  for (Watched& w : watched_) {
    const auto region = w.region.lock();
    if (!region || w.reported || !region->shrunk()) continue;
    w.reported = true;
    names.push_back(region->name());
  }
  return names;
}

std::string_view backing_name(MemoryBacking backing) {
  switch (backing) {
    case MemoryBacking::anonymous:
      return "anonymous memory";
    case MemoryBacking::memfd:
      return "memfd";
    case MemoryBacking::hugetlb:
      return "memfd of 2 MiB hugetlb pages";
    case MemoryBacking::file:
      return "host file";
  }
  return "?";
}

namespace {

constexpr uint64_t kHugePage = 2 * MiB;

// mmap() at a 2 MiB-aligned address: KVM maps a host huge page as one second-stage huge page
// only where guest-physical and host-virtual addresses agree modulo 2 MiB, and guest RAM
// starts 2 MiB-aligned. A window 2 MiB larger is reserved, the mapping placed inside it, and
// what is left of the window unmapped. Returns MAP_FAILED (errno set) on failure.
void* mmap_aligned(uint64_t size, int prot, int flags, int fd) {
  void* window = ::mmap(nullptr, size + kHugePage, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (window == MAP_FAILED) return MAP_FAILED;
  const auto start = reinterpret_cast<uintptr_t>(window);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  void* host = ::mmap(reinterpret_cast<void*>(aligned), size, prot, flags | MAP_FIXED, fd, 0);
  if (host == MAP_FAILED) {
    const int err = errno;
    ::munmap(window, size + kHugePage);
    errno = err;
    return MAP_FAILED;
  }
  if (aligned > start) ::munmap(window, aligned - start);
  // The mapping covers whole pages: what is left of the window starts at its last page's end
  // (munmap refuses an address inside a page, which left the tail reserved for good).
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t mapped_end = (aligned + size + page - 1) & ~(page - 1);
  const uintptr_t end = start + size + kHugePage;
  if (mapped_end < end) ::munmap(reinterpret_cast<void*>(mapped_end), end - mapped_end);
  return host;
}

}  // namespace

std::shared_ptr<MemoryRegion> MemoryRegion::create(std::string name, uint64_t size,
                                                   bool hugepages) {
  return create(std::move(name), size, hugepages ? MemoryBacking::hugetlb : MemoryBacking::memfd);
}

std::shared_ptr<MemoryRegion> MemoryRegion::create(std::string name, uint64_t size,
                                                   MemoryBacking backing) {
  if (backing == MemoryBacking::file) {
    throw std::logic_error("MemoryRegion::create: a file region comes from from_fd()");
  }
  const bool hugetlb = backing == MemoryBacking::hugetlb;
  const uint64_t page = hugetlb ? kHugePage : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (size == 0 || size % page != 0) {
    throw UserError(
        fmt::format("memory region '{}': size {:#x} is not a non-zero multiple of the "
                    "page size {:#x}",
                    name, size, page));
  }
  UniqueFd fd;
  if (backing != MemoryBacking::anonymous) {
    unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    if (hugetlb) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
    // (memfd_create refuses names over 249 bytes; the name is only for /proc's eyes.)
    fd = UniqueFd(::memfd_create(name.substr(0, 200).c_str(), flags));
    if (!fd && hugetlb && errno == EINVAL) {  // Linux < 4.16: hugetlb memfds take no seals
      fd = UniqueFd(::memfd_create(name.substr(0, 200).c_str(), flags & ~MFD_ALLOW_SEALING));
    }
    if (!fd) {
      if (hugetlb) {
        throw UserError(
            fmt::format("memory region '{}': the host cannot give 2 MiB huge pages ({}); "
                        "reserve some (/proc/sys/vm/nr_hugepages), or drop page_size (.system) or "
                        "--memory-backing hugetlb",
                        name, std::strerror(errno)));
      }
      throw_errno(fmt::format("memory region '{}': memfd_create", name));
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      throw_errno(fmt::format("memory region '{}': ftruncate to {:#x}", name, size));
    }
    // Its size for good: a process it is shared with (a vhost-user back-end) cannot shrink it
    // under this one (whose next access there would be a SIGBUS), nor add seals of its own.
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
      // (Linux before 4.16 seals no hugetlb memfd.) Rare, and worth a word where it happens.
      log::warn(
          "memory region '{}': its memfd cannot be sealed ({}): a process it is shared with "
          "(a vhost-user back-end) could make it smaller, which would end vmm with SIGBUS",
          name, std::strerror(errno));
    }
  }
  // MAP_NORESERVE: guest RAM is populated on demand, like any process's memory. Not for huge
  // pages: without a reservation a missing huge page is a SIGBUS later, not an error now.
  const int reserve = hugetlb ? 0 : MAP_NORESERVE;
  const int kind = backing == MemoryBacking::anonymous ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED;
  void* host = mmap_aligned(size, PROT_READ | PROT_WRITE, kind | reserve, fd.get());
  if (host == MAP_FAILED) {
    if (hugetlb && errno == ENOMEM) {
      throw UserError(
          fmt::format("memory region '{}': not enough free 2 MiB huge pages for {} "
                      "(see /proc/sys/vm/nr_hugepages)",
                      name, format_size(size)));
    }
    throw_errno(fmt::format("memory region '{}': mmap of {:#x} bytes", name, size));
  }
  // Transparent huge pages where the host's settings allow them for advised memory (a no-op
  // where they are `never`; hugetlb pages are huge already).
  if (!hugetlb && ::madvise(host, size, MADV_HUGEPAGE) != 0 && errno != EINVAL) {
    log::debug("memory region '{}': madvise(MADV_HUGEPAGE): {}", name, std::strerror(errno));
  }
  return std::shared_ptr<MemoryRegion>(
      new MemoryRegion(std::move(name), std::move(fd), static_cast<uint8_t*>(host), size, backing));
}

std::shared_ptr<MemoryRegion> MemoryRegion::from_fd(std::string name, UniqueFd fd, uint64_t size,
                                                    bool writable) {
  if (size == 0) throw UserError(fmt::format("memory region '{}': size is zero", name));
  const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* host = mmap_aligned(size, prot, MAP_SHARED, fd.get());
  if (host == MAP_FAILED) throw_errno(fmt::format("memory region '{}': mmap", name));
  return std::shared_ptr<MemoryRegion>(new MemoryRegion(
      std::move(name), std::move(fd), static_cast<uint8_t*>(host), size, MemoryBacking::file));
}

// ---------------------------------------------------------------------------------------------
// Choosing guest RAM's backing

std::string HostThp::selected(std::string_view text) {
  const size_t open = text.find('[');
  const size_t close = open == std::string_view::npos ? open : text.find(']', open);
  if (close == std::string_view::npos) return "never";
  return std::string(text.substr(open + 1, close - open - 1));
}

ThpMode HostThp::mode(std::string_view word) {
  if (word == "always" || word == "force") return ThpMode::always;
  if (word == "madvise" || word == "advise" || word == "within_size") return ThpMode::madvise;
  return ThpMode::never;  // never, deny, anything unknown
}

uint64_t host_ram_size() {
  struct sysinfo info {};
  if (::sysinfo(&info) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(info.totalram) * info.mem_unit;
}

HostThp HostThp::read(const std::string& dir) {
  auto setting = [&](const char* file) {
    std::ifstream in(fmt::format("{}/{}", dir, file));
    std::string text;
    std::getline(in, text);
    return selected(text);
  };
  HostThp host;
  host.anon_setting = setting("enabled");
  host.shmem_setting = setting("shmem_enabled");
  host.anon = mode(host.anon_setting);
  host.shmem = mode(host.shmem_setting);
  return host;
}

std::optional<RamBacking> parse_ram_backing(std::string_view text) {
  if (text == "auto") return RamBacking::automatic;
  if (text == "anonymous") return RamBacking::anonymous;
  if (text == "memfd") return RamBacking::memfd;
  if (text == "hugetlb") return RamBacking::hugetlb;
  return std::nullopt;
}

std::optional<RamBackingChoice> choose_ram_backing(RamBacking requested, bool needs_fd,
                                                   const HostThp& host, std::string& problem) {
  const std::string anon_thp = fmt::format("transparent_hugepage/enabled={}", host.anon_setting);
  const std::string shmem_thp =
      fmt::format("transparent_hugepage/shmem_enabled={}", host.shmem_setting);
  const bool anon_huge = host.anon != ThpMode::never;
  const bool shmem_huge = host.shmem != ThpMode::never;
  const char* fd_why = "a shareable file descriptor is needed (devices in other processes)";
  auto shmem_pages = [&] {
    return fmt::format("{} pages ({})", shmem_huge ? "transparent huge" : "4 KiB", shmem_thp);
  };
  switch (requested) {
    case RamBacking::hugetlb:
      return RamBackingChoice{MemoryBacking::hugetlb, "asked for (2 MiB hugetlb pages)"};
    case RamBacking::memfd:
      return RamBackingChoice{MemoryBacking::memfd, fmt::format("asked for; {}", shmem_pages())};
    case RamBacking::anonymous:
      if (needs_fd) {
        problem = fmt::format(
            "anonymous memory has no file descriptor, and {}; use memfd or "
            "hugetlb",
            fd_why);
        return std::nullopt;
      }
      return RamBackingChoice{MemoryBacking::anonymous,
                              fmt::format("asked for; {} pages ({})",
                                          anon_huge ? "transparent huge" : "4 KiB", anon_thp)};
    case RamBacking::automatic:
      break;
  }
  if (needs_fd) {
    return RamBackingChoice{MemoryBacking::memfd, fmt::format("{}; {}", fd_why, shmem_pages())};
  }
  if (anon_huge) {
    return RamBackingChoice{MemoryBacking::anonymous,
                            fmt::format("transparent huge pages ({}); no fd needed", anon_thp)};
  }
  if (shmem_huge) {
    return RamBackingChoice{
        MemoryBacking::memfd,
        fmt::format("transparent huge pages ({}; {}); no fd needed", shmem_thp, anon_thp)};
  }
  return RamBackingChoice{
      MemoryBacking::anonymous,
      fmt::format("no transparent huge pages on this host ({}, {}); no fd needed", anon_thp,
                  shmem_thp)};
}

std::shared_ptr<MemoryRegion> create_ram_region(std::string name, uint64_t size,
                                                RamBacking requested, bool needs_fd,
                                                std::string_view what) {
  std::string problem;
  const auto choice = choose_ram_backing(requested, needs_fd, HostThp::read(), problem);
  if (!choice) throw UserError(fmt::format("{}: {}", what, problem));
  auto region = MemoryRegion::create(std::move(name), size, choice->backing);
  log::debug("{} ({}): {}: {}", what, format_size(size), backing_name(choice->backing),
             choice->reason);
  return region;
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
