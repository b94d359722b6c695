// Drives virtio-net receive the way a hostile driver and the host network could, interleaved:
// receive chains of any shape (mergeable buffers or not), notifications, frames of any size
// arriving from the backend (runts and oversized ones too), failing backend reads, the driver
// taking the receive queue down while a frame holds some of its buffers, device resets and a
// transport that stops serving. Checks that every frame the host gave is accounted for exactly
// once (delivered, counted as dropped for a reason, still in the host, or the one frame held
// for buffers), that used entries never claim more than the chain's room, and that the guest
// never gets more bytes than the host sent.
//
// Input: a selector (negotiated features), then operations of one byte each plus operands.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/net.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 256 * KiB;
constexpr uint64_t kRomBase = kRamSize;
constexpr uint64_t kRomSize = 4 * KiB;
constexpr uint16_t kRingSize = 32;
constexpr test::RingLayout kLayout{0x0, 0x200, 0x400, 0x1000};
constexpr size_t kMaxOps = 256;

// Frames from the host network, and reads that fail.
class HostNetwork final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t> buffer) override {
    if (fail) return -EIO;
    if (frames.empty()) return 0;
    const std::vector<uint8_t> frame = std::move(frames.front());
    frames.pop_front();
    runts += frame.size() < VirtioNet::kHeaderSize + VirtioNet::kEthernetHeader;
    const size_t n = std::min(frame.size(), buffer.size());
    if (n > 0) std::memcpy(buffer.data(), frame.data(), n);
    return static_cast<ssize_t>(n);
  }
  bool send(std::span<const iovec>) override { return true; }
  void set_offloads(uint64_t) override {}
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override { paused = true; }
  void resume_receive() override { paused = false; }
  std::string describe() const override { return "fuzz"; }

  std::deque<std::vector<uint8_t>> frames;
  bool fail = false;
  bool paused = false;
  uint64_t runts = 0;  // frames handed out too short to carry a header and an Ethernet header
};

// The descriptors a chain of `count` takes from `start` on, as a mask (the ring wraps).
uint32_t run_mask(uint16_t start, size_t count) {
  uint32_t mask = 0;
  for (size_t i = 0; i < count; ++i) mask |= 1u << ((start + i) % kRingSize);
  return mask;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static test::TestMemory memory(kRamSize, kRomBase, kRomSize);
  log::set_level(log::Level::error);  // guest errors are expected here
  fuzz::Input in(data, size);
  const uint8_t selector = in.u8();

  memory.fill(0, 0, kRamSize);
  auto host = std::make_shared<HostNetwork>();
  VirtioNet net(host, MacAddress{0x02, 0, 0, 0, 0, 1}, 1500);
  uint64_t features = net.device_features();
  if (selector & 1) features &= ~(1ull << VIRTIO_NET_F_MRG_RXBUF);
  if (selector & 2) features &= ~(1ull << VIRTIO_NET_F_GUEST_CSUM);
  if (selector & 4)
    features &= ~((1ull << VIRTIO_NET_F_GUEST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO6));
  if (selector & 8) features |= 1ull << VIRTIO_RING_F_INDIRECT_DESC;
  const uint64_t ring_features = features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);

  std::vector<Virtqueue> queues;
  queues.emplace_back(memory, VirtioNet::kQueueSize);
  queues.emplace_back(memory, VirtioNet::kQueueSize);
  test::DriverRing rx(memory, kRingSize, kLayout);
  test::DriverRing tx(memory, kRingSize, test::RingLayout::at(0x2000));
  test::FakeTransport transport;
  transport.serve(queues);
  std::array<uint64_t, kRingSize> room{};
  std::array<size_t, kRingSize> segments{};
  uint32_t busy = 0;  // descriptors the device may still hold
  uint16_t seen = 0;
  auto restart_rx = [&] {
    queues[0].reset();
    rx.restart();
    rx.configure(queues[0], ring_features);
    busy = 0;
    seen = 0;
  };
  restart_rx();
  tx.configure(queues[1], ring_features);
  net.activate(transport, features);

  uint64_t next_buffer = 0x4000;
  uint64_t given = 0, given_bytes = 0, delivered_bytes = 0;
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    switch (code & 7) {
      case 0: {  // the driver adds a receive chain
        const size_t count = 1 + in.u8() % 4;
        const uint32_t run = run_mask(rx.next_desc(), count);
        if (busy & run) break;  // the driver has no free descriptors there
        std::vector<test::Buffer> buffers;
        uint64_t chain_room = 0;
        for (size_t s = 0; s < count; ++s) {
          const uint8_t flags = in.u8();
          uint64_t len = in.u16() & 0x3fff;
          if (flags & 2) len = in.u32();
          uint64_t gpa = 0x4000 + (next_buffer + (flags >> 4) - 0x4000) % (kRamSize - 0x4000);
          if (flags & 4) gpa = kRomBase + (flags >> 4);
          const bool writable = !(flags & 1);  // mostly writable, as receive buffers are
          if (writable) chain_room += len;
          if (gpa < kRomBase) next_buffer = gpa + std::min<uint64_t>(len, kRamSize);
          buffers.push_back({gpa, static_cast<uint32_t>(len), writable});
        }
        const uint16_t head = rx.add_chain(buffers);
        room[head] = chain_room;
        segments[head] = count;
        busy |= run;
        break;
      }
      case 1:
        net.queue_notify(VirtioNet::kReceiveQueue, queues[0]);
        break;
      case 2: {  // a frame arrives: header bytes from the input, the rest a pattern
        size_t len = std::max<size_t>(in.u16(), 1);  // receive() says 0 for "none waiting"
        if (code & 0x10) len = VirtioNet::kMaxGsoFrame + VirtioNet::kHeaderSize - 64 + in.u8();
        std::vector<uint8_t> frame(len, 0x5a);
        const auto head = in.take(std::min<size_t>(len, 16));
        std::copy(head.begin(), head.end(), frame.begin());
        host->frames.push_back(std::move(frame));
        ++given;
        given_bytes += len;
        [[fallthrough]];
      }
      case 3:
        if (!host->paused || (code & 0x20)) net.backend_readable();
        break;
      case 4:
        host->fail = !host->fail;
        break;
      case 5:  // the driver takes the receive queue down and sets it up afresh
        net.queue_reset(VirtioNet::kReceiveQueue);
        restart_rx();
        break;
      case 6:
        net.reset();
        restart_rx();
        queues[1].reset();
        tx.restart();
        tx.configure(queues[1], ring_features);
        net.activate(transport, features);
        break;
      case 7:
        transport.live = !transport.live;
        break;
    }
    const uint16_t used = rx.used_idx();
    check(static_cast<uint16_t>(used - seen) <= kRingSize);
    for (; seen != used; ++seen) {
      const vring_used_elem elem = rx.used(seen);
      check(elem.id < kRingSize && elem.len <= room[elem.id]);
      delivered_bytes += elem.len;
      busy &= ~run_mask(elem.id, segments[elem.id]);
    }
    check(delivered_bytes <= given_bytes);
    // Every frame the host handed out was delivered, dropped for a reason, is the one held for
    // buffers, or was a runt (counted with failed reads, which take no frame).
    const NetCounters c = net.counters();
    const uint64_t handed = given - host->frames.size();
    const uint64_t settled = c.rx_frames + c.rx_too_big + c.rx_not_ready + c.rx_not_agreed;
    check(settled <= handed && handed - settled <= host->runts + 1);
  }
  net.reset();
  return 0;
}
