// A virtIO 1.2 split virtqueue (spec §2.7) seen from the device side, over GuestMemory.
//
// The driver owns the descriptor table and the available ring; the device owns the used ring.
// Everything read from guest memory is a snapshot copied out through GuestMemory, validated
// before use: a malformed chain breaks the queue (pop() returns nothing and error() says why)
// instead of letting the guest steer the VMM outside its RAM, into a loop, or into a crash.
//
// Not thread-safe: the transport serializes every use of a queue (see virtio_device.hpp).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace libvmm {

class GuestMemory;

// One guest buffer of a descriptor chain, already checked to lie in guest RAM.
struct DescriptorSegment {
  uint64_t gpa = 0;
  uint32_t len = 0;
  bool device_writable = false;
};

// A chain popped from the available ring: its head index (what push() gives back) and its
// buffers, device-readable ones first, then device-writable ones (pop() enforces the order).
class DescriptorChain {
 public:
  DescriptorChain(const GuestMemory& memory, uint16_t head,
                  std::vector<DescriptorSegment> segments);

  uint16_t head() const { return head_; }
  std::span<const DescriptorSegment> segments() const { return segments_; }
  uint64_t readable_bytes() const { return readable_bytes_; }
  uint64_t writable_bytes() const { return writable_bytes_; }

  // Copies dst.size() bytes starting `offset` bytes into the readable part. False (and dst
  // unspecified) if the readable part is shorter than offset + dst.size().
  bool read_at(uint64_t offset, std::span<uint8_t> dst) const;
  // The whole readable part, or nullopt if it is longer than `max_bytes` (the guest chooses
  // the length: callers bound what they are willing to copy).
  std::optional<std::vector<uint8_t>> read_all(uint64_t max_bytes) const;
  // Copies src into the writable part starting `offset` bytes into it. False (nothing
  // written) if the writable part is shorter than offset + src.size().
  bool write_at(uint64_t offset, std::span<const uint8_t> src) const;
  // Host iovecs of the readable (or writable) part, for readv/writev-style backends.
  bool iovecs(bool writable, std::vector<iovec>& out) const;

 private:
  template <typename Copy>
  bool copy(bool writable, uint64_t offset, uint64_t len, Copy&& copy_one) const;

  const GuestMemory* memory_;
  uint16_t head_;
  std::vector<DescriptorSegment> segments_;
  uint64_t readable_bytes_ = 0;
  uint64_t writable_bytes_ = 0;
};

class Virtqueue {
 public:
  static constexpr uint16_t kMaxSize = 32768;  // split ring limit (spec §2.7)

  // `max_size` is what QueueNumMax reports: a power of two, 1..kMaxSize.
  Virtqueue(const GuestMemory& memory, uint16_t max_size);

  // --- Driver configuration, written through the transport while the queue is not ready.
  // Setters return false (and change nothing) while the queue is ready.
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  uint64_t desc_addr() const { return desc_addr_; }
  uint64_t avail_addr() const { return avail_addr_; }
  uint64_t used_addr() const { return used_addr_; }
  bool set_size(uint16_t size);
  bool set_desc_addr(uint64_t gpa);
  bool set_avail_addr(uint64_t gpa);
  bool set_used_addr(uint64_t gpa);

  // QueueReady = 1: checks size and ring placement against guest memory and the negotiated
  // features (EVENT_IDX adds a field to each ring; INDIRECT_DESC allows indirect tables), then
  // starts the queue at index 0. On failure stays not ready and says why in `error`.
  bool enable(uint64_t negotiated_features, std::string& error);
  bool ready() const { return ready_; }
  // A ready queue taken over where an earlier server of it stopped (a vhost-user back-end's
  // SET_VRING_BASE): the next chain comes from available entry `next_avail`, and used entries
  // go after the used index the ring holds. False if not ready or that index is unreadable.
  bool resume_at(uint16_t next_avail);
  // The free-running index of the next available entry pop() reads (GET_VRING_BASE's answer).
  uint16_t next_avail() const { return next_avail_; }
  // Back to the state after device reset: size = max_size, addresses 0, not ready, not broken.
  void reset();

  // --- Device side (only while ready).
  // The next available chain; nullopt when there is none, or when the queue is broken (the
  // driver put something malformed in it: error() says what, and the queue stays broken
  // until reset()).
  std::optional<DescriptorChain> pop();
  // Returns a chain to the driver with the number of bytes written into its writable part.
  // False if the queue is not ready or broken, or `head` is not a descriptor index.
  bool push(uint16_t head, uint32_t written_len);
  // After push()es: whether the driver wants an interrupt for them (VIRTIO_RING_F_EVENT_IDX's
  // used_event, else the NO_INTERRUPT flag). Consumes the pending used entries either way.
  bool needs_notification();
  // Asks the driver not to notify (kick) while the device is draining the queue anyway.
  void disable_notifications();
  // Asks for notifications again. True if buffers were made available in the meantime, in
  // which case the caller must pop() again (or it might sleep with work pending).
  bool enable_notifications();

  bool broken() const { return broken_; }
  const std::string& error() const { return error_; }

 private:
  // Guest-physical addresses of the ring fields (spec §2.7.6, §2.7.8).
  uint64_t avail_idx_gpa() const { return avail_addr_ + 2; }
  uint64_t avail_ring_gpa(uint16_t index) const { return avail_addr_ + 4 + 2ull * (index % size_); }
  uint64_t used_event_gpa() const { return avail_addr_ + 4 + 2ull * size_; }
  uint64_t used_flags_gpa() const { return used_addr_; }
  uint64_t used_idx_gpa() const { return used_addr_ + 2; }
  uint64_t used_ring_gpa(uint16_t index) const { return used_addr_ + 4 + 8ull * (index % size_); }
  uint64_t avail_event_gpa() const { return used_addr_ + 4 + 8ull * size_; }

  bool read_u16(uint64_t gpa, uint16_t& value);
  bool read_avail_idx(uint16_t& avail_idx);  // checked: forward, at most a queue's worth
  bool write_u16(uint64_t gpa, uint16_t value);
  std::optional<DescriptorChain> walk_chain(uint16_t head);
  bool fail(std::string message);  // marks the queue broken; always returns false

  const GuestMemory* memory_;
  uint16_t max_size_;

  // Configuration.
  uint16_t size_;
  uint64_t desc_addr_ = 0;
  uint64_t avail_addr_ = 0;
  uint64_t used_addr_ = 0;
  bool ready_ = false;
  bool event_idx_ = false;
  bool indirect_ = false;

  // Running state.
  uint16_t next_avail_ = 0;      // free-running index of the next avail ring entry to pop
  uint16_t avail_seen_ = 0;      // the driver's available index when last read
  uint16_t next_used_ = 0;       // free-running used idx the device publishes
  uint16_t signalled_used_ = 0;  // next_used_ when needs_notification() last answered
  bool pushed_since_signal_ = false;
  bool notifications_enabled_ = true;
  bool broken_ = false;
  std::string error_;
  std::vector<iovec> scratch_;  // reused by the writability check of each segment
};

}  // namespace libvmm
