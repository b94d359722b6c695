#include "libvmm/virtio/virtqueue.hpp"

// The header's legacy vring_init() does not compile as C++; we only need the ABI.
#define VIRTIO_RING_NO_LEGACY
#include <fmt/format.h>
#include <linux/virtio_ring.h>

#include <algorithm>
#include <atomic>
#include <bit>

#include "libvmm/core/guest_memory.hpp"

namespace libvmm {

// virtIO 1.x rings are little-endian; so are the hosts we run on, so fields are used as read.
static_assert(std::endian::native == std::endian::little);
static_assert(sizeof(vring_desc) == 16 && sizeof(vring_used_elem) == 8);

// ---------------------------------------------------------------------------------------------
// DescriptorChain

DescriptorChain::DescriptorChain(const GuestMemory& memory, uint16_t head,
                                 std::vector<DescriptorSegment> segments)
    : memory_(&memory), head_(head), segments_(std::move(segments)) {
  for (const auto& s : segments_) (s.device_writable ? writable_bytes_ : readable_bytes_) += s.len;
}

// Walks the readable (or writable) segments as one byte stream, calling
// copy_one(gpa, position in the caller's buffer, length) for each piece of
// [offset, offset + len). Checks the bounds before copying anything.
template <typename Copy>
bool DescriptorChain::copy(bool writable, uint64_t offset, uint64_t len, Copy&& copy_one) const {
  const uint64_t available = writable ? writable_bytes_ : readable_bytes_;
  if (offset > available || len > available - offset) return false;
  uint64_t done = 0;
  for (const auto& s : segments_) {
    if (done == len) break;
    if (s.device_writable != writable) continue;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(s.len - offset, len - done);
    if (!copy_one(s.gpa + offset, done, n)) return false;
    done += n;
    offset = 0;
  }
  return done == len;
}

bool DescriptorChain::read_at(uint64_t offset, std::span<uint8_t> dst) const {
  return copy(false, offset, dst.size(), [&](uint64_t gpa, uint64_t pos, uint64_t n) {
    return memory_->read(gpa, dst.data() + pos, n);
  });
}

std::optional<std::vector<uint8_t>> DescriptorChain::read_all(uint64_t max_bytes) const {
  if (readable_bytes_ > max_bytes) return std::nullopt;
  std::vector<uint8_t> bytes(readable_bytes_);
  if (!read_at(0, bytes)) return std::nullopt;
  return bytes;
}

bool DescriptorChain::write_at(uint64_t offset, std::span<const uint8_t> src) const {
  return copy(true, offset, src.size(), [&](uint64_t gpa, uint64_t pos, uint64_t n) {
    return memory_->write(gpa, src.data() + pos, n);
  });
}

bool DescriptorChain::iovecs(bool writable, std::vector<iovec>& out) const {
  const size_t first = out.size();
  for (const auto& s : segments_) {
    if (s.device_writable != writable || s.len == 0) continue;
    if (!memory_->iovecs(s.gpa, s.len, writable, out)) {
      out.resize(first);
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Virtqueue: configuration

Virtqueue::Virtqueue(const GuestMemory& memory, uint16_t max_size)
    : memory_(&memory), max_size_(max_size), size_(max_size) {}

bool Virtqueue::set_size(uint16_t size) {
  if (ready_) return false;
  size_ = size;
  return true;
}

bool Virtqueue::set_desc_addr(uint64_t gpa) {
  if (ready_) return false;
  desc_addr_ = gpa;
  return true;
}

bool Virtqueue::set_avail_addr(uint64_t gpa) {
  if (ready_) return false;
  avail_addr_ = gpa;
  return true;
}

bool Virtqueue::set_used_addr(uint64_t gpa) {
  if (ready_) return false;
  used_addr_ = gpa;
  return true;
}

bool Virtqueue::enable(uint64_t negotiated_features, std::string& error) {
  if (ready_) return true;
  if (size_ == 0 || size_ > max_size_ || !std::has_single_bit(size_)) {
    error = fmt::format("queue size {} is not a power of two between 1 and QueueNumMax {}", size_,
                        max_size_);
    return false;
  }
  const bool event_idx = negotiated_features & (1ull << VIRTIO_RING_F_EVENT_IDX);
  const uint64_t event_field = event_idx ? 2 : 0;  // used_event / avail_event (spec §2.7.10)

  // Alignment and sizes from spec §2.7 (table "Virtqueue Part Alignment and Size").
  struct Area {
    const char* name;
    uint64_t gpa;
    uint64_t size;
    uint64_t align;
    bool device_writes;
  };
  const Area areas[] = {
      {"descriptor table", desc_addr_, 16ull * size_, 16, false},
      {"available ring", avail_addr_, 4 + 2ull * size_ + event_field, 2, false},
      {"used ring", used_addr_, 4 + 8ull * size_ + event_field, 4, true},
  };
  for (const auto& a : areas) {
    if (a.gpa % a.align != 0) {
      error = fmt::format("{} at {:#x} is not {}-byte aligned", a.name, a.gpa, a.align);
      return false;
    }
    scratch_.clear();
    const bool in_ram = a.device_writes ? memory_->iovecs(a.gpa, a.size, true, scratch_)
                                        : memory_->contains(a.gpa, a.size);
    if (!in_ram) {
      error = fmt::format("{} [{:#x}, +{:#x}) is not {}guest RAM", a.name, a.gpa, a.size,
                          a.device_writes ? "writable " : "");
      return false;
    }
  }

  event_idx_ = event_idx;
  indirect_ = negotiated_features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
  next_avail_ = avail_seen_ = 0;
  next_used_ = 0;
  signalled_used_ = 0;
  pushed_since_signal_ = false;
  notifications_enabled_ = true;
  broken_ = false;
  error_.clear();
  ready_ = true;
  return true;
}

bool Virtqueue::resume_at(uint16_t next_avail) {
  if (!ready_) return false;
  uint16_t used_idx = 0;
  if (!read_u16(used_idx_gpa(), used_idx)) return false;
  next_avail_ = avail_seen_ = next_avail;
  next_used_ = signalled_used_ = used_idx;
  return true;
}

void Virtqueue::reset() {
  size_ = max_size_;
  desc_addr_ = avail_addr_ = used_addr_ = 0;
  ready_ = false;
  event_idx_ = indirect_ = false;
  next_avail_ = avail_seen_ = next_used_ = signalled_used_ = 0;
  pushed_since_signal_ = false;
  notifications_enabled_ = true;
  broken_ = false;
  error_.clear();
}

// ---------------------------------------------------------------------------------------------
// Virtqueue: device side

bool Virtqueue::fail(std::string message) {
  if (!broken_) error_ = std::move(message);
  broken_ = true;
  return false;
}

// Ring indices and event fields change under us while the driver runs: each is read and
// written as one atomic 16-bit access (enable() checked the rings' alignment, which makes every
// such field 2-byte aligned). The rings were checked at enable() and guest RAM does not move,
// so these only fail if the memory map changed under us; the queue breaks rather than trusting
// stale state.
bool Virtqueue::read_u16(uint64_t gpa, uint16_t& value) {
  if (auto v = memory_->load_u16(gpa)) {
    value = *v;
    return true;
  }
  return fail(fmt::format("cannot read ring field at {:#x}", gpa));
}

bool Virtqueue::write_u16(uint64_t gpa, uint16_t value) {
  if (memory_->store_u16(gpa, value)) return true;
  return fail(fmt::format("cannot write ring field at {:#x}", gpa));
}

// The driver's available index only moves forward, to at most a queue's worth past the next
// entry we take (spec §2.7.6, §2.7.13): further, or back, breaks the queue. Back matters too: a
// guest that flipped it (here: its used ring's flags laid over the available index, which
// disable/enable_notifications then wrote) kept a device's drain loop taking nothing forever.
bool Virtqueue::read_avail_idx(uint16_t& avail_idx) {
  if (!read_u16(avail_idx_gpa(), avail_idx)) return false;
  const auto pending = static_cast<uint16_t>(avail_idx - next_avail_);
  const auto seen = static_cast<uint16_t>(avail_seen_ - next_avail_);
  if (pending > size_) {
    return fail(fmt::format("available index moved from {} to {}, more than the queue size {}",
                            next_avail_, avail_idx, size_));
  }
  if (pending < seen) {
    return fail(fmt::format("available index went back from {} to {}", avail_seen_, avail_idx));
  }
  avail_seen_ = avail_idx;
  return true;
}

std::optional<DescriptorChain> Virtqueue::pop() {
  if (!ready_ || broken_) return std::nullopt;
  uint16_t avail_idx = 0;
  if (!read_avail_idx(avail_idx)) return std::nullopt;
  const auto pending = static_cast<uint16_t>(avail_idx - next_avail_);
  if (pending == 0) return std::nullopt;
  // A driver has at most a queue's worth of buffers out: each head is one descriptor, in use
  // until the device returns it. Another while every one is out repeats a head the device
  // still holds; devices that hold buffers (sound, net receive, the console) would hold it
  // again, and again, with no bound on host memory.
  if (static_cast<uint16_t>(next_avail_ - next_used_) >= size_) {
    fail(
        fmt::format("available entry {} while all {} buffers are with the device: a "
                    "descriptor made available twice",
                    next_avail_, size_));
    return std::nullopt;
  }
  // Read the ring entry and descriptors only after the index that published them.
  std::atomic_thread_fence(std::memory_order_acquire);

  uint16_t head = 0;
  if (!read_u16(avail_ring_gpa(next_avail_), head)) return std::nullopt;
  if (head >= size_) {
    fail(fmt::format("available ring entry {} names descriptor {}, past the queue size {}",
                     next_avail_, head, size_));
    return std::nullopt;
  }
  auto chain = walk_chain(head);
  if (!chain) return std::nullopt;
  ++next_avail_;
  // EVENT_IDX: "kick me when you make entry next_avail_ available" (spec §2.7.10).
  if (event_idx_ && notifications_enabled_) {
    if (!write_u16(avail_event_gpa(), next_avail_)) return std::nullopt;
    // The next pop's look at the available index comes after this store is visible. The driver
    // does the reverse (stores the index, full barrier, reads avail_event): without a full
    // barrier here too, both could read the other's old value, and nobody kicks the queue.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  return chain;
}

// Follows NEXT links from `head`, through at most one indirect table, checking each
// descriptor against the rules of spec §2.7.5 before any of it is used.
std::optional<DescriptorChain> Virtqueue::walk_chain(uint16_t head) {
  std::vector<DescriptorSegment> segments;
  uint64_t table = desc_addr_;
  uint32_t table_entries = size_;
  // At most a ring's worth of descriptors, so that a NEXT loop ends; in an indirect table, up
  // to QueueNumMax in all: a device may advertise seg_max for its largest queue (vhost-user:
  // the front-end chooses the ring size, QEMU 128 where our block device says 254 segments),
  // and the table's own length bounds a loop inside it.
  uint32_t max_segments = size_;
  bool in_indirect = false;
  bool seen_writable = false;
  uint64_t total_len = 0;
  uint32_t index = head;

  auto bad = [&](std::string what) {
    fail(fmt::format("chain at descriptor {}: {}", head, what));
    return std::nullopt;
  };

  for (;;) {
    const uint64_t gpa = table + 16ull * index;
    const auto desc = memory_->read_obj<vring_desc>(gpa);
    if (!desc) return bad(fmt::format("descriptor at {:#x} is outside guest RAM", gpa));
    const uint16_t flags = desc->flags;

    if (flags & VRING_DESC_F_INDIRECT) {
      if (!indirect_) return bad("indirect descriptor, but INDIRECT_DESC was not negotiated");
      if (in_indirect) return bad("indirect descriptor inside an indirect table");
      if (flags & VRING_DESC_F_NEXT) return bad("descriptor has both INDIRECT and NEXT");
      if (desc->len == 0 || desc->len % sizeof(vring_desc) != 0) {
        return bad(
            fmt::format("indirect table length {} is not a non-zero multiple of 16", desc->len));
      }
      if (!memory_->contains(desc->addr, desc->len)) {
        return bad(fmt::format("indirect table [{:#x}, +{:#x}) is not in guest RAM", desc->addr,
                               desc->len));
      }
      // The device ignores the WRITE flag of the descriptor that points at a table.
      table = desc->addr;
      table_entries = desc->len / sizeof(vring_desc);
      max_segments = max_size_;  // enable() checked size_ <= max_size_
      in_indirect = true;
      index = 0;
      continue;
    }

    // Every buffer counts against the bound, so a NEXT loop ends here too.
    if (segments.size() == max_segments) {
      return bad(fmt::format("more than {} descriptors ({}): a loop?", max_segments,
                             in_indirect ? "QueueNumMax" : "the queue size"));
    }
    const bool writable = flags & VRING_DESC_F_WRITE;
    if (!writable && seen_writable) return bad("device-readable descriptor after a writable one");
    seen_writable |= writable;
    bool in_ram = true;
    if (writable) {
      scratch_.clear();
      in_ram = memory_->iovecs(desc->addr, desc->len, true, scratch_);
    } else {
      in_ram = memory_->contains(desc->addr, desc->len);
    }
    if (!in_ram) {
      return bad(fmt::format("buffer [{:#x}, +{:#x}) is not {}guest RAM", desc->addr, desc->len,
                             writable ? "writable " : ""));
    }
    total_len += desc->len;
    if (total_len > (1ull << 32)) return bad("chain is longer than 4 GiB");
    segments.push_back({desc->addr, desc->len, writable});

    if (!(flags & VRING_DESC_F_NEXT)) break;
    if (desc->next >= table_entries) {
      return bad(fmt::format("next index {} is past the end of the {}table ({} entries)",
                             desc->next, in_indirect ? "indirect " : "", table_entries));
    }
    index = desc->next;
  }
  return DescriptorChain(*memory_, head, std::move(segments));
}

bool Virtqueue::push(uint16_t head, uint32_t written_len) {
  if (!ready_ || broken_ || head >= size_) return false;
  const vring_used_elem elem{head, written_len};
  if (!memory_->write_obj(used_ring_gpa(next_used_), elem)) {
    return fail(fmt::format("cannot write used ring entry {}", next_used_));
  }
  ++next_used_;
  // The driver must see the element before the index that publishes it.
  std::atomic_thread_fence(std::memory_order_release);
  if (!write_u16(used_idx_gpa(), next_used_)) return false;
  pushed_since_signal_ = true;
  return true;
}

bool Virtqueue::needs_notification() {
  if (!ready_ || broken_ || !pushed_since_signal_) return false;
  pushed_since_signal_ = false;
  // Our used idx store must be visible before we read the driver's suppression fields, and
  // the driver orders the other way round: otherwise both sides could skip the notification.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old = signalled_used_;
  signalled_used_ = next_used_;
  if (event_idx_) {
    uint16_t used_event = 0;
    if (!read_u16(used_event_gpa(), used_event)) return false;
    return vring_need_event(used_event, next_used_, old);
  }
  uint16_t flags = 0;
  if (!read_u16(avail_addr_, flags)) return false;
  return !(flags & VRING_AVAIL_F_NO_INTERRUPT);
}

void Virtqueue::disable_notifications() {
  if (!ready_ || broken_) return;
  notifications_enabled_ = false;
  // With EVENT_IDX, leaving avail_event behind is enough: the driver kicks at most once more.
  if (!event_idx_) write_u16(used_flags_gpa(), VRING_USED_F_NO_NOTIFY);
}

bool Virtqueue::enable_notifications() {
  if (!ready_ || broken_) return false;
  notifications_enabled_ = true;
  if (event_idx_) {
    if (!write_u16(avail_event_gpa(), next_avail_)) return false;
  } else {
    if (!write_u16(used_flags_gpa(), 0)) return false;
  }
  // Publish the request before looking again, or a buffer added just before it is missed.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t avail_idx = 0;
  if (!read_avail_idx(avail_idx)) return false;
  return avail_idx != next_avail_;
}

}  // namespace libvmm
