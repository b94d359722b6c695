// devices_bench: the VMM's own CPU cost per I/O request, on the host, without KVM: one virtIO
// request at a time through the split virtqueue and the device model, with a null backend that
// moves no data, so what is measured is ours alone (chain validation, request parsing, guest
// memory checks, the used ring, the interrupt decision).
//   - virtio-blk: a 4 KiB read and a 4 KiB write (header, data, status), carried out inside
//     queue_notify() (iothread=off), and with the device's I/O thread (iothread=on: the same
//     work plus waking the thread and waiting for it, so more wall time than CPU);
//   - virtio-net: a 1500-byte frame transmitted (header + frame in one buffer), and one
//     received into a posted buffer.
// The driver's side is the shared virtIO test kit (tests/unit/support/virtio_kit.hpp): a
// well-behaved driver that posts one chain, notifies, and reads the used ring.
// Usage: devices_bench [Google Benchmark flags, e.g. --benchmark_repetitions=5]
// See docs/PERFORMANCE.md ("The device models' own cost").
#define VIRTIO_RING_NO_LEGACY
#include <benchmark/benchmark.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "libvmm/backends/block_backend.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/net.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;

namespace {

constexpr uint64_t kRamSize = 4 * MiB;
constexpr uint64_t kRing = 0x10000;

constexpr uint64_t bit(unsigned n) {
  return 1ull << n;
}

// A disk that stores nothing and reads nothing: requests succeed at once.
class NullBlockBackend final : public BlockBackend {
 public:
  uint64_t size() const override { return 1ull << 30; }
  bool readonly() const override { return false; }
  int read(uint64_t, std::span<iovec>) override { return 0; }
  int write(uint64_t, std::span<iovec>) override { return 0; }
  int flush() override { return 0; }
  int discard(uint64_t, uint64_t) override { return 0; }
  int write_zeroes(uint64_t, uint64_t, bool) override { return 0; }
};

// A network that accepts every frame and, when asked, has one frame of `frame_len` bytes.
class NullNetBackend final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t> buffer) override {
    if (pending == 0) return 0;
    --pending;
    const size_t n = std::min<size_t>(frame_len, buffer.size());
    return static_cast<ssize_t>(n);  // the bytes are whatever the buffer held: not measured
  }
  bool send(std::span<const iovec>) override { return true; }
  void set_offloads(uint64_t) override {}
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override {}
  void resume_receive() override {}
  std::string describe() const override { return "null"; }

  int pending = 0;
  size_t frame_len = 1514;
};

void block_request(benchmark::State& state, uint32_t type) {
  const bool io_thread = state.range(0) != 0;
  TestMemory memory(kRamSize);
  DriverRing ring(memory, VirtioBlock::kQueueSize, RingLayout::at(kRing));
  Virtqueue queue(memory, VirtioBlock::kQueueSize);
  FakeTransport transport;
  auto device = std::make_shared<VirtioBlock>(std::make_unique<NullBlockBackend>(), "",
                                              BlockThreading{io_thread, "blk-bench", {}});
  ring.configure(queue, bit(VIRTIO_RING_F_EVENT_IDX));
  transport.serve(std::span(&queue, 1));
  device->activate(transport, device->device_features() | bit(VIRTIO_RING_F_EVENT_IDX));

  const uint64_t header = ring.alloc(16);
  const uint64_t data = ring.alloc(4096, 4096);
  const uint64_t status = ring.alloc(1);
  const bool write = type == VIRTIO_BLK_T_OUT;
  uint64_t sector = 0;
  for (auto _ : state) {
    (void)memory.write_obj(header, virtio_blk_outhdr{type, 0, sector});
    ring.add_chain({{header, 16, false}, {data, 4096, !write}, {status, 1, true}});
    device->queue_notify(0, queue);
    if (io_thread) device->wait_idle();
    sector = (sector + 8) % (1u << 21);
  }
  if (ring.used_idx() != static_cast<uint16_t>(state.iterations()) ||
      memory.read_obj<uint8_t>(status) != VIRTIO_BLK_S_OK) {
    state.SkipWithError("requests did not complete");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}

void BM_BlockRead4K(benchmark::State& state) {
  block_request(state, VIRTIO_BLK_T_IN);
}
void BM_BlockWrite4K(benchmark::State& state) {
  block_request(state, VIRTIO_BLK_T_OUT);
}
BENCHMARK(BM_BlockRead4K)->ArgName("iothread")->Arg(0)->Arg(1)->MeasureProcessCPUTime();
BENCHMARK(BM_BlockWrite4K)->ArgName("iothread")->Arg(0)->Arg(1)->MeasureProcessCPUTime();

struct NetBench {
  NetBench() {
    queues.emplace_back(memory, VirtioNet::kQueueSize);
    queues.emplace_back(memory, VirtioNet::kQueueSize);
    transport.serve(queues);
    rx.configure(queues[0], bit(VIRTIO_RING_F_EVENT_IDX));
    tx.configure(queues[1], bit(VIRTIO_RING_F_EVENT_IDX));
    device.activate(transport, device.device_features() | bit(VIRTIO_RING_F_EVENT_IDX));
  }
  TestMemory memory{kRamSize};
  DriverRing rx{memory, VirtioNet::kQueueSize, RingLayout::at(kRing)};
  DriverRing tx{memory, VirtioNet::kQueueSize, RingLayout::at(2 * MiB)};
  std::vector<Virtqueue> queues;
  std::shared_ptr<NullNetBackend> backend = std::make_shared<NullNetBackend>();
  VirtioNet device{backend, MacAddress{0x52, 0x54, 0, 0x12, 0x34, 0x56}, 1500};
  FakeTransport transport;
};

void BM_NetTransmit1500(benchmark::State& state) {
  NetBench b;
  constexpr uint32_t kLen = VirtioNet::kHeaderSize + 1514;
  std::vector<uint8_t> packet(kLen, 0);
  packet[VirtioNet::kHeaderSize + 12] = 0x08;  // an IPv4 EtherType, for what it is worth
  const uint64_t gpa = b.tx.place(packet);
  for (auto _ : state) {
    b.tx.add_chain({{gpa, kLen, false}});
    b.device.queue_notify(VirtioNet::kTransmitQueue, b.queues[1]);
  }
  if (b.tx.used_idx() != static_cast<uint16_t>(state.iterations())) {
    state.SkipWithError("frames were not sent");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 1500);
}
BENCHMARK(BM_NetTransmit1500)->MeasureProcessCPUTime();

void BM_NetReceive1500(benchmark::State& state) {
  NetBench b;
  constexpr uint32_t kLen = VirtioNet::kHeaderSize + 1514;
  const uint64_t gpa = b.rx.alloc(kLen);
  for (auto _ : state) {
    b.rx.add_chain({{gpa, kLen, true}});
    b.backend->pending = 1;
    b.device.backend_readable();
  }
  if (b.rx.used_idx() != static_cast<uint16_t>(state.iterations())) {
    state.SkipWithError("frames were not received");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 1500);
}
BENCHMARK(BM_NetReceive1500)->MeasureProcessCPUTime();

}  // namespace

BENCHMARK_MAIN();
