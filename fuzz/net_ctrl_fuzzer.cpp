// Feeds virtio-net control-queue chains built from fuzz input into a multiqueue VirtioNet (two
// queue pairs, each on its own backend), or a two-pair VhostNet (vhost=on, the control queue
// served by vmm; stand-in kernel devices), the way a hostile driver could: every chain comes
// back with at most its status byte written; a status byte is OK or ERR; the active pair count
// stays 1 or 2, and (VirtioNet) the second backend is attached exactly while its pair is active
// (and never detached while its reads are watched); a frame sent on the second pair's transmit
// queue leaves only through the second backend, and only while that pair is active.
//
// Input: a selector byte (MQ negotiated or not, indirect descriptors or not, VhostNet or
// VirtioNet), then up to 8 chains, each a segment count and per segment a flags byte, a length
// and, for device-readable segments, its bytes (class, command, data). Bit 0x10 of the selector
// also puts a frame on the second pair's transmit queue after the commands (VirtioNet).
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/backends/tap_backend.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/vhost_net.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 1 * MiB;
constexpr uint64_t kRomBase = kRamSize;  // read-only, right after RAM
constexpr uint64_t kRomSize = 4 * KiB;
constexpr size_t kMaxChains = 8;
constexpr uint16_t kPairs = 2;
constexpr uint16_t kQueues = 2 * kPairs + 1;  // rx0 tx0 rx1 tx1 ctrl
constexpr uint16_t kCtrl = kQueues - 1;

// Records what the device does with it: frames sent, attachment and whether reads are watched.
class RecordingBackend final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t>) override { return 0; }
  bool send(std::span<const iovec>) override {
    ++sent;
    return true;
  }
  void set_offloads(uint64_t) override {}
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override { paused = true; }
  void resume_receive() override { paused = false; }
  void set_enabled(bool on) override {
    check(on || paused);  // detached only once its reads are no longer watched
    enabled = on;
  }
  std::string describe() const override { return "fuzz"; }

  size_t sent = 0;
  bool paused = false;
  bool enabled = true;
};

// /dev/vhost-net as far as VhostNet can tell: every call succeeds.
class NullKernel final : public VhostNetKernel {
 public:
  void set_owner() override {}
  uint64_t get_features() override {
    return 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_RING_F_INDIRECT_DESC |
           1ull << VIRTIO_RING_F_EVENT_IDX | 1ull << VIRTIO_NET_F_MRG_RXBUF;
  }
  void set_features(uint64_t) override {}
  void set_mem_table(std::span<const vhost_kernel::MemoryRegion>) override {}
  void set_vring_num(uint32_t, uint32_t) override {}
  void set_vring_base(uint32_t, uint32_t) override {}
  uint32_t get_vring_base(uint32_t) override { return 0; }
  void set_vring_addr(const vhost_kernel::VringAddr&) override {}
  void set_vring_kick(uint32_t, int) override {}
  void set_vring_call(uint32_t, int) override {}
  void set_vring_err(uint32_t, int) override {}
  void set_backend(uint32_t, int) override {}
  void set_vring_busyloop_timeout(uint32_t, uint32_t) override {}
};

struct Guest {
  Guest() {
    // As VirtioNet::start() leaves a pair the driver has not asked for (no loop runs here).
    b1->paused = true;
    b1->enabled = false;
    // VhostNet's pairs: a socket pair stands in for each TAP queue; its queues' eventfds.
    std::vector<VhostNetPair> pairs;
    for (uint16_t p = 0; p < kPairs; ++p) {
      int fds[2];
      check(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0);
      peers.emplace_back(fds[1]);
      pairs.push_back(
          {std::make_unique<NullKernel>(), std::make_shared<TapBackend>(UniqueFd(fds[0]), "fuzz")});
    }
    vhost = std::make_shared<VhostNet>(VhostNetOptions{}, std::move(pairs), memory);
    std::vector<QueueEventfds> wired;
    for (uint16_t q = 0; q < kQueues; ++q) {
      eventfds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      wired.push_back({eventfds.back().get(), eventfds.back().get()});
    }
    vhost->set_queue_eventfds(wired);
  }
  test::TestMemory memory{kRamSize, kRomBase, kRomSize};
  std::shared_ptr<RecordingBackend> b0 = std::make_shared<RecordingBackend>();
  std::shared_ptr<RecordingBackend> b1 = std::make_shared<RecordingBackend>();
  VirtioNet device{std::vector<std::shared_ptr<NetBackend>>{b0, b1},
                   MacAddress{0x02, 0, 0, 0, 0, 1}, 1500};
  std::vector<UniqueFd> peers, eventfds;
  std::shared_ptr<VhostNet> vhost;
};

uint64_t ring_features_of(uint8_t selector) {
  return selector & 0x08 ? 1ull << VIRTIO_RING_F_INDIRECT_DESC : 0;
}

