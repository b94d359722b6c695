// virtio-net served by the host kernel (vhost=on), behind the real virtio-mmio and virtio-pci
// transports, with a stand-in for /dev/vhost-net that records what it is told: what DRIVER_OK
// hands the kernel (features, memory table, ring addresses, eventfds, the TAP), reset, a
// refused ioctl, a queue the kernel stops on bad input, the kernel's interrupts on MSI-X
// vectors; and the ABI restated in vhost_kernel_abi.hpp against the kernel's C headers.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_pci.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/backends/tap_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/pci_transport.hpp"
#include "libvmm/virtio/vhost_net.hpp"
#include "unit/support/loop_thread.hpp"
#include "unit/support/virtio_kit.hpp"

extern "C" {
extern const unsigned long libvmm_vhost_requests[13];
extern const unsigned long libvmm_vhost_sizes[7];
extern const unsigned libvmm_vhost_net_f_virtio_net_hdr;
}

namespace libvmm {
namespace virtio_vhost_net_test {

using test::DriverRing;
using test::FakeIrq;
using test::MmioDriver;
using test::PciDriver;
using test::RingLayout;
using test::TestMemory;

TEST(VhostKernelAbi, MatchesTheKernelHeaders) {
  namespace abi = vhost_kernel;
  const unsigned long ours[] = {
      abi::kGetFeatures,
      abi::kSetFeatures,
      abi::kSetOwner,
      abi::kSetMemTable,
      abi::kSetVringNum,
      abi::kSetVringAddr,
      abi::kSetVringBase,
      abi::kGetVringBase,
      abi::kSetVringKick,
      abi::kSetVringCall,
      abi::kSetVringErr,
      abi::kNetSetBackend,
      abi::kSetVringBusyloopTimeout,
  };
  for (size_t i = 0; i < std::size(ours); ++i) {
    EXPECT_EQ(ours[i], libvmm_vhost_requests[i]) << "request " << i;
  }
  EXPECT_EQ(sizeof(abi::MemoryRegion), libvmm_vhost_sizes[0]);
  EXPECT_EQ(sizeof(abi::MemoryHeader), libvmm_vhost_sizes[1]);
  EXPECT_EQ(sizeof(abi::VringState), libvmm_vhost_sizes[2]);
  EXPECT_EQ(sizeof(abi::VringFile), libvmm_vhost_sizes[3]);
  EXPECT_EQ(sizeof(abi::VringAddr), libvmm_vhost_sizes[4]);
  EXPECT_EQ(offsetof(abi::VringAddr, used_user_addr), libvmm_vhost_sizes[5]);
  EXPECT_EQ(offsetof(abi::VringAddr, avail_user_addr), libvmm_vhost_sizes[6]);
  EXPECT_EQ(abi::kNetFeatureVirtioNetHeader, libvmm_vhost_net_f_virtio_net_hdr);
}

// What /dev/vhost-net was told, one line per call; shared with the test after the device
// takes the kernel object.
struct KernelLog {
  std::mutex mutex;
  std::vector<std::string> calls;
  std::vector<vhost_kernel::MemoryRegion> regions;
  std::vector<vhost_kernel::VringAddr> addrs;
  int error_fd[2] = {-1, -1};
  int call_fd[2] = {-1, -1};
  std::string refuse;  // a call (its first word) that fails with EINVAL

