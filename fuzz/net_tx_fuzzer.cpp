// Feeds virtio-net transmit chains built from fuzz input into VirtioNet, the way a hostile
// driver could, and checks that every chain comes back, every frame the backend gets starts
// with a sane header, and nothing larger than the device allows leaves.
//
// Input: a selector byte (which features were negotiated, indirect descriptors or not), then up
// to 8 chains, each a segment count and per segment a flags byte, a length and, for
// device-readable segments, its bytes (the header and the frame).
#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_ring.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "libvmm/backends/net_backend.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/virtqueue.hpp"

using namespace libvmm;

namespace {

constexpr uint64_t kRamSize = 256 * KiB;
constexpr uint64_t kRomBase = kRamSize;  // read-only, right after RAM
constexpr uint64_t kRomSize = 4 * KiB;
constexpr uint16_t kQueueSize = 128;
constexpr uint64_t kDesc = 0x0;
constexpr uint64_t kAvail = 0x800;
constexpr uint64_t kUsed = 0xc00;
constexpr uint64_t kBuffers = 0x2000;
constexpr size_t kMaxChains = 8;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
  uint32_t u32() { return u16() | static_cast<uint32_t>(u16()) << 16; }
  std::span<const uint8_t> take(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    const auto bytes = std::span(data_ + pos_, n);
    pos_ += n;
    return bytes;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Checks each frame the device lets out.
class CheckingBackend final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t>) override { return 0; }
  bool send(std::span<const iovec> iov) override {
    check(!iov.empty() && iov[0].iov_len == VirtioNet::kHeaderSize);
    virtio_net_hdr_v1 header;
    std::memcpy(&header, iov[0].iov_base, sizeof header);
    check((header.flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) == 0 && header.num_buffers == 0);
    uint64_t frame = 0;
    for (size_t i = 1; i < iov.size(); ++i) {
      frame += iov[i].iov_len;
      if (iov[i].iov_len == 0) continue;
      volatile uint8_t touch = static_cast<const uint8_t*>(iov[i].iov_base)[iov[i].iov_len - 1];
      static_cast<void>(touch);  // ASan: every byte handed out is host memory we own
    }
    check(frame >= VirtioNet::kEthernetHeader && frame <= VirtioNet::kMaxGsoFrame);
    if (header.gso_type == VIRTIO_NET_HDR_GSO_NONE) check(frame <= 1500 + 18);
    if (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      check(uint64_t{header.csum_start} + header.csum_offset + 2 <= frame);
    }
    return true;
  }
  void set_offloads(uint64_t) override {}
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override {}
  void resume_receive() override {}
  std::string describe() const override { return "fuzz"; }
};

class NullTransport final : public VirtioTransport {
 public:
  void signal_used(uint16_t) override {}
  void signal_config_change() override {}
  bool with_queues(const std::function<void(std::span<Virtqueue>)>&) override { return false; }
};

struct Guest {
  Guest() {
    memory.map(0, MemoryRegion::create("fuzz-ram", kRamSize), 0, kRamSize);
    memory.map(kRomBase, MemoryRegion::create("fuzz-rom", kRomSize), 0, kRomSize, true);
  }
  GuestMemory memory;
  std::shared_ptr<CheckingBackend> backend = std::make_shared<CheckingBackend>();
  VirtioNet device{backend, MacAddress{0x02, 0, 0, 0, 0, 1}, 1500};
  NullTransport transport;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Guest guest;
  Reader in(data, size);

  const uint8_t selector = in.u8();
  uint64_t features = guest.device.device_features();
  if (selector & 0x01) features &= ~(1ull << VIRTIO_NET_F_CSUM);
  if (selector & 0x02) features &= ~(1ull << VIRTIO_NET_F_HOST_TSO4);
  if (selector & 0x04) features &= ~(1ull << VIRTIO_NET_F_HOST_TSO6);
  const uint64_t ring_features = selector & 0x08 ? 1ull << VIRTIO_RING_F_INDIRECT_DESC : 0;

  guest.memory.fill(0, 0, kRamSize);
  Virtqueue queue(guest.memory, kQueueSize);
  queue.set_desc_addr(kDesc);
  queue.set_avail_addr(kAvail);
  queue.set_used_addr(kUsed);
  std::string error;
  check(queue.enable(ring_features, error));
  guest.device.activate(guest.transport, features);

  uint64_t next_buffer = kBuffers;
  uint16_t next_desc = 0;
  size_t chains = 0;
  const size_t wanted = 1 + in.u8() % kMaxChains;
  for (; chains < wanted && !in.empty(); ++chains) {
    const size_t segments = std::min<size_t>(1 + in.u8() % kQueueSize, kQueueSize - next_desc);
    if (segments == 0) break;
    const uint16_t head = next_desc;
    for (size_t s = 0; s < segments; ++s) {
      const uint8_t flags = in.u8();
      uint64_t len = in.u16();
      uint64_t gpa = next_buffer + (flags >> 4);
      if (flags & 2) len = in.u32();  // any length: the queue must refuse bad ones
      if (flags & 4) gpa = kRomBase + (flags >> 4);
      if (!(flags & 1)) {
        const auto content = in.take(std::min<uint64_t>(len, 4096));
        guest.memory.write(gpa, content.data(), content.size());
      }
      if (gpa < kRomBase) next_buffer = std::min(gpa + len, kRamSize - 1);
      const bool last = s + 1 == segments;
      const uint16_t index = next_desc++;
      uint16_t desc_flags = (flags & 1) ? VRING_DESC_F_WRITE : 0;
      if (!last) desc_flags |= VRING_DESC_F_NEXT;
      guest.memory.write_obj(kDesc + 16ull * index,
                             vring_desc{gpa, static_cast<uint32_t>(len), desc_flags,
                                        static_cast<uint16_t>(next_desc % kQueueSize)});
    }
    guest.memory.write_obj<uint16_t>(kAvail + 4 + 2ull * chains, head);
  }
  guest.memory.write_obj<uint16_t>(kAvail + 2, static_cast<uint16_t>(chains));

  guest.device.queue_notify(VirtioNet::kTransmitQueue, queue);

  // Every well-formed chain came back with nothing written (transmit buffers are read-only).
  const uint16_t used_idx = *guest.memory.read_obj<uint16_t>(kUsed + 2);
  check(used_idx <= chains);
  for (uint16_t i = 0; i < used_idx; ++i) {
    check(guest.memory.read_obj<vring_used_elem>(kUsed + 4 + 8ull * i)->len == 0);
  }
  guest.device.reset();
  return 0;
}
