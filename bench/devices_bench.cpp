// devices_bench: the VMM's own CPU cost per I/O request, on the host, without KVM: one virtIO
// request at a time through the split virtqueue and the device model, with a null backend that
// moves no data, so what is measured is ours alone (chain validation, request parsing, guest
// memory checks, the used ring, the interrupt decision).
//   - virtio-blk: a 4 KiB read and a 4 KiB write (header, data, status), carried out inside
//     queue_notify() (iothread=off), and with the device's I/O thread (iothread=on: the same
//     work plus waking the thread and waiting for it, so more wall time than CPU); and from a
//     notify eventfd to the interrupt's eventfd, through the event loop or straight to the
//     I/O thread (BM_BlockRead4KHandOff); and a read kept in flight on storage with a latency
//     of its own, with and without polling for its completion (BM_BlockRead4KInFlight);
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
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "libvmm/backends/block_backend.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/net.hpp"
#include "unit/support/loop_thread.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;

namespace {

constexpr uint64_t kRamSize = 4 * MiB;
constexpr uint64_t kRing = 0x10000;

// A disk that stores nothing and reads nothing: requests succeed at once.
class NullBlockBackend : public BlockBackend {
 public:
  uint64_t size() const override { return 1ull << 30; }
  bool readonly() const override { return false; }
  int read(uint64_t, std::span<iovec>) override { return 0; }
  int write(uint64_t, std::span<iovec>) override { return 0; }
  int flush() override { return 0; }
  int discard(uint64_t, uint64_t) override { return 0; }
  int write_zeroes(uint64_t, uint64_t, bool) override { return 0; }
};

// The same, keeping its transfers "in flight" (BlockAsync) the way an io_uring image does; what
// the two kinds below share: transfers started wait in started_ for submit().
class NullAsyncBase : public NullBlockBackend, public BlockAsync {
 public:
  BlockAsync* async() override { return this; }
  bool start(BlockTransfer& t) override {
    started_.push_back(&t);
    return true;
  }
  int completion_fd() const override { return efd_.get(); }
  unsigned capacity() const override { return 64; }

 protected:
  void signal_completion() {
    const uint64_t one = 1;
    static_cast<void>(::write(efd_.get(), &one, sizeof one));
  }

  UniqueFd efd_{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  std::vector<BlockTransfer*> started_;
};

// Each transfer finishes at submit() and signals the completion eventfd, so what is measured is
// the device's own cost of starting, collecting and returning requests, and the thread's
// wake-up per completion.
class NullAsyncBlockBackend final : public NullAsyncBase {
 public:
  void submit() override {
    if (started_.empty()) return;
    for (BlockTransfer* t : started_) t->result = 0;
    finished_.insert(finished_.end(), started_.begin(), started_.end());
    started_.clear();
    signal_completion();
  }
  void reap(std::vector<BlockTransfer*>& done, bool) override {
    done.insert(done.end(), finished_.begin(), finished_.end());
    finished_.clear();
  }