  void add(const std::string& call) {
    std::lock_guard lock(mutex);
    calls.push_back(call);
    if (!refuse.empty() && call.starts_with(refuse)) {
      throw VhostKernelError(call + ": Invalid argument");
    }
  }
  std::vector<std::string> taken() {
    std::lock_guard lock(mutex);
    return std::exchange(calls, {});
  }
};

class FakeKernel final : public VhostNetKernel {
 public:
  FakeKernel(std::shared_ptr<KernelLog> log, uint64_t features)
      : log_(std::move(log)), features_(features) {}
  void set_owner() override { log_->add("set_owner"); }
  uint64_t get_features() override {
    log_->add("get_features");
    return features_;
  }
  void set_features(uint64_t f) override { log_->add(fmt::format("set_features {:#x}", f)); }
  void set_mem_table(std::span<const vhost_kernel::MemoryRegion> regions) override {
    log_->add(fmt::format("set_mem_table {}", regions.size()));
    log_->regions.assign(regions.begin(), regions.end());
  }
  void set_vring_num(uint32_t i, uint32_t n) override {
    log_->add(fmt::format("set_vring_num {} {}", i, n));
  }
  void set_vring_base(uint32_t i, uint32_t b) override {
    log_->add(fmt::format("set_vring_base {} {}", i, b));
  }
  uint32_t get_vring_base(uint32_t i) override {
    log_->add(fmt::format("get_vring_base {}", i));
    return 0;
  }
  void set_vring_addr(const vhost_kernel::VringAddr& a) override {
    log_->add(fmt::format("set_vring_addr {}", a.index));
    log_->addrs.push_back(a);
  }
  void set_vring_kick(uint32_t i, int fd) override { file("set_vring_kick", i, fd); }
  void set_vring_call(uint32_t i, int fd) override {
    if (i < 2) log_->call_fd[i] = fd;
    file("set_vring_call", i, fd);
  }
  void set_vring_err(uint32_t i, int fd) override {
    if (i < 2) log_->error_fd[i] = fd;
    file("set_vring_err", i, fd);
  }
  void set_backend(uint32_t i, int fd) override { file("set_backend", i, fd); }
  void set_vring_busyloop_timeout(uint32_t i, uint32_t us) override {
    log_->add(fmt::format("set_vring_busyloop_timeout {} {}", i, us));
  }

 private:
  void file(const char* what, uint32_t i, int fd) {
    log_->add(fmt::format("{} {} {}", what, i, fd < 0 ? "none" : "fd"));
  }
  std::shared_ptr<KernelLog> log_;
  uint64_t features_;
};

constexpr uint64_t kKernelFeatures =
    feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MRG_RXBUF) | feature_bit(29) |
    feature_bit(28) | feature_bit(27) | feature_bit(VIRTIO_F_NOTIFY_ON_EMPTY);

UniqueFd new_eventfd() {
  return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

// A VhostNet of `pairs` queue pairs behind a virtio-mmio transport, each pair with its own
// recorded kernel and a socket pair standing in for its TAP queue; the machine's eventfds.
struct Rig {
  TestMemory memory{0x100000};
  std::vector<std::shared_ptr<KernelLog>> kernels;
  std::shared_ptr<KernelLog> kernel;  // pair 0's
  std::shared_ptr<TapBackend> tap;    // pair 0's
  std::shared_ptr<VhostNet> device;
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::unique_ptr<VirtioMmioTransport> transport;
  std::vector<UniqueFd> kick, call;  // one per queue
  std::vector<UniqueFd> peers;       // the other ends of the "TAP" queues

  explicit Rig(uint64_t features = kKernelFeatures, uint32_t poll_us = 0, size_t pairs = 1) {
    VhostNetOptions o;
    o.mac = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
    o.mtu = 9000;
    o.poll_us = poll_us;
    std::vector<VhostNetPair> given;
    for (size_t p = 0; p < pairs; ++p) {
      int fds[2];
      EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
      auto pair_tap = std::make_shared<TapBackend>(UniqueFd(fds[0]), "tap test");
      peers.emplace_back(fds[1]);
      kernels.push_back(std::make_shared<KernelLog>());
      given.push_back({std::make_unique<FakeKernel>(kernels.back(), features), pair_tap});
      if (p == 0) tap = pair_tap;
    }
    kernel = kernels[0];
    device = std::make_shared<VhostNet>(o, std::move(given), memory);
    std::vector<QueueEventfds> fds;
    for (size_t q = 0; q < device->queue_max_sizes().size(); ++q) {
      kick.push_back(new_eventfd());
      call.push_back(new_eventfd());
      fds.push_back({kick.back().get(), call.back().get()});
    }
    device->set_queue_eventfds(fds);
    transport = std::make_unique<VirtioMmioTransport>(device, memory, irq);
  }
  void bring_up(uint64_t features) {
    MmioDriver driver(*transport);
    ASSERT_TRUE(driver.negotiate(features));
    driver.setup_queue(0, 256, RingLayout::at(0x10000));
    driver.setup_queue(1, 256, RingLayout::at(0x20000));
    driver.driver_ok();
  }
  uint32_t status() { return MmioDriver(*transport).status(); }
};

TEST(VhostNet, OffersTheTapsOffloadsAndTheKernelsRingFeatures) {
  Rig rig;
  EXPECT_EQ(rig.kernel->taken(),
            (std::vector<std::string>{"set_owner", "get_features", "set_vring_err 0 fd",
                                      "set_vring_err 1 fd"}));
  MmioDriver driver(*rig.transport);
  const uint64_t offered = driver.device_features();
  for (unsigned b : std::initializer_list<unsigned>{
           VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MTU, VIRTIO_NET_F_MRG_RXBUF,
           VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4,
           VIRTIO_NET_F_GUEST_TSO6, VIRTIO_F_VERSION_1, 28u, 29u}) {
    EXPECT_TRUE(offered & feature_bit(b)) << "bit " << b;
  }
  // Not the kernel's own header handling, nor multiqueue (no control queue here).
  EXPECT_FALSE(offered & feature_bit(27));
  EXPECT_FALSE(offered & feature_bit(VIRTIO_NET_F_MQ));
  EXPECT_FALSE(offered & feature_bit(VIRTIO_NET_F_CTRL_VQ));
  // The config space: the MAC, link up, the MTU.
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 0x12005452u);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4) & 0xffffu, 0x5634u);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 8) >> 16, 9000u);
}

