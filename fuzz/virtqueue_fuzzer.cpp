// Feeds arbitrary ring contents and queue configurations into Virtqueue, the way a hostile
// driver could, and checks that every chain pop() hands out lies in guest memory.
//
// Input: a short header (queue size, features, ring addresses), 32 operation bytes, then an
// image copied over guest RAM (descriptors, rings, indirect tables, buffers).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 64 * KiB;
constexpr uint64_t kRomSize = 4 * KiB;  // read-only, right after RAM: chains may straddle both
constexpr uint16_t kMaxQueueSize = 32;

void exercise(const GuestMemory& memory, Virtqueue& q, const DescriptorChain& chain) {
  check(chain.head() < q.size());
  check(!chain.segments().empty() && chain.segments().size() <= q.size());
  bool writable_seen = false;
  for (const auto& s : chain.segments()) {
    check(memory.contains(s.gpa, s.len));
    check(!(writable_seen && !s.device_writable));
    writable_seen |= s.device_writable;
  }
  check(chain.readable_bytes() + chain.writable_bytes() <= (1ull << 32));

  auto bytes = chain.read_all(1 * MiB);
  check(bytes.has_value());
  std::vector<uint8_t> reply(std::min<uint64_t>(chain.writable_bytes(), 512), 0xab);
  check(chain.write_at(0, reply));
  check(!chain.write_at(chain.writable_bytes() + 1, std::span<const uint8_t>(reply.data(), 0)));
  std::vector<iovec> iov;
  check(chain.iovecs(false, iov) && chain.iovecs(true, iov));
  q.push(chain.head(), static_cast<uint32_t>(reply.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static test::TestMemory memory(kRamSize, kRamSize, kRomSize);
  fuzz::Input in(data, size);

  const uint8_t size_sel = in.u8();
  const uint16_t queue_size =
      size_sel & 0x80 ? static_cast<uint16_t>(size_sel & 0x3f) : 1u << (size_sel % 6);
  const uint8_t feature_sel = in.u8();
  uint64_t features = 0;
  if (feature_sel & 1) features |= 1ull << VIRTIO_RING_F_INDIRECT_DESC;
  if (feature_sel & 2) features |= 1ull << VIRTIO_RING_F_EVENT_IDX;
  const uint64_t desc = in.u32();
  const uint64_t avail = in.u32();
  const uint64_t used = in.u16() | (feature_sel & 4 ? uint64_t{in.u16()} << 16 : 0);
  uint8_t ops[32];
  for (auto& op : ops) op = in.u8();

  const auto image = in.rest();
  memory.fill(0, 0, kRamSize);
  memory.write(0, image.data(), std::min<size_t>(image.size(), kRamSize));

  Virtqueue q(memory, kMaxQueueSize);
  q.set_size(queue_size);
  q.set_desc_addr(desc);
  q.set_avail_addr(avail);
  q.set_used_addr(used);
  std::string error;
  if (!q.enable(features, error)) return 0;

  // The driver's side of the same ring moves its available index, unless the ring sits in
  // read-only memory (the queue may read it there; the driver cannot write it).
  test::DriverRing driver(memory, queue_size, {desc, avail, used, 0});
  const bool driver_can_write = memory.slice(avail + 2, 2, /*for_write=*/true).has_value();

  for (const uint8_t op : ops) {
    switch (op & 3) {
      case 0:
        while (auto chain = q.pop()) exercise(memory, q, *chain);
        break;
      case 1:
        q.needs_notification();
        break;
      case 2:
        q.disable_notifications();
        break;
      case 3:
        q.enable_notifications();
        break;
    }
    // The driver publishes more (or jumps the index): avail idx += op >> 2, from what memory
    // holds (the device's used ring may overlap it).
    if (driver_can_write) {
      driver.set_avail_idx(static_cast<uint16_t>(*memory.load_u16(avail + 2) + (op >> 2)));
    }
    if (q.broken()) check(!q.pop().has_value() && !q.error().empty());
  }
  return 0;
}
