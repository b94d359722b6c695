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
#include <type_traits>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

// Host memory backing guest RAM or a shared region: a memfd, mapped MAP_SHARED into the VMM,
// so the same memory can also be handed to KVM, another mapping, or another process.
class MemoryRegion {
 public:
  // Creates a zero-filled region of `size` bytes (a multiple of the host page size).
  // `hugepages` asks for 2 MiB pages (MFD_HUGETLB); throws UserError if the host has none.
  static std::shared_ptr<MemoryRegion> create(std::string name, uint64_t size,
                                              bool hugepages = false);
  // Wraps an existing file descriptor (a host file or shared-memory object), mapped shared.
  static std::shared_ptr<MemoryRegion> from_fd(std::string name, UniqueFd fd, uint64_t size,
                                               bool writable = true);

  ~MemoryRegion();
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  uint8_t* host() const { return host_; }
  int fd() const { return fd_.get(); }

 private:
  MemoryRegion(std::string name, UniqueFd fd, uint8_t* host, uint64_t size);
  std::string name_;
  UniqueFd fd_;
  uint8_t* host_;
  uint64_t size_;
};

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
  // space, or lies outside `region`.
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