TEST(VhostNet, HandsTheQueuesAndTheTapToTheKernelAtDriverOk) {
  Rig rig;
  rig.kernel->taken();
  const uint64_t accepted = feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MRG_RXBUF) |
                            feature_bit(VIRTIO_NET_F_MAC) | feature_bit(VIRTIO_NET_F_CSUM) |
                            feature_bit(29);
  rig.bring_up(accepted);
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // The kernel hears only of what it offered; the MAC and the offloads stay here and in the TAP.
  const auto calls = rig.kernel->taken();
  const std::vector<std::string> expected = {
      fmt::format("set_features {:#x}", feature_bit(VIRTIO_F_VERSION_1) |
                                            feature_bit(VIRTIO_NET_F_MRG_RXBUF) | feature_bit(29)),
      "set_mem_table 1",
      "set_vring_num 0 256",
      "set_vring_base 0 0",
      "set_vring_addr 0",
      "set_vring_call 0 fd",
      "set_vring_kick 0 fd",
      "set_backend 0 fd",
      "set_vring_num 1 256",
      "set_vring_base 1 0",
      "set_vring_addr 1",
      "set_vring_call 1 fd",
      "set_vring_kick 1 fd",
      "set_backend 1 fd"};
  EXPECT_EQ(calls, expected);
  // Guest RAM as this process maps it, and the rings at the driver's addresses in that map.
  ASSERT_EQ(rig.kernel->regions.size(), 1u);
  const auto ram = rig.memory.slice(0, 0x100000);
  ASSERT_TRUE(ram);
  const auto host = reinterpret_cast<uint64_t>(ram->data());
  EXPECT_EQ(rig.kernel->regions[0].guest_phys_addr, 0u);
  EXPECT_EQ(rig.kernel->regions[0].memory_size, 0x100000u);
  EXPECT_EQ(rig.kernel->regions[0].userspace_addr, host);
  ASSERT_EQ(rig.kernel->addrs.size(), 2u);
  EXPECT_EQ(rig.kernel->addrs[1].desc_user_addr, host + 0x20000);
  EXPECT_EQ(rig.kernel->addrs[1].avail_user_addr, host + 0x21000);
  EXPECT_EQ(rig.kernel->addrs[1].used_user_addr, host + 0x22000);
  // Buffers made available before the kernel watched the kicks are not forgotten.
  for (const UniqueFd& kick : rig.kick) {
    uint64_t count = 0;
    EXPECT_EQ(::read(kick.get(), &count, sizeof count), 8);
  }
  // A reset detaches the TAP from both rings.
  MmioDriver(*rig.transport).set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(rig.kernel->taken(),
            (std::vector<std::string>{"set_backend 0 none", "get_vring_base 0",
                                      "set_backend 1 none", "get_vring_base 1"}));
}

