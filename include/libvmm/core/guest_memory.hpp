// Guest-physical memory: host memory regions mapped at guest-physical addresses, and the
// bounds-checked accessors through which everything else in the VMM touches guest RAM.
//
// The guest is untrusted: every address and length it hands us goes through these checks.
// Nothing outside this file computes host pointers from guest addresses.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

// How the host provides a region's memory. Every kind is mapped at a 2 MiB-aligned address, so
// that a huge page on the host can be a huge page in the guest's second-stage page tables.
enum class MemoryBacking : uint8_t {
  anonymous,  // private anonymous memory with MADV_HUGEPAGE (transparent huge pages where the
              // host's transparent_hugepage/enabled allows them); no file descriptor: fd() is -1
  memfd,      // a memfd (shmem) mapped shared, with MADV_HUGEPAGE (huge pages only where
              // transparent_hugepage/shmem_enabled allows them); an fd other processes can map
  hugetlb,    // a memfd of 2 MiB hugetlb pages, reserved when created; an fd as memfd
  file,       // a host file or shared-memory object (MemoryRegion::from_fd)
};
std::string_view backing_name(MemoryBacking backing);

// Host memory backing guest RAM or a shared region (see MemoryBacking), so that the same memory
// can be handed to KVM, to another mapping, or (all but anonymous) to another process.
class SigbusGuard;

class MemoryRegion {
 public:
  // Creates a zero-filled region of `size` bytes (a multiple of the host page size; of 2 MiB
  // for hugetlb). Throws UserError if the host cannot give hugetlb pages. Not for `file`.
  static std::shared_ptr<MemoryRegion> create(std::string name, uint64_t size,
                                              MemoryBacking backing);
  // A memfd region; `hugepages` asks for hugetlb (MFD_HUGETLB, 2 MiB pages).
  static std::shared_ptr<MemoryRegion> create(std::string name, uint64_t size,
                                              bool hugepages = false);
  // Wraps an existing file descriptor (a host file or shared-memory object), mapped shared.
  static std::shared_ptr<MemoryRegion> from_fd(std::string name, UniqueFd fd, uint64_t size,
                                               bool writable = true);
  // For a descriptor another process may shrink (a vhost-user front-end's): a SIGBUS in this
  // region no longer ends the process; the region turns into zero pages and `notify` (an
  // eventfd) is written (core/sigbus_guard.hpp). Until the region is destroyed.
  void guard_against_shrinking(int notify);
  bool shrunk() const;  // a guarded region's SIGBUS was caught

  ~MemoryRegion();
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  uint8_t* host() const { return host_; }
  int fd() const { return fd_.get(); }  // -1 for anonymous memory
  MemoryBacking backing() const { return backing_; }

 private:
  MemoryRegion(std::string name, UniqueFd fd, uint8_t* host, uint64_t size, MemoryBacking backing);
  std::string name_;
  UniqueFd fd_;
  uint8_t* host_;
  uint64_t size_;
  MemoryBacking backing_;
  std::unique_ptr<SigbusGuard> sigbus_guard_;  // released before the mapping
};

// Regions another process may make smaller (a `.system` file's host file or shm object): each
// is guarded against shrinking, and fd() becomes readable when one did, for the owner to stop
// what uses it (its pages read as zeros in this process from then on, no longer shared).
class RegionShrinkWatch {
 public:
  RegionShrinkWatch();  // throws SystemError when no eventfd can be made
  // The descriptor is kept open while a guarded region lives on: the guard writes to it.
  ~RegionShrinkWatch();
  RegionShrinkWatch(const RegionShrinkWatch&) = delete;
  RegionShrinkWatch& operator=(const RegionShrinkWatch&) = delete;

  // Guards `region`; false when it cannot be (it guards half of SigbusGuard::kMaxGuards
  // already, or no guard is left).
  bool add(const std::shared_ptr<MemoryRegion>& region);
  int fd() const { return fd_.get(); }
  // Empties the descriptor; the names of the regions that shrank since the last call.
  std::vector<std::string> take_shrunk();

 private:
  struct Watched {
    std::weak_ptr<MemoryRegion> region;
    bool reported = false;
  };
  UniqueFd fd_;
  std::vector<Watched> watched_;
};

// The host's transparent huge page settings (/sys/kernel/mm/transparent_hugepage/): `enabled`
// for anonymous memory, `shmem_enabled` for memfd. madvise: only for memory given
// MADV_HUGEPAGE, which is what MemoryRegion does (shmem's `advise` and `within_size` count as
// madvise; `force` as always; `deny` as never).
enum class ThpMode : uint8_t { never, madvise, always };
struct HostThp {
  ThpMode anon = ThpMode::never;
  ThpMode shmem = ThpMode::never;
  std::string anon_setting = "never";  // the selected word, for messages
  std::string shmem_setting = "never";
  // Reads them from `dir`; a missing file (no THP in the kernel) reads as never.
  static HostThp read(const std::string& dir = "/sys/kernel/mm/transparent_hugepage");
  // The selected word of a sysfs setting such as "always [madvise] never" ("never" if none).
  static std::string selected(std::string_view text);
  static ThpMode mode(std::string_view selected_word);
};