test::RingLayout layout_of(uint16_t queue) {
  return test::RingLayout::at(queue * 0x30000ull);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Guest guest;
  fuzz::Input in(data, size);

  const uint8_t selector = in.u8();
  const bool use_vhost = (selector & 0x20) != 0;
  VirtioDevice& device = use_vhost ? static_cast<VirtioDevice&>(*guest.vhost) : guest.device;
  auto active_pairs = [&] {
    return use_vhost ? guest.vhost->active_pairs() : guest.device.active_queue_pairs();
  };
  uint64_t features = device.device_features();
  if (selector & 0x01) features &= ~(1ull << VIRTIO_NET_F_MQ);
  const bool mq = (features & (1ull << VIRTIO_NET_F_MQ)) != 0;
  const uint64_t ring_features = ring_features_of(selector);
  // Without MQ the control queue is the third (virtIO 1.2 §5.1.2).
  const uint16_t ctrl = mq ? kCtrl : 2;

  guest.memory.fill(0, 0, kRamSize);
  const std::vector<uint16_t> sizes = device.queue_max_sizes();
  check(sizes.size() == kQueues);
  std::vector<Virtqueue> queues;
  std::vector<test::DriverRing> rings;
  for (uint16_t q = 0; q < kQueues; ++q) {
    queues.emplace_back(guest.memory, sizes[q]);
    rings.emplace_back(guest.memory, sizes[q], layout_of(q));
    rings.back().configure(queues.back(), ring_features);
  }
  test::FakeTransport transport;
  transport.serve(queues);
  if (use_vhost) {
    std::string why;
    check(guest.vhost->start_queues(transport, features, queues, why));
  } else {
    guest.device.activate(transport, features);
  }
  check(active_pairs() == 1 && !guest.b1->enabled);

  test::DriverRing& ring = rings[ctrl];
  const uint64_t buffers = layout_of(ctrl).buffers;
  const uint64_t buffers_end = layout_of(ctrl + 1).desc;
  uint64_t next_buffer = buffers;
  size_t descriptors = 0;
  size_t chains = 0;
  std::vector<uint64_t> status_bytes;  // each chain's last writable byte, poisoned
  const size_t wanted = 1 + in.u8() % kMaxChains;
  for (; chains < wanted && !in.empty(); ++chains) {
    const size_t segments = std::min<size_t>(1 + in.u8() % 4, ring.size() - descriptors);
    if (segments == 0) break;
    descriptors += segments;
    std::vector<test::Buffer> chain;
    for (size_t s = 0; s < segments; ++s) {
      const uint8_t flags = in.u8();
      uint64_t len = in.u8();
      uint64_t gpa = next_buffer + (flags >> 4);
      if (flags & 2) len = in.u32();  // any length: the queue must refuse bad ones
      if (flags & 4) gpa = kRomBase + (flags >> 4);
      if (!(flags & 1)) {
        const auto content = in.take(std::min<uint64_t>(len, 512));
        guest.memory.write(gpa, content.data(), content.size());
      } else if (gpa < kRomBase && len >= 1 && gpa + len <= buffers_end) {
        const uint8_t poison = 0xee;
        guest.memory.write(gpa + len - 1, &poison, 1);
        status_bytes.push_back(gpa + len - 1);
      }
      if (gpa < kRomBase) next_buffer = std::min(gpa + len, buffers_end);
      chain.push_back({gpa, static_cast<uint32_t>(len), (flags & 1) != 0});
    }
    ring.add_chain(chain);
  }
  device.queue_notify(ctrl, queues[ctrl]);

  // Every chain that came back wrote at most its status byte, and that is OK or ERR.
  const uint16_t used_idx = ring.used_idx();
  check(used_idx <= chains);
  for (uint16_t i = 0; i < used_idx; ++i) check(ring.used(i).len <= 1);
  for (const uint64_t at : status_bytes) {
    uint8_t status = 0;
    check(guest.memory.read(at, &status, 1));
    check(status == 0xee || status == VIRTIO_NET_OK || status == VIRTIO_NET_ERR);
  }
  const size_t active = active_pairs();
  check(active >= 1 && active <= kPairs);
  check(mq || active == 1);
  check(use_vhost || guest.b1->enabled == (active == 2));

  // A frame on pair 1's transmit queue leaves through pair 1's backend, only while it is active.
  if ((selector & 0x10) && !use_vhost) {
    const size_t before0 = guest.b0->sent, before1 = guest.b1->sent;
    std::vector<uint8_t> frame(VirtioNet::kHeaderSize + 60, 0);
    test::DriverRing& tx1 = rings[3];
    tx1.add_chain({{tx1.place(frame), static_cast<uint32_t>(frame.size()), false}});
    guest.device.queue_notify(3, queues[3]);
    check(guest.b0->sent == before0);
    check(guest.b1->sent == before1 + (mq && active == 2 ? 1 : 0));
  }
  device.reset();
  check(active_pairs() == 1 && !guest.b1->enabled);
  return 0;
}