TEST(VhostNet, PollUsSetsTheKernelWorkersPollingOnBothRings) {
  Rig rig(kKernelFeatures, 50);
  rig.kernel->taken();
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const auto calls = rig.kernel->taken();
  for (const char* want : {"set_vring_busyloop_timeout 0 50", "set_vring_busyloop_timeout 1 50"}) {
    EXPECT_NE(std::find(calls.begin(), calls.end(), want), calls.end()) << want;
  }
  // Without poll_us the kernel's default (no polling) is left alone.
  Rig plain;
  plain.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  for (const std::string& call : plain.kernel->taken()) {
    EXPECT_FALSE(call.starts_with("set_vring_busyloop_timeout")) << call;
  }
}

TEST(VhostNet, ARefusedIoctlStopsWhatStartedAndNeedsReset) {
  Rig rig;
  rig.kernel->refuse = "set_backend 1 fd";
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const auto calls = rig.kernel->taken();
  ASSERT_GE(calls.size(), 2u);
  EXPECT_EQ(calls[calls.size() - 2], "set_backend 0 none");  // queue 0 had started
  EXPECT_EQ(calls.back(), "get_vring_base 0");
  // The driver's reset and a new bring-up recover: the kernel is still there.
  rig.kernel->refuse.clear();
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VhostNet, AQueueTheKernelStopsNeedsReset) {
  test::LoopThread loop;
  Rig rig;
  loop.call([&] { rig.device->watch(loop.loop); });
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  ASSERT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // The kernel's vq_err(): the transmit queue's error eventfd.
  const uint64_t one = 1;
  ASSERT_EQ(::write(rig.kernel->error_fd[1], &one, sizeof one), 8);
  for (int i = 0; i < 500 && !(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_GE(rig.irq->pulses.load(), 1);  // the driver hears of it (config interrupt)
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  loop.call([&] {  // the device leaves the loop from the loop's own thread
    rig.transport.reset();
    rig.device.reset();
  });
}

// Multiqueue: two pairs, each its own vhost device (rings 0 and 1 there) and TAP queue, and
// the control queue (queue 4) served here on the event loop.
class VhostNetMultiqueue : public ::testing::Test {
 protected:
  static constexpr uint16_t kCtrl = 4;
  static constexpr uint64_t kMq = feature_bit(VIRTIO_F_VERSION_1) |
                                  feature_bit(VIRTIO_NET_F_CTRL_VQ) | feature_bit(VIRTIO_NET_F_MQ);

  void SetUp() override {
    loop.call([&] { rig.device->watch(loop.loop); });
    for (size_t i = 0; i < 5; ++i) {
      rings.emplace_back(rig.memory, i == kCtrl ? VhostNet::kControlQueueSize : 256,
                         RingLayout::at(0x10000 + i * 0x10000));
    }
  }
  void TearDown() override {
    loop.call([&] {  // the device leaves the loop from the loop's own thread
      rig.transport.reset();
      rig.device.reset();
    });
  }
  // Negotiates `features` and enables `queues` of the rings.
  void bring_up(uint64_t features, size_t queues) {
    ASSERT_TRUE(driver.negotiate(features));
    for (size_t i = 0; i < queues; ++i) driver.setup_queue(static_cast<uint32_t>(i), rings[i]);
    driver.driver_ok();
  }
  // Sends a control command on queue `index` and waits for its answer: the status byte (0xee:
  // none came). The notify reaches the device as KVM's ioeventfd delivers it, on the loop
  // thread; or, `by_register`, as a register write the device serves at once.
  uint8_t command(uint16_t index, std::vector<uint8_t> out, bool by_register = false) {
    DriverRing& ring = rings[index];
    const uint16_t answered = ring.used_idx();
    const uint64_t out_gpa = ring.place(out);
    const uint64_t status = ring.place(std::vector<uint8_t>{0xee});
    ring.add_chain({{out_gpa, static_cast<uint32_t>(out.size()), false}, {status, 1, true}});
    if (by_register) {
      driver.notify(index);
      EXPECT_NE(ring.used_idx(), answered) << "not answered during the register write";
    } else {
      const uint64_t one = 1;
      EXPECT_EQ(::write(rig.kick[index].get(), &one, sizeof one), 8);
    }
    for (int i = 0; i < 1000 && ring.used_idx() == answered; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return rig.memory.bytes(status, 1)[0];
  }
  uint8_t set_pairs(uint16_t index, uint16_t n) {
    return command(index, {VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
                           static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8)});
  }

  test::LoopThread loop;
  Rig rig{kKernelFeatures, 0, 2};
  MmioDriver driver{*rig.transport};
  std::vector<DriverRing> rings;
};

TEST_F(VhostNetMultiqueue, OffersMqWithAControlQueueAndItsPairCount) {
  EXPECT_TRUE(driver.device_features() & feature_bit(VIRTIO_NET_F_MQ));
  EXPECT_TRUE(driver.device_features() & feature_bit(VIRTIO_NET_F_CTRL_VQ));
  EXPECT_EQ(rig.device->queue_max_sizes(),
            (std::vector<uint16_t>{256, 256, 256, 256, VhostNet::kControlQueueSize}));
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 8) & 0xffffu, 2u);  // max_virtqueue_pairs
  // Each pair's vhost device was claimed and given its error eventfds.
  for (const auto& kernel : rig.kernels) {
    EXPECT_EQ(kernel->taken(),
              (std::vector<std::string>{"set_owner", "get_features", "set_vring_err 0 fd",
                                        "set_vring_err 1 fd"}));
  }
}