 private:
  std::vector<BlockTransfer*> finished_;
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

// iothread: 0 the request carried out in queue_notify(), 1 on the I/O thread in rounds, 2 on
// the I/O thread kept in flight (NullAsyncBlockBackend).
void block_request(benchmark::State& state, uint32_t type) {
  const bool io_thread = state.range(0) != 0;
  std::unique_ptr<BlockBackend> backend;
  if (state.range(0) == 2) {
    backend = std::make_unique<NullAsyncBlockBackend>();
  } else {
    backend = std::make_unique<NullBlockBackend>();
  }
  TestMemory memory(kRamSize);
  DriverRing ring(memory, VirtioBlock::kQueueSize, RingLayout::at(kRing));
  Virtqueue queue(memory, VirtioBlock::kQueueSize);
  FakeTransport transport;
  auto device = std::make_shared<VirtioBlock>(std::move(backend), "",
                                              BlockThreading{io_thread, "blk-bench", {}});
  ring.configure(queue, feature_bit(VIRTIO_RING_F_EVENT_IDX));
  transport.serve(std::span(&queue, 1));
  device->activate(transport, device->device_features() | feature_bit(VIRTIO_RING_F_EVENT_IDX));

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
BENCHMARK(BM_BlockRead4K)->ArgName("iothread")->Arg(0)->Arg(1)->Arg(2)->MeasureProcessCPUTime();
BENCHMARK(BM_BlockWrite4K)->ArgName("iothread")->Arg(0)->Arg(1)->Arg(2)->MeasureProcessCPUTime();

// A transport as the VMM's: one lock around the queue, and an interrupt that is an eventfd (as
// KVM's irqfd) the benchmark waits on, as the guest's driver would.
class EventfdTransport final : public VirtioTransport {
 public:
  explicit EventfdTransport(Virtqueue& queue) : queue_(queue) {}
  void signal_used(uint16_t) override {
    if (queue_.needs_notification()) signal(call.get());
  }
  void signal_config_change() override {}
  bool with_queues(const std::function<void(std::span<Virtqueue>)>& fn) override {
    std::lock_guard lock(mutex_);
    fn(std::span(&queue_, 1));
    return true;
  }
  // What the event loop did with a notify eventfd before the I/O thread watched it itself.
  void notify(VirtioDevice& device) {
    std::lock_guard lock(mutex_);
    device.queue_notify(0, queue_);
  }
  static void signal(int fd) {
    const uint64_t one = 1;
    if (::write(fd, &one, sizeof one) != sizeof one) throw std::runtime_error("eventfd write");
  }
  static void wait(int fd) {
    uint64_t count = 0;
    pollfd p{fd, POLLIN, 0};
    while (::read(fd, &count, sizeof count) != sizeof count) ::poll(&p, 1, -1);
  }

  UniqueFd notify_fd{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};  // the queue's ioeventfd
  UniqueFd call{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};       // the device's irqfd

 private:
  std::mutex mutex_;
  Virtqueue& queue_;
};

// The guest's side of the hand-off benchmarks: one 4 KiB read at a time, notified unless the
// device says it needs no notification (it is polling), its completion awaited on the
// interrupt's eventfd. Returns how many requests went without a notification.
int64_t read_one_at_a_time(benchmark::State& state, TestMemory& memory, DriverRing& ring,
                           EventfdTransport& transport) {
  const uint64_t header = ring.alloc(16);
  const uint64_t data = ring.alloc(4096, 4096);
  const uint64_t status = ring.alloc(1);
  uint64_t sector = 0;
  int64_t unnotified = 0;
  for (auto _ : state) {
    (void)memory.write_obj(header, virtio_blk_outhdr{VIRTIO_BLK_T_IN, 0, sector});
    ring.add_chain({{header, 16, false}, {data, 4096, true}, {status, 1, true}});
    if ((ring.used_flags() & VRING_USED_F_NO_NOTIFY) == 0) {
      EventfdTransport::signal(transport.notify_fd.get());
    } else {
      ++unnotified;
    }
    EventfdTransport::wait(transport.call.get());
    sector = (sector + 8) % (1u << 21);
  }
  if (ring.used_idx() != static_cast<uint16_t>(state.iterations()) ||
      memory.read_obj<uint8_t>(status) != VIRTIO_BLK_S_OK) {
    state.SkipWithError("requests did not complete");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  return unnotified;
}

// A 4 KiB read from the guest's notification (a write to the queue's notify eventfd, as KVM
// does at the guest's QueueNotify) to its interrupt (the irqfd signalled), with the device's
// I/O thread. via_loop=1: the event loop reads the eventfd and kicks the I/O thread (before);
// via_loop=0: the I/O thread waits on the eventfd itself (Vm's wiring now). poll_us: the
// thread's adaptive polling bound; the "guest" skips the notification while the device says it
// needs none (counter unnotified: the share of requests found by polling). Process CPU time
// covers the three threads (this "guest", the loop, the I/O thread); wall time is the latency.
void BM_BlockRead4KHandOff(benchmark::State& state) {
  const bool via_loop = state.range(0) != 0;
  const auto poll_us = static_cast<uint32_t>(state.range(1));
  TestMemory memory(kRamSize);
  DriverRing ring(memory, VirtioBlock::kQueueSize, RingLayout::at(kRing));
  Virtqueue queue(memory, VirtioBlock::kQueueSize);
  EventfdTransport transport(queue);
  auto device = std::make_shared<VirtioBlock>(std::make_unique<NullBlockBackend>(), "",
                                              BlockThreading{true, "blk-bench", {}, poll_us});
  // Without EVENT_IDX: this driver does not move used_event, and every request is to interrupt.
  ring.configure(queue, 0);
  device->activate(transport, device->device_features());
  std::unique_ptr<LoopThread> loop;
  if (via_loop) {
    loop = std::make_unique<LoopThread>();
    const int fd = transport.notify_fd.get();
    loop->call([&] {
      loop->loop.add(fd, EPOLLIN, [&transport, &device, fd](uint32_t) {
        uint64_t count;
        if (::read(fd, &count, sizeof count) == sizeof count) transport.notify(*device);
      });
    });
  } else if (!device->watch_queue_notify(0, transport.notify_fd.get())) {
    state.SkipWithError("the device does not watch its notify eventfd");
    return;
  }

  const int64_t unnotified = read_one_at_a_time(state, memory, ring, transport);
  if (loop) loop->call([&] { loop->loop.remove(transport.notify_fd.get()); });
  state.counters["unnotified"] =
      benchmark::Counter(static_cast<double>(unnotified) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_BlockRead4KHandOff)
    ->ArgNames({"via_loop", "poll_us"})
    ->Args({1, 0})
    ->Args({0, 0})
    ->Args({0, 32})
    ->MeasureProcessCPUTime();

// Storage with a latency of its own, kept in flight (BlockAsync): a transfer submitted finishes
// `latency` later (plus the timer's wake-up) on a thread of its own (the "device", asleep
// meanwhile, so it takes no CPU from the others, as a drive would not), which then signals the
// completion eventfd, as io_uring does for a fast NVMe drive.
class LatencyBlockBackend final : public NullAsyncBase {
 public:
  explicit LatencyBlockBackend(std::chrono::microseconds latency) : latency_(latency) {
    device_ = std::thread([this] { run(); });
  }
  ~LatencyBlockBackend() override {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    device_.join();
  }
  void submit() override {
    if (started_.empty()) return;
    {
      std::lock_guard lock(mutex_);
      const auto due = std::chrono::steady_clock::now() + latency_;
      for (BlockTransfer* t : started_) out_.push_back({t, due});
    }
    started_.clear();
    cv_.notify_all();
  }
  void reap(std::vector<BlockTransfer*>& done, bool wait) override {
    std::unique_lock lock(mutex_);
    if (wait) cv_.wait(lock, [&] { return out_.empty(); });
    done.insert(done.end(), finished_.begin(), finished_.end());
    finished_.clear();
  }

 private:
  struct Out {
    BlockTransfer* transfer;
    std::chrono::steady_clock::time_point due;
  };
  void run() {
    ::prctl(PR_SET_TIMERSLACK, 1);  // the sleep ends as close to `due` as the kernel can
    std::unique_lock lock(mutex_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !out_.empty(); });
      if (stop_) return;
      const auto due = out_.front().due;
      lock.unlock();
      std::this_thread::sleep_until(due);
      lock.lock();
      out_.front().transfer->result = 0;
      finished_.push_back(out_.front().transfer);
      out_.erase(out_.begin());
      cv_.notify_all();
      signal_completion();
    }
  }

  const std::chrono::microseconds latency_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Out> out_;
  std::vector<BlockTransfer*> finished_;
  bool stop_ = false;
  std::thread device_;
};

// A 4 KiB read at queue depth 1 from the guest's notification to its interrupt, kept in flight
// on storage with a latency of latency_us: whether the I/O thread's polling (poll_us) also
// catches the completion, sparing the thread a wake-up per request. Wall time is the latency
// the guest sees; process CPU time covers the "guest", the I/O thread and the "device"'s
// wake-ups.
void BM_BlockRead4KInFlight(benchmark::State& state) {
  const auto poll_us = static_cast<uint32_t>(state.range(0));
  const std::chrono::microseconds latency(state.range(1));
  TestMemory memory(kRamSize);
  DriverRing ring(memory, VirtioBlock::kQueueSize, RingLayout::at(kRing));
  Virtqueue queue(memory, VirtioBlock::kQueueSize);
  EventfdTransport transport(queue);
  auto device = std::make_shared<VirtioBlock>(std::make_unique<LatencyBlockBackend>(latency), "",
                                              BlockThreading{true, "blk-bench", {}, poll_us});
  ring.configure(queue, 0);  // every request is to interrupt (see BM_BlockRead4KHandOff)
  device->activate(transport, device->device_features());
  if (!device->keeps_requests_in_flight() ||
      !device->watch_queue_notify(0, transport.notify_fd.get())) {
    state.SkipWithError("the device does not keep requests in flight on its notify eventfd");
    return;
  }
  const uint64_t hits_before = device->poll_hits();
  read_one_at_a_time(state, memory, ring, transport);
  // Completions and requests found by polling, per request.
  state.counters["polled"] =
      benchmark::Counter(static_cast<double>(device->poll_hits() - hits_before) /
                         static_cast<double>(state.iterations()));
}
BENCHMARK(BM_BlockRead4KInFlight)
    ->ArgNames({"poll_us", "latency_us"})
    ->Args({0, 10})
    ->Args({32, 10})
    ->Args({0, 50})
    ->Args({32, 50})
    ->UseRealTime()
    ->MeasureProcessCPUTime();

struct NetBench {
  NetBench() {
    queues.emplace_back(memory, VirtioNet::kQueueSize);
    queues.emplace_back(memory, VirtioNet::kQueueSize);
    transport.serve(queues);
    rx.configure(queues[0], feature_bit(VIRTIO_RING_F_EVENT_IDX));
    tx.configure(queues[1], feature_bit(VIRTIO_RING_F_EVENT_IDX));
    device.activate(transport, device.device_features() | feature_bit(VIRTIO_RING_F_EVENT_IDX));
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
