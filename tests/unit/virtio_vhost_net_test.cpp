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
namespace {

using test::DriverRing;
using test::FakeIrq;
using test::MmioDriver;
using test::PciDriver;
using test::RingLayout;
using test::TestMemory;

constexpr uint64_t bit(unsigned n) {
  return 1ull << n;
}

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

constexpr uint64_t kKernelFeatures = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) |
                                     bit(29) | bit(28) | bit(27) | bit(VIRTIO_F_NOTIFY_ON_EMPTY);

struct Rig {
  TestMemory memory{0x100000};
  std::shared_ptr<KernelLog> kernel = std::make_shared<KernelLog>();
  std::shared_ptr<TapBackend> tap;
  std::shared_ptr<VhostNet> device;
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::unique_ptr<VirtioMmioTransport> transport;
  UniqueFd kick[2] = {UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
                      UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))};
  UniqueFd call[2] = {UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
                      UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))};
  UniqueFd peer;  // the other end of the "TAP"

  explicit Rig(uint64_t features = kKernelFeatures, uint32_t poll_us = 0) {
    int pair[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
    tap = std::make_shared<TapBackend>(UniqueFd(pair[0]), "tap test");
    peer = UniqueFd(pair[1]);
    VhostNetOptions o;
    o.mac = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
    o.mtu = 9000;
    o.poll_us = poll_us;
    device =
        std::make_shared<VhostNet>(o, std::make_unique<FakeKernel>(kernel, features), tap, memory);
    device->set_queue_eventfds({{kick[0].get(), call[0].get()}, {kick[1].get(), call[1].get()}});
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
    EXPECT_TRUE(offered & bit(b)) << "bit " << b;
  }
  // Not the kernel's own header handling, nor multiqueue (no control queue here).
  EXPECT_FALSE(offered & bit(27));
  EXPECT_FALSE(offered & bit(VIRTIO_NET_F_MQ));
  EXPECT_FALSE(offered & bit(VIRTIO_NET_F_CTRL_VQ));
  // The config space: the MAC, link up, the MTU.
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 0x12005452u);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4) & 0xffffu, 0x5634u);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 8) >> 16, 9000u);
}

TEST(VhostNet, HandsTheQueuesAndTheTapToTheKernelAtDriverOk) {
  Rig rig;
  rig.kernel->taken();
  const uint64_t accepted = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) |
                            bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_CSUM) | bit(29);
  rig.bring_up(accepted);
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // The kernel hears only of what it offered; the MAC and the offloads stay here and in the TAP.
  const auto calls = rig.kernel->taken();
  const std::vector<std::string> expected = {
      fmt::format("set_features {:#x}",
                  bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(29)),
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
  rig.bring_up(bit(VIRTIO_F_VERSION_1));
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const auto calls = rig.kernel->taken();
  for (const char* want : {"set_vring_busyloop_timeout 0 50", "set_vring_busyloop_timeout 1 50"}) {
    EXPECT_NE(std::find(calls.begin(), calls.end(), want), calls.end()) << want;
  }
  // Without poll_us the kernel's default (no polling) is left alone.
  Rig plain;
  plain.bring_up(bit(VIRTIO_F_VERSION_1));
  for (const std::string& call : plain.kernel->taken()) {
    EXPECT_FALSE(call.starts_with("set_vring_busyloop_timeout")) << call;
  }
}

TEST(VhostNet, ARefusedIoctlStopsWhatStartedAndNeedsReset) {
  Rig rig;
  rig.kernel->refuse = "set_backend 1 fd";
  rig.bring_up(bit(VIRTIO_F_VERSION_1));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const auto calls = rig.kernel->taken();
  ASSERT_GE(calls.size(), 2u);
  EXPECT_EQ(calls[calls.size() - 2], "set_backend 0 none");  // queue 0 had started
  EXPECT_EQ(calls.back(), "get_vring_base 0");
  // The driver's reset and a new bring-up recover: the kernel is still there.
  rig.kernel->refuse.clear();
  rig.bring_up(bit(VIRTIO_F_VERSION_1));
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VhostNet, AQueueTheKernelStopsNeedsReset) {
  test::LoopThread loop;
  Rig rig;
  loop.call([&] { rig.device->watch(loop.loop); });
  rig.bring_up(bit(VIRTIO_F_VERSION_1));
  ASSERT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // The kernel's vq_err(): the transmit queue's error eventfd.
  const uint64_t one = 1;
  ASSERT_EQ(::write(rig.kernel->error_fd[1], &one, sizeof one), 8);
  for (int i = 0; i < 500 && !(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_GE(rig.irq->pulses.load(), 1);  // the driver hears of it (config interrupt)
  rig.bring_up(bit(VIRTIO_F_VERSION_1));
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  loop.call([&] {  // the device leaves the loop from the loop's own thread
    rig.transport.reset();
    rig.device.reset();
  });
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
  ASSERT_TRUE(drv.negotiate(bit(VIRTIO_F_VERSION_1)));
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
  ASSERT_TRUE(drv.negotiate(bit(VIRTIO_F_VERSION_1)));
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
  ASSERT_TRUE(drv.negotiate(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MAC)));
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

  pci->device_failed("vhost-net0: the host kernel stopped the transmit queue");
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
    Rig rig(bit(VIRTIO_NET_F_MRG_RXBUF));
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
  EXPECT_EQ(problems("tap=t0,vhost=on,num_queues=2"),
            Lines{"--net tap=t0,vhost=on,num_queues=2: vhost=on serves one queue pair "
                  "(num_queues=1)"});
  EXPECT_EQ(problems("tap=t0,vhost=on,iothread=on"),
            Lines{"--net tap=t0,vhost=on,iothread=on: vhost=on has no transmit thread of its own "
                  "(iothread=)"});
  // One queue pair however it is written; poll_us is the kernel worker's polling.
  EXPECT_TRUE(problems("tap=t0,vhost=on,num_queues=01").empty());
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

}  // namespace
}  // namespace libvmm