TEST_F(VhostNetMultiqueue, EachPairsRingsGoToItsOwnKernelAndTheDriverChoosesHowManyRun) {
  for (const auto& kernel : rig.kernels) kernel->taken();
  bring_up(kMq, 5);
  ASSERT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // Pair 1's rings are its kernel's rings 0 and 1, with queues 2 and 3's eventfds.
  const auto calls = rig.kernels[1]->taken();
  EXPECT_NE(std::find(calls.begin(), calls.end(), "set_backend 0 fd"), calls.end());
  EXPECT_NE(std::find(calls.begin(), calls.end(), "set_backend 1 fd"), calls.end());
  EXPECT_EQ(rig.kernels[1]->call_fd[0], rig.call[2].get());
  EXPECT_EQ(rig.kernels[1]->call_fd[1], rig.call[3].get());
  const auto ram = rig.memory.slice(0, 0x100000);
  ASSERT_TRUE(ram);
  const auto host = reinterpret_cast<uint64_t>(ram->data());
  ASSERT_EQ(rig.kernels[1]->addrs.size(), 2u);
  EXPECT_EQ(rig.kernels[1]->addrs[0].index, 0u);
  EXPECT_EQ(rig.kernels[1]->addrs[0].desc_user_addr, host + 0x30000);
  EXPECT_EQ(rig.kernels[1]->addrs[1].desc_user_addr, host + 0x40000);
  // The control queue is nobody's kernel's.
  for (const auto& kernel : rig.kernels) EXPECT_EQ(kernel->addrs.size(), 2u);

  EXPECT_EQ(rig.device->active_pairs(), 1u);
  const int pulses = rig.irq->pulses.load();
  ASSERT_EQ(set_pairs(kCtrl, 2), VIRTIO_NET_OK);
  EXPECT_EQ(rig.device->active_pairs(), 2u);
  EXPECT_EQ(rings[kCtrl].used(0).len, 1u);
  EXPECT_GT(rig.irq->pulses.load(), pulses);  // the answer's interrupt
  // A notify that came as a register write (no ioeventfd matched) is served at once.
  ASSERT_EQ(command(kCtrl, {VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 1, 0}, true),
            VIRTIO_NET_OK);
  EXPECT_EQ(rig.device->active_pairs(), 1u);

  // A reset stops every ring in both kernels and goes back to one pair.
  ASSERT_EQ(set_pairs(kCtrl, 2), VIRTIO_NET_OK);
  driver.set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(rig.device->active_pairs(), 1u);
  for (const auto& kernel : rig.kernels) {
    const auto stopped = kernel->taken();
    EXPECT_NE(std::find(stopped.begin(), stopped.end(), "set_backend 0 none"), stopped.end());
    EXPECT_NE(std::find(stopped.begin(), stopped.end(), "set_backend 1 none"), stopped.end());
  }
}