// The host's RAM in bytes (sysinfo's total; UINT64_MAX when it cannot say): what guest memory,
// mapped without a reservation, must not exceed.
uint64_t host_ram_size();

// What backs a VM's guest RAM (VmConfig::ram_backing).
enum class RamBacking : uint8_t {
  automatic,  // choose_ram_backing() decides
  anonymous,
  memfd,
  hugetlb,
};
// "auto", "anonymous", "memfd" or "hugetlb"; nullopt for anything else.
std::optional<RamBacking> parse_ram_backing(std::string_view text);
struct RamBackingChoice {
  MemoryBacking backing = MemoryBacking::memfd;
  std::string reason;  // why, for the -v line
};
// The backing for guest RAM: what was asked for, else the one that gets huge pages from this
// host's settings (anonymous memory first: no shmem bookkeeping), keeping a shareable fd when
// `needs_fd` (devices in other processes map guest RAM: vhost-user). nullopt with `problem` set
// when the request contradicts `needs_fd` (anonymous memory has no fd).
std::optional<RamBackingChoice> choose_ram_backing(RamBacking requested, bool needs_fd,
                                                   const HostThp& host, std::string& problem);
// A region for guest RAM (or a region only this process maps) backed as choose_ram_backing()
// says for this host, with one -v line naming the region, its backing and why. `what` starts
// messages ("guest RAM", "f.system:3: memory region 'ram'"). Throws UserError on a request
// that contradicts `needs_fd`, or when the host cannot give hugetlb pages.
std::shared_ptr<MemoryRegion> create_ram_region(std::string name, uint64_t size,
                                                RamBacking requested, bool needs_fd,
                                                std::string_view what);

// One guest-physical range backed by (part of) a MemoryRegion.
struct GuestMapping {
  uint64_t gpa = 0;
  uint64_t size = 0;
  std::shared_ptr<MemoryRegion> region;
  uint64_t region_offset = 0;
  bool readonly = false;  // read-only for the guest (and for devices writing on its behalf)

  uint64_t end() const { return gpa + size; }  // exclusive; mappings never wrap
  uint8_t* host() const { return region->host() + region_offset; }
};

template <typename T>
concept GuestPod = std::is_trivially_copyable_v<T> && std::is_standard_layout_v<T>;

class GuestMemory {
 public:
  // Adds a mapping. Throws UserError if it overlaps an existing one, wraps around the address
  // space, or lies outside `region`. The reference is valid until the next map() (the mappings
  // are kept sorted in a vector): copy what you keep.
  const GuestMapping& map(uint64_t gpa, std::shared_ptr<MemoryRegion> region,
                          uint64_t region_offset, uint64_t size, bool readonly = false);

  const std::vector<GuestMapping>& mappings() const { return mappings_; }

  // The mapping containing `gpa`, or nullptr.
  const GuestMapping* find(uint64_t gpa) const;

  // True if [gpa, gpa+len) is entirely guest memory (possibly across adjacent mappings).
  bool contains(uint64_t gpa, uint64_t len) const;

  // Host view of [gpa, gpa+len) when it lies inside a single mapping; nullopt otherwise
  // (out of range, wraps, spans a mapping boundary, or `for_write` on a read-only mapping).
  std::optional<std::span<uint8_t>> slice(uint64_t gpa, uint64_t len, bool for_write = false) const;

  // Appends host iovecs covering [gpa, gpa+len), split at mapping boundaries.
  // Returns false (and appends nothing) if any byte is not guest memory.
  bool iovecs(uint64_t gpa, uint64_t len, bool for_write, std::vector<iovec>& out) const;

  // Copies between guest memory and the host. False if any byte is outside guest memory
  // (nothing is copied then) or, for writes, inside a read-only mapping.
  bool read(uint64_t gpa, void* dst, uint64_t len) const;
  bool write(uint64_t gpa, const void* src, uint64_t len) const;
  bool fill(uint64_t gpa, uint8_t value, uint64_t len) const;

  // One atomic 16-bit access to a 2-byte aligned field: for fields the driver updates while
  // the device reads them (virtqueue indices and event fields). read() may copy byte by byte,
  // and a value torn between an old low byte and a new high byte looks like a corrupt ring.
  // nullopt / false if the field is not 2-byte aligned or not (writable) guest memory.
  std::optional<uint16_t> load_u16(uint64_t gpa,
                                   std::memory_order order = std::memory_order_acquire) const;
  bool store_u16(uint64_t gpa, uint16_t value,
                 std::memory_order order = std::memory_order_release) const;

  // Typed copies of plain structures. The guest can change memory at any time, so callers get
  // a snapshot by value, never a reference into guest memory.
  template <GuestPod T>
  std::optional<T> read_obj(uint64_t gpa) const {
    T value;
    if (!read(gpa, &value, sizeof(T))) return std::nullopt;
    return value;
  }
  template <GuestPod T>
  bool write_obj(uint64_t gpa, const T& value) const {
    return write(gpa, &value, sizeof(T));
  }

  // Total bytes of guest memory mapped.
  uint64_t total_size() const;

 private:
  std::vector<GuestMapping> mappings_;  // sorted by gpa, non-overlapping
};

}  // namespace libvmm
