// Feeds virtio-net transmit chains built from fuzz input into VirtioNet, the way a hostile
// driver could, and checks that every chain comes back, every frame the backend gets starts
// with a sane header, and nothing larger than the device allows leaves.
//
// Input: a selector byte (which features were negotiated, indirect descriptors or not), then up
// to 8 chains, each a segment count and per segment a flags byte, a length and, for
// device-readable segments, its bytes (the header and the frame).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 256 * KiB;
constexpr uint64_t kRomBase = kRamSize;  // read-only, right after RAM
constexpr uint64_t kRomSize = 4 * KiB;
constexpr uint16_t kQueueSize = 128;
constexpr test::RingLayout kLayout{0x0, 0x800, 0xc00, 0x2000};
constexpr size_t kMaxChains = 8;

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

struct Guest {
  test::TestMemory memory{kRamSize, kRomBase, kRomSize};
  std::shared_ptr<CheckingBackend> backend = std::make_shared<CheckingBackend>();
  VirtioNet device{backend, MacAddress{0x02, 0, 0, 0, 0, 1}, 1500};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Guest guest;
  fuzz::Input in(data, size);

  const uint8_t selector = in.u8();
  uint64_t features = guest.device.device_features();
  if (selector & 0x01) features &= ~(1ull << VIRTIO_NET_F_CSUM);
  if (selector & 0x02) features &= ~(1ull << VIRTIO_NET_F_HOST_TSO4);
  if (selector & 0x04) features &= ~(1ull << VIRTIO_NET_F_HOST_TSO6);
  const uint64_t ring_features = selector & 0x08 ? 1ull << VIRTIO_RING_F_INDIRECT_DESC : 0;

  guest.memory.fill(0, 0, kRamSize);
  test::DriverRing ring(guest.memory, kQueueSize, kLayout);
  Virtqueue queue(guest.memory, kQueueSize);
  ring.configure(queue, ring_features);
  test::FakeTransport transport;
  guest.device.activate(transport, features);

  uint64_t next_buffer = kLayout.buffers;
  size_t descriptors = 0;
  size_t chains = 0;
  const size_t wanted = 1 + in.u8() % kMaxChains;
  for (; chains < wanted && !in.empty(); ++chains) {
    const size_t segments = std::min<size_t>(1 + in.u8() % kQueueSize, kQueueSize - descriptors);
    if (segments == 0) break;
    descriptors += segments;
    std::vector<test::Buffer> buffers;
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
      buffers.push_back({gpa, static_cast<uint32_t>(len), (flags & 1) != 0});
    }
    ring.add_chain(buffers);
  }

  guest.device.queue_notify(VirtioNet::kTransmitQueue, queue);

  // Every well-formed chain came back with nothing written (transmit buffers are read-only).
  const uint16_t used_idx = ring.used_idx();
  check(used_idx <= chains);
  for (uint16_t i = 0; i < used_idx; ++i) check(ring.used(i).len == 0);
  guest.device.reset();
  return 0;
}