TEST_F(VhostNetMultiqueue, MalformedControlCommandsAreAnsweredWithAnError) {
  bring_up(kMq, 5);
  EXPECT_EQ(set_pairs(kCtrl, 0), VIRTIO_NET_ERR);
  EXPECT_EQ(set_pairs(kCtrl, 3), VIRTIO_NET_ERR);
  EXPECT_EQ(command(kCtrl, {VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, 1}), VIRTIO_NET_ERR);
  EXPECT_EQ(command(kCtrl, {VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2}),
            VIRTIO_NET_ERR);
  EXPECT_EQ(rig.device->active_pairs(), 1u);
  // A chain with no writable byte: returned with length 0.
  const uint64_t out = rings[kCtrl].place(std::vector<uint8_t>{VIRTIO_NET_CTRL_MQ, 0, 2, 0});
  rings[kCtrl].add_chain({{out, 4, false}});
  driver.notify(kCtrl);
  for (int i = 0; i < 1000 && rings[kCtrl].used_idx() < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(rings[kCtrl].used_idx(), 5);
  EXPECT_EQ(rings[kCtrl].used(4).len, 0u);
  // A descriptor outside guest memory breaks the control queue: the device needs a reset, and
  // the kernel's rings are stopped by it.
  rings[kCtrl].add_chain({{0x7fff0000, 4, false}, {0x7fff1000, 1, true}});
  driver.notify(kCtrl);
  for (int i = 0; i < 1000 && !(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_EQ(rig.device->active_pairs(), 1u);
}

TEST_F(VhostNetMultiqueue, WithoutMqTheControlQueueIsTheThirdAndOnlyPairZeroRuns) {
  for (const auto& kernel : rig.kernels) kernel->taken();
  bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_CTRL_VQ),
           3);  // rx, tx, control
  ASSERT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_TRUE(rig.kernels[1]->taken().empty());  // pair 1 does not exist for this driver
  EXPECT_EQ(set_pairs(2, 2), VIRTIO_NET_ERR);    // MQ was not negotiated
  EXPECT_EQ(rig.device->active_pairs(), 1u);
}

class RecordingSink : public pci::MsiSink {
 public:
  void send(uint64_t address, uint32_t data) override {
    std::lock_guard lock(mutex);
    sent.emplace_back(address, data);
  }
  std::mutex mutex;
  std::vector<std::pair<uint64_t, uint32_t>> sent;
};

// A sink with an eventfd per vector that reaches the guest directly (KVM irqfds on a VM).
class DirectSink final : public RecordingSink {
 public:
  int direct_eventfd(uint16_t vector) override { return vector < 3 ? 200 + vector : -1; }
};

// The MSI-X layout the driver programs in these tests: vectors 0..2 at (0xfee0v000, 0x40 + v).
void enable_msix(VirtioPciTransport& pci, PciDriver& drv) {
  for (uint32_t v = 0; v < 3; ++v) {
    const uint32_t words[4] = {0xfee00000u + v * 0x1000u, 0, 0x40u + v, 0};
    for (uint32_t i = 0; i < 4; ++i) {
      std::array<uint8_t, 4> b{};
      std::memcpy(b.data(), &words[i], 4);
      pci.bar_write(VirtioPciTransport::kMsixBar, v * 16 + i * 4, b);
    }
  }
  drv.set_config(drv.msix_capability + 2, drv.config(drv.msix_capability + 2, 2) | 0x8000, 2);
}

// Where the sink delivers vectors directly, the kernel signals each queue's own vector's
// eventfd: its interrupts reach the guest without this process. Without MSI-X: the relay.
TEST(VhostNet, OverPciTheKernelSignalsTheQueuesVectorsDirectly) {
  Rig rig;
  auto pci = std::make_shared<VirtioPciTransport>(rig.device, rig.memory,
                                                  std::make_shared<DirectSink>(), nullptr);
  pci->set_external_eventfds(
      {{rig.kick[0].get(), rig.call[0].get()}, {rig.kick[1].get(), rig.call[1].get()}});
  PciDriver drv(*pci);
  enable_msix(*pci, drv);
  ASSERT_TRUE(drv.negotiate(feature_bit(VIRTIO_F_VERSION_1)));
  DriverRing rx(rig.memory, 256, RingLayout::at(0x10000));
  DriverRing tx(rig.memory, 256, RingLayout::at(0x20000));
  drv.setup_queue(0, rx, 1);
  drv.setup_queue(1, tx, 0xffff);  // no vector: the relay, which raises nothing
  drv.driver_ok();
  EXPECT_EQ(rig.kernel->call_fd[0], 201);
  EXPECT_EQ(rig.kernel->call_fd[1], rig.call[1].get());
  // The kernel holds vector 1's eventfd: a new vector for the running queue is refused (read
  // back unchanged) until a reset.
  drv.set_common(VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
  drv.set_common(VIRTIO_PCI_COMMON_Q_MSIX, 2, 2);
  EXPECT_EQ(drv.common(VIRTIO_PCI_COMMON_Q_MSIX, 2), 1u);
  EXPECT_FALSE(drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // MSI-X off (INTx): both relayed.
  drv.set_common(VIRTIO_PCI_COMMON_STATUS, 0, 1);
  drv.set_config(drv.msix_capability + 2, 0, 2);
  ASSERT_TRUE(drv.negotiate(feature_bit(VIRTIO_F_VERSION_1)));
  drv.setup_queue(0, rx);
  drv.setup_queue(1, tx);
  drv.driver_ok();
  EXPECT_EQ(rig.kernel->call_fd[0], rig.call[0].get());
  EXPECT_EQ(rig.kernel->call_fd[1], rig.call[1].get());
}

// Over virtio-pci, where the sink has no direct delivery: the same hand-over at DRIVER_OK; the
// kernel's call eventfd, relayed by the machine to external_used(), raises the queue's own
// MSI-X vector, and nothing while the guest masks it; a stopped queue needs a reset there too.
TEST(VhostNet, OverPciTheKernelsInterruptsAreTheQueuesVectors) {
  Rig rig;
  auto msi = std::make_shared<RecordingSink>();
  auto pci = std::make_shared<VirtioPciTransport>(rig.device, rig.memory, msi, nullptr);
  pci->set_external_eventfds(
      {{rig.kick[0].get(), rig.call[0].get()}, {rig.kick[1].get(), rig.call[1].get()}});
  PciDriver drv(*pci);
  enable_msix(*pci, drv);
  rig.kernel->taken();
  ASSERT_TRUE(drv.negotiate(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MAC)));
  drv.set_common(VIRTIO_PCI_COMMON_MSIX, 2, 2);  // configuration changes: vector 2
  DriverRing rx(rig.memory, 256, RingLayout::at(0x10000));
  DriverRing tx(rig.memory, 256, RingLayout::at(0x20000));
  drv.setup_queue(0, rx, 0);
  drv.setup_queue(1, tx, 1);
  drv.driver_ok();
  EXPECT_FALSE(drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const auto calls = rig.kernel->taken();
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "set_backend 0 fd"), 1);
  EXPECT_EQ(std::count(calls.begin(), calls.end(), "set_backend 1 fd"), 1);

  pci->external_used(1);
  pci->external_used(0);
  {
    std::lock_guard lock(msi->mutex);
    ASSERT_EQ(msi->sent.size(), 2u);
    EXPECT_EQ(msi->sent[0], std::make_pair(uint64_t{0xfee01000}, 0x41u));
    EXPECT_EQ(msi->sent[1], std::make_pair(uint64_t{0xfee00000}, 0x40u));
  }
  // Vector 1 masked: held pending, sent when the guest unmasks it.
  const auto control = [&](uint32_t v, uint32_t value) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &value, 4);
    pci->bar_write(VirtioPciTransport::kMsixBar, v * 16 + 12, b);
  };
  control(1, 1);
  pci->external_used(1);
  EXPECT_EQ(msi->sent.size(), 2u);
  control(1, 0);
  EXPECT_EQ(msi->sent.size(), 3u);

  pci->device_failed("the host kernel stopped the transmit queue");
  EXPECT_TRUE(drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_EQ(msi->sent.back().second, 0x42u);  // the driver hears of it on the config vector
  pci->external_used(0);                      // nothing once the device needs a reset
  EXPECT_EQ(msi->sent.size(), 4u);
  drv.set_common(VIRTIO_PCI_COMMON_STATUS, 0, 1);
  EXPECT_EQ(rig.kernel->taken(),
            (std::vector<std::string>{"set_backend 0 none", "get_vring_base 0",
                                      "set_backend 1 none", "get_vring_base 1"}));
}

TEST(VhostNet, RefusesAKernelWithoutVersion1) {
  try {
    Rig rig(feature_bit(VIRTIO_NET_F_MRG_RXBUF));
    FAIL() << "a legacy-only vhost-net was accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("does not offer VIRTIO_F_VERSION_1"), std::string::npos)
        << e.what();
  }
}

TEST(VhostNet, TheFlagsRules) {
  const VirtioDeviceKind* kind = find_virtio_device_kind("virtio_net");
  ASSERT_NE(kind, nullptr);
  auto problems = [&](std::string_view value) {
    return check_spec(spec_from_flag(*kind, value), HostFiles::real());
  };
  EXPECT_TRUE(problems("tap=t0,vhost=on").empty());
  EXPECT_TRUE(problems("tap=t0,vhost=off,num_queues=2").empty());
  using Lines = std::vector<std::string>;
  EXPECT_EQ(problems("tap=t0,vhost=yes"),
            Lines{"--net tap=t0,vhost=yes: vhost=\"yes\" must be on or off"});
  EXPECT_TRUE(problems("tap=t0,vhost=on,num_queues=2").empty());  // a vhost device per pair
  EXPECT_EQ(problems("tap=t0,vhost=on,iothread=on"),
            Lines{"--net tap=t0,vhost=on,iothread=on: vhost=on has no transmit thread of its own "
                  "(iothread=)"});
  EXPECT_EQ(problems("tap=t0,vhost=on,num_queues=17"),
            Lines{"--net tap=t0,vhost=on,num_queues=17: num_queues '17' is not a number from 1 to "
                  "16"});
  // poll_us is the kernel worker's polling.
  EXPECT_TRUE(problems("tap=t0,vhost=on,poll_us=50").empty());
  EXPECT_EQ(problems("tap=t0,vhost=on,poll_us=5000"),
            Lines{"--net tap=t0,vhost=on,poll_us=5000: poll_us=\"5000\" must be a number of "
                  "microseconds from 0 to 1000"});
  EXPECT_NE(kind->describe(spec_from_flag(*kind, "tap=t0,vhost=on,poll_us=50"), 0, "vm")
                .find("polls drained rings up to 50 µs"),
            std::string::npos);
  EXPECT_TRUE(problems("tap=t0,vhost=on,transport=pci").empty());
  // A sandbox gives the device /dev/vhost-net as well as /dev/net/tun.
  const auto paths = kind->host_paths(spec_from_flag(*kind, "tap=t0,vhost=on"));
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_EQ(paths[1].path, "/dev/vhost-net");
  EXPECT_NE(kind->describe(spec_from_flag(*kind, "tap=t0,vhost=on"), 0, "vm").find("vhost-net"),
            std::string::npos);
}

}  // namespace virtio_vhost_net_test
}  // namespace libvmm
