// The vhost-user back-end (VhostUserBackend) serving a VirtioBlock on a temporary image, and a
// VirtioNet on an in-memory network backend, and a VirtioConsole on an in-memory character
// backend: end to end against our own front-end (VhostUserDevice
// behind the virtio-mmio transport, a test driver writing requests into guest memory, kicks and
// calls through real eventfds), and against a raw front-end on a socket pair sending each class of
// malformed message, after which the back-end must have closed the connection (and not crashed).
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_console.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_snd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/backends/sound_backend.hpp"
#include "libvmm/backends/vhost_user.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/console.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/sound.hpp"
#include "libvmm/virtio/vhost_user.hpp"
#include "libvmm/virtio/vhost_user_backend.hpp"
#include "unit/support/char_io.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/fake_net_backend.hpp"
#include "unit/support/loop_thread.hpp"
#include "unit/support/virtio_kit.hpp"

namespace libvmm {
namespace virtio_vhost_user_backend_test {

using test::DriverRing;
using test::FakeIrq;
using test::FakeNetBackend;
using test::LoopThread;
using test::MmioDriver;
using test::RingLayout;
using test::TestMemory;
using vhost::Message;
using vhost::Request;

constexpr uint64_t kImageSize = 1 << 20;

// A raw image of kImageSize bytes, byte i = i * 7 (mod 256), removed at the end.
class TempImage {
 public:
  TempImage() {
    path_ = std::filesystem::temp_directory_path() /
            fmt::format("libvmm-vhost-backend-{}-{}.img", ::getpid(), counter_++);
    std::ofstream out(path_, std::ios::binary);
    for (uint64_t i = 0; i < kImageSize; ++i) out.put(static_cast<char>(i * 7));
  }
  ~TempImage() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }
  std::vector<uint8_t> read(uint64_t offset, size_t len) const {
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    std::vector<uint8_t> data(len);
    in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(len));
    return data;
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

bool wait_readable(int fd, int timeout_ms = 5000) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

enum class Kind { blk, net, console, sound };
constexpr MacAddress kMac{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};

// The block device (or the network device), served on a loop thread to whatever is on the
// other end of a socket pair.
struct Served {
  TempImage image;                                                            // the block device's
  std::shared_ptr<FakeNetBackend> host = std::make_shared<FakeNetBackend>();  // the network's
  std::shared_ptr<test::FakeCharBackend> chars = std::make_shared<test::FakeCharBackend>();
  std::unique_ptr<VirtioDevice> device;
  LoopThread loop;
  std::unique_ptr<VhostUserBackend> backend;
  std::atomic<int> closes{0};
  std::string why;  // of the close, once closes > 0

  explicit Served(bool io_thread = true)
      : device(std::make_unique<VirtioBlock>(
            BlockConfig{image.path(), false, false, "vhost-serial", BlockIo::sync, io_thread})) {}
  explicit Served(Kind kind) : device(make(kind)) {}
  explicit Served(std::unique_ptr<VirtioDevice> d) : device(std::move(d)) {}
  std::unique_ptr<VirtioDevice> make(Kind kind) {
    switch (kind) {
      case Kind::net:
        return std::make_unique<VirtioNet>(host, kMac, 1400);
      case Kind::console:
        return std::make_unique<VirtioConsole>(chars);
      case Kind::sound:
        return std::make_unique<VirtioSound>(std::make_unique<NullSoundBackend>());
      case Kind::blk:
        break;
    }
    return std::make_unique<VirtioBlock>(
        BlockConfig{image.path(), false, false, "", BlockIo::sync, true});
  }
  ~Served() {
    loop.call([&] { backend.reset(); });
  }
  // The front-end's end of a fresh connection.
  UniqueFd connect() {
    int pair[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    loop.call([&] {
      backend = std::make_unique<VhostUserBackend>(*device, loop.loop, UniqueFd(pair[1]),
                                                   "front-end on test.sock",
                                                   [this](const std::string& w) {
                                                     why = w;
                                                     ++closes;
                                                   });
    });
    return UniqueFd(pair[0]);
  }
  bool closed() {
    bool c = false;
    loop.call([&] { c = backend && backend->closed(); });
    return c;
  }
};

// --- End to end with our front-end

// Our front-end's options for a one-queue device of type 2 (block) on "test.sock".
VhostUserOptions one_queue_options(std::string name, uint32_t config_size) {
  VhostUserOptions o;
  o.name = std::move(name);
  o.device_id = 2;
  o.socket = "test.sock";
  o.queue_sizes = {256};
  o.config_size = config_size;
  return o;
}

struct Rig {
  Served served;
  TestMemory memory;
  std::shared_ptr<VhostUserDevice> front;
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::unique_ptr<VirtioMmioTransport> transport;
  UniqueFd kick{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  UniqueFd call{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  std::unique_ptr<DriverRing> ring;

  // `foreign_ram`: guest RAM as another front-end may share it, unsealed (vmm's memfds are
  // sealed against shrinking).
  explicit Rig(bool io_thread = true, bool foreign_ram = false)
      : served(io_thread),
        memory(foreign_ram ? TestMemory(0x200000, TestMemory::Unsealed{}) : TestMemory(0x200000)) {
    VhostUserOptions o = one_queue_options("vhost-user-blk0", 60);
    o.device_feature_mask = feature_bit(VIRTIO_BLK_F_SIZE_MAX) | feature_bit(VIRTIO_BLK_F_SEG_MAX) |
                            feature_bit(VIRTIO_BLK_F_BLK_SIZE) | feature_bit(VIRTIO_BLK_F_FLUSH);
    o.timeout_ms = 5000;
    front = std::make_shared<VhostUserDevice>(std::move(o), memory, served.connect());
    front->set_queue_eventfds({{kick.get(), call.get()}});
    transport = std::make_unique<VirtioMmioTransport>(front, memory, irq);
  }
  MmioDriver driver() { return MmioDriver(*transport); }
  void bring_up(uint64_t features) {
    ASSERT_TRUE(driver().negotiate(features));
    if (ring) {
      ring->restart();  // as a driver does after a reset
    } else {
      ring = std::make_unique<DriverRing>(memory, 64, RingLayout::at(0x10000));
    }
    driver().setup_queue(0, *ring);
    driver().driver_ok();
    ASSERT_FALSE(driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  }
  // One request: header, data buffers, status byte. Returns the status once it is used.
  uint8_t request(uint32_t type, uint64_t sector, uint64_t data_gpa, uint32_t data_len,
                  bool data_writable) {
    virtio_blk_outhdr header{type, 0, sector};
    const uint64_t h =
        ring->place(std::span(reinterpret_cast<const uint8_t*>(&header), sizeof header));
    const uint64_t status = ring->alloc(1);
    EXPECT_TRUE(memory.fill(status, 0xee, 1));
    const uint16_t before = ring->used_idx();
    if (data_len > 0) {
      ring->add_chain(
          {{h, sizeof header, false}, {data_gpa, data_len, data_writable}, {status, 1, true}});
    } else {
      ring->add_chain({{h, sizeof header, false}, {status, 1, true}});
    }
    driver().notify(0);  // the front-end passes it to the kick eventfd
    // The back-end signals the call eventfd (the irqfd in a VM) once the request is used.
    for (int i = 0; i < 50 && ring->used_idx() == before; ++i) {
      if (wait_readable(call.get(), 100)) {
        uint64_t n;
        EXPECT_EQ(::read(call.get(), &n, sizeof n), 8);
      }
    }
    EXPECT_NE(ring->used_idx(), before) << "the request was not used";
    return memory.bytes(status, 1)[0];
  }
};

void serves_reads_writes_and_flushes(bool io_thread) {
  Rig rig(io_thread);
  // The config space is the device's: capacity in sectors first.
  EXPECT_EQ(rig.driver().reg(VIRTIO_MMIO_CONFIG), kImageSize / 512);
  EXPECT_TRUE(rig.driver().device_features() & feature_bit(VIRTIO_BLK_F_FLUSH));
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_BLK_F_FLUSH) |
               feature_bit(VIRTIO_RING_F_EVENT_IDX));

  // Read sector 2: the image's pattern.
  const uint64_t data = rig.ring->alloc(1024);
  ASSERT_EQ(rig.request(VIRTIO_BLK_T_IN, 2, data, 1024, true), VIRTIO_BLK_S_OK);
  const std::vector<uint8_t> read = rig.memory.bytes(data, 1024);
  EXPECT_EQ(read, rig.served.image.read(1024, 1024));
  EXPECT_EQ(read[0], static_cast<uint8_t>(1024 * 7));

  // Write sector 5, FLUSH, and the image has it.
  std::vector<uint8_t> pattern(512);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(0xa5 ^ i);
  const uint64_t out = rig.ring->place(pattern);
  ASSERT_EQ(rig.request(VIRTIO_BLK_T_OUT, 5, out, 512, false), VIRTIO_BLK_S_OK);
  ASSERT_EQ(rig.request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);
  EXPECT_EQ(rig.served.image.read(5 * 512, 512), pattern);

  // A request past the end of the disk is the device's usual IOERR, not a broken connection.
  ASSERT_EQ(rig.request(VIRTIO_BLK_T_IN, kImageSize / 512, data, 512, true), VIRTIO_BLK_S_IOERR);
  EXPECT_FALSE(rig.served.closed());

  // Reset: GET_VRING_BASE stops the ring; the device can be brought up again from index 0.
  rig.driver().set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_FALSE(rig.served.closed());
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_BLK_F_FLUSH));
  ASSERT_EQ(rig.request(VIRTIO_BLK_T_IN, 5, data, 512, true), VIRTIO_BLK_S_OK);
  EXPECT_EQ(rig.memory.bytes(data, 512), pattern);
}

TEST(VhostUserBackend, ServesReadsWritesAndFlushesOnItsIoThread) {
  serves_reads_writes_and_flushes(true);
}

TEST(VhostUserBackend, ServesReadsWritesAndFlushesOnTheLoop) {
  serves_reads_writes_and_flushes(false);
}

TEST(VhostUserBackend, AFrontEndHangingUpResetsTheDeviceForTheNext) {
  Served served;
  {
    TestMemory memory{0x200000};
    VhostUserDevice front(one_queue_options("vhost-user-blk0", 60), memory, served.connect());
  }
  for (int i = 0; i < 100 && served.closes == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(served.closes, 1);
  EXPECT_EQ(served.why, "");  // an orderly end
  // The next front-end is served.
  Rig rig;
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  const uint64_t data = rig.ring->alloc(512);
  EXPECT_EQ(rig.request(VIRTIO_BLK_T_IN, 0, data, 512, true), VIRTIO_BLK_S_OK);
}

// A front-end that shrinks the memory it shared: the back-end's next touch of it is a SIGBUS,
// caught (core/sigbus_guard.hpp); the connection closes with a log line and the process goes on.
TEST(VhostUserBackend, AFrontEndShrinkingItsMemoryIsDroppedNotFatal) {
  Rig rig(true, /*foreign_ram=*/true);
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1));
  virtio_blk_outhdr header{VIRTIO_BLK_T_IN, 0, 0};
  const uint64_t h =
      rig.ring->place(std::span(reinterpret_cast<const uint8_t*>(&header), sizeof header));
  const uint64_t data = rig.ring->alloc(512);
  const uint64_t status = rig.ring->alloc(1);
  rig.ring->add_chain({{h, sizeof header, false}, {data, 512, true}, {status, 1, true}});
  // From here on this test must not touch the guest RAM either: it shares the same file.
  ASSERT_EQ(::ftruncate(rig.memory.find(0)->region->fd(), 0), 0);
  rig.driver().notify(0);
  for (int i = 0; i < 200 && rig.served.closes == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(rig.served.closes, 1);
  EXPECT_NE(rig.served.why.find("shrank the guest memory it shared"), std::string::npos)
      << rig.served.why;
}

// A ring whose used ring starts right after the available ring's flags, so that the used
// ring's flags are the available index (the vhost_device fuzzer's find): turning notifications
// off and on wrote 1 and 0 there, "more available" each time with nothing to take, and the
// device's drain loop, and the back-end's loop with it, went round forever. The queue now
// breaks (the available index went back); the connection stays up and answers the reset.
TEST(VhostUserBackend, AnAvailableIndexFlippingBackDoesNotHoldUpTheConnection) {
  Rig rig(false);  // requests served on the loop itself
  ASSERT_TRUE(rig.driver().negotiate(feature_bit(VIRTIO_F_VERSION_1) |
                                     feature_bit(VIRTIO_RING_F_INDIRECT_DESC)));
  rig.ring =
      std::make_unique<DriverRing>(rig.memory, 1, RingLayout{0x10000, 0x10ffe, 0x11000, 0x13000});
  rig.driver().setup_queue(0, *rig.ring);
  rig.driver().driver_ok();
  virtio_blk_outhdr header{VIRTIO_BLK_T_IN, 0, 0};
  const uint64_t h =
      rig.ring->place(std::span(reinterpret_cast<const uint8_t*>(&header), sizeof header));
  const uint64_t data = rig.ring->alloc(512);
  const uint64_t status = rig.ring->alloc(1);
  const std::vector<test::Buffer> chain{
      {h, sizeof header, false}, {data, 512, true}, {status, 1, true}};
  rig.ring->add_indirect_chain(rig.ring->alloc(3 * 16), chain);  // the ring's one descriptor
  rig.driver().notify(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  const auto start = std::chrono::steady_clock::now();
  rig.driver().set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_FALSE(rig.served.closed());
}

// A device that, the first few times its queue is notified, asks its transport to call it again
// (VirtioTransport::renotify: how a device that stops draining a busy queue after its budget
// comes back to it).
class RenotifyingDevice : public VirtioDevice {
 public:
  std::string name() const override { return "renotifying"; }
  uint32_t device_id() const override { return 2; }
  uint64_t device_features() const override { return 0; }
  std::vector<uint16_t> queue_max_sizes() const override { return {256}; }
  uint32_t config_size() const override { return 0; }
  void read_config(uint32_t, std::span<uint8_t>) override {}
  void activate(VirtioTransport& transport, uint64_t) override { transport_ = &transport; }
  void queue_notify(uint16_t index, Virtqueue&) override {
    if (++notified <= kRenotifies) asked = transport_->renotify(index);
  }
  void reset() override { transport_ = nullptr; }

  static constexpr int kRenotifies = 5;  // more than stray kicks could account for
  std::atomic<int> notified{0};
  std::atomic<bool> asked{false};

 private:
  VirtioTransport* transport_ = nullptr;
};

// The back-end arranges that call as a task on its loop: the device is notified again each
// time, with no kick from the front-end.
TEST(VhostUserBackend, ARenotifyingDeviceIsCalledAgainWithoutAKick) {
  auto owned = std::make_unique<RenotifyingDevice>();
  RenotifyingDevice& device = *owned;
  Served served(std::move(owned));
  TestMemory memory{0x200000};
  auto front = std::make_shared<VhostUserDevice>(one_queue_options("vhost-user-renotifying0", 0),
                                                 memory, served.connect());
  UniqueFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  UniqueFd call(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  front->set_queue_eventfds({{kick.get(), call.get()}});
  VirtioMmioTransport transport(front, memory, std::make_shared<FakeIrq>());
  MmioDriver driver(transport);
  ASSERT_TRUE(driver.negotiate(feature_bit(VIRTIO_F_VERSION_1)));
  DriverRing ring(memory, 64, RingLayout::at(0x10000));
  driver.setup_queue(0, ring);
  driver.driver_ok();
  // Starting the ring calls the device once (buffers made available before it started).
  for (int i = 0; i < 100 && device.notified <= RenotifyingDevice::kRenotifies; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(device.asked);
  EXPECT_GT(device.notified, RenotifyingDevice::kRenotifies);
  EXPECT_FALSE(served.closed());
}

// --- Malformed messages from a raw front-end

// A memfd of `size` bytes (guest RAM as a front-end shares it).
UniqueFd memfd(uint64_t size) {
  UniqueFd fd(::memfd_create("front-end-ram", MFD_CLOEXEC));
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  return fd;
}

Message raw(uint32_t request, std::vector<uint8_t> payload, uint32_t flags = vhost::kVersion) {
  Message m;
  m.request = request;
  m.flags = flags;
  m.payload = std::move(payload);
  return m;
}

// A message to send (its header and payload: copyable, unlike Message) and its descriptors.
struct Step {
  uint32_t request = 0;
  uint32_t flags = vhost::kVersion;
  std::vector<uint8_t> payload;
  std::vector<int> fds;

  Step(const Message& m, std::vector<int> with = {})
      : request(m.request), flags(m.flags), payload(m.payload), fds(std::move(with)) {}
  Message message() const {
    Message m;
    m.request = request;
    m.flags = flags;
    m.payload = payload;
    return m;
  }
};

// Sends `steps` to a fresh back-end; true if it closed the connection after the last one (and
// not before: the steps before it are accepted).
::testing::AssertionResult refused_after(std::vector<Step> steps, const std::string& expect_in_why,
                                         Kind kind = Kind::blk) {
  Served served(kind);
  UniqueFd front = served.connect();
  vhost::Channel channel(std::move(front), "back-end");
  for (size_t i = 0; i < steps.size(); ++i) {
    try {
      channel.send(steps[i].message(), steps[i].fds);
    } catch (const vhost::VhostError& e) {
      return ::testing::AssertionFailure() << "step " << i << ": " << e.what();
    }
    // Let the back-end act on it before looking.
    served.loop.call([] {});
    const bool last = i + 1 == steps.size();
    if (!last && served.closed()) {
      return ::testing::AssertionFailure()
             << "closed after step " << i << " of " << steps.size() << ": " << served.why;
    }
  }
  for (int i = 0; i < 100 && served.closes == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    served.loop.call([] {});
  }
  if (served.closes == 0) return ::testing::AssertionFailure() << "the connection stayed open";
  if (served.why.find(expect_in_why) == std::string::npos) {
    return ::testing::AssertionFailure() << "closed because: " << served.why;
  }
  // The socket is closed on the back-end's side too.
  char byte;
  if (!wait_readable(channel.fd()) || ::recv(channel.fd(), &byte, 1, MSG_DONTWAIT) != 0) {
    return ::testing::AssertionFailure() << "the back-end kept its end of the socket";
  }
  return ::testing::AssertionSuccess();
}

Message mem_table(std::vector<vhost::MemRegion> regions) {
  return Message::with_mem_table(regions);
}

// The steps that start queue 0 of the block device: a 2 MiB memory table mapping
// guest-physical 0 at the front-end's 0x7000000, the ring's size, its addresses (descriptors
// at +0x1000, driver area at +0x2000, device area at `used`) and its kick (without protocol
// features a kicked ring is enabled). `ram` and `kick` must outlive the steps.
std::vector<Step> ring_start(int ram, int kick, uint64_t used = 0x7000000 + 0x3000) {
  vhost::VringAddr addr;
  addr.desc = 0x7000000 + 0x1000;
  addr.avail = 0x7000000 + 0x2000;
  addr.used = used;
  return {{mem_table({{0, 0x200000, 0x7000000, 0}}), {ram}},
          {Message::with_state(Request::set_vring_num, {0, 16}), {}},
          {Message::with_addr(addr), {}},
          {Message::with_u64(Request::set_vring_kick, 0), {kick}}};
}

// A device of two queues that counts how often it is activated and reset.
class CountingDevice final : public VirtioDevice {
 public:
  std::string name() const override { return "counting"; }
  uint32_t device_id() const override { return 3; }
  uint64_t device_features() const override { return 0; }
  std::vector<uint16_t> queue_max_sizes() const override { return {64, 64}; }
  uint32_t config_size() const override { return 0; }
  void read_config(uint32_t, std::span<uint8_t>) override {}
  void activate(VirtioTransport&, uint64_t) override { ++activations; }
  void queue_notify(uint16_t, Virtqueue&) override {}
  void reset() override { ++resets; }
  int activations = 0;  // the loop thread's
  int resets = 0;
};

// SET_MEM_TABLE starts two rings; the first one's kick turns out hung up, which closes the
// connection while the message is still handled. The second must not start then: it did, and
// left the device active with this transport, and its kick on the loop, after the back-end was
// gone (the destructor of a closed connection stopped nothing).
TEST(VhostUserBackend, NoRingStartsOnceTheConnectionClosedWithinAMessage) {
  auto owned = std::make_unique<CountingDevice>();
  CountingDevice& device = *owned;
  Served served(std::move(owned));
  vhost::Channel channel(served.connect(), "back-end");
  const UniqueFd ram = memfd(0x200000);
  int ends[2];
  ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
  const UniqueFd hung_up(ends[0]);
  ::close(ends[1]);
  const UniqueFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const auto addr = [](uint32_t index) {
    vhost::VringAddr a;
    a.index = index;
    a.desc = 0x7000000 + 0x10000 * (index + 1);
    a.avail = a.desc + 0x1000;
    a.used = a.desc + 0x2000;
    return a;
  };
  const std::vector<Step> steps = {
      {Message::with_u64(Request::set_features, feature_bit(VIRTIO_F_VERSION_1)), {}},
      {Message::with_state(Request::set_vring_num, {0, 16}), {}},
      {Message::with_addr(addr(0)), {}},
      {Message::with_u64(Request::set_vring_kick, 0), {hung_up.get()}},
      {Message::with_state(Request::set_vring_num, {1, 16}), {}},
      {Message::with_addr(addr(1)), {}},
      {Message::with_u64(Request::set_vring_kick, 1), {kick.get()}},
      {mem_table({{0, 0x200000, 0x7000000, 0}}), {ram.get()}}};
  for (const Step& step : steps) channel.send(step.message(), step.fds);
  for (int i = 0; i < 100 && served.closes == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    served.loop.call([] {});
  }
  ASSERT_EQ(served.closes, 1);
  EXPECT_NE(served.why.find("kick descriptor was closed"), std::string::npos) << served.why;
  served.loop.call([&] { EXPECT_EQ(device.activations, device.resets) << "left active"; });
}

TEST(VhostUserBackend, RefusesEachClassOfMalformedMessage) {
  // An unknown request, and one not offered (dirty logging).
  EXPECT_TRUE(refused_after({{raw(99, {}), {}}}, "request 99"));
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_log_base, 0), {}}}, "SET_LOG_BASE"));
  // Bad sizes.
  EXPECT_TRUE(refused_after({{raw(static_cast<uint32_t>(Request::set_features), {1, 2, 3}), {}}},
                            "3-byte payload"));
  EXPECT_TRUE(refused_after({{raw(static_cast<uint32_t>(Request::get_features), {0}), {}}},
                            "1-byte payload"));
  // A bad header: the reply flag on a request, another protocol version.
  EXPECT_TRUE(refused_after({{raw(1, {}, vhost::kVersion | vhost::kFlagReply), {}}}, "reply flag"));
  EXPECT_TRUE(refused_after({{raw(1, {}, 2), {}}}, "protocol version"));
  // Descriptors missing or extra.
  const UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_vring_kick, 0), {}}},
                            "0 file descriptor(s) (expected 1)"));
  EXPECT_TRUE(refused_after({{Message::make(Request::get_features), {ev.get()}}},
                            "1 file descriptor(s) (expected 0)"));
  // A kick without a descriptor, said so (the NOFD bit: "poll the ring"), is not supported.
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_vring_kick, 0 | (1u << 8)), {}}},
                            "polling is not supported"));
  // Queue indices out of range (the block device has one queue).
  EXPECT_TRUE(
      refused_after({{Message::with_state(Request::set_vring_num, {1, 16}), {}}}, "queue 1"));
  EXPECT_TRUE(
      refused_after({{Message::with_u64(Request::set_vring_call, 5), {ev.get()}}}, "queue 5"));
  // A ring size the queue cannot take.
  EXPECT_TRUE(
      refused_after({{Message::with_state(Request::set_vring_num, {0, 12}), {}}}, "power of two"));
  EXPECT_TRUE(refused_after({{Message::with_state(Request::set_vring_num, {0, 2048}), {}}},
                            "power of two"));
  EXPECT_TRUE(
      refused_after({{Message::with_state(Request::set_vring_base, {0, 70000}), {}}}, "16 bits"));
  // Features or protocol features that were not offered.
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_features, feature_bit(63)), {}}},
                            "not offered"));
  EXPECT_TRUE(refused_after(
      {{Message::with_u64(Request::set_protocol_features, feature_bit(15)), {}}}, "not offered"));
  // GET_CONFIG before CONFIG was negotiated.
  EXPECT_TRUE(refused_after({{Message::with_config(Request::get_config, {0, 0, {0, 0, 0, 0}}), {}}},
                            "PROTOCOL_F_CONFIG"));
  // A channel for the back-end's requests before BACKEND_REQ was negotiated.
  EXPECT_TRUE(refused_after({{Message::make(Request::set_backend_req_fd), {ev.get()}}},
                            "PROTOCOL_F_BACKEND_REQ"));
}

TEST(VhostUserBackend, RefusesMemoryTablesItCannotUse) {
  const UniqueFd ram = memfd(0x200000);
  const int fd = ram.get();
  // Too many regions.
  std::vector<vhost::MemRegion> nine;
  for (uint64_t i = 0; i < 9; ++i) nine.push_back({i * 0x1000, 0x1000, 0x10000 + i * 0x1000, 0});
  EXPECT_TRUE(refused_after({{mem_table(nine), std::vector<int>(8, fd)}}, "9 regions"));
  // Regions that overlap, in guest-physical or user addresses.
  EXPECT_TRUE(refused_after(
      {{mem_table({{0, 0x100000, 0x7000000, 0}, {0x80000, 0x100000, 0x9000000, 0}}), {fd, fd}}},
      "overlap in guest-physical"));
  EXPECT_TRUE(refused_after(
      {{mem_table({{0, 0x100000, 0x7000000, 0}, {0x100000, 0x100000, 0x7080000, 0}}), {fd, fd}}},
      "overlap in user addresses"));
  // A region larger than its descriptor (touching it would be a SIGBUS), or past it.
  EXPECT_TRUE(refused_after({{mem_table({{0, 0x400000, 0x7000000, 0}}), {fd}}},
                            "not inside the descriptor"));
  EXPECT_TRUE(refused_after({{mem_table({{0, 0x100000, 0x7000000, 0x180000}}), {fd}}},
                            "not inside the descriptor"));
  // A descriptor that is not memory (an eventfd).
  const UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  EXPECT_TRUE(refused_after({{mem_table({{0, 0x1000, 0x7000000, 0}}), {ev.get()}}}, "non-file"));
  // Rings outside the table: refused when the ring starts (its kick).
  EXPECT_TRUE(refused_after(ring_start(fd, ev.get(), 0x7000000 + 0x300000),  // past 2 MiB
                            "not inside the memory table"));
  // A ring the driver placed misaligned (the Virtqueue's own check).
  EXPECT_TRUE(refused_after(ring_start(fd, ev.get(), 0x7000000 + 0x3001), "queue 0"));
}

std::vector<Step> then(std::vector<Step> steps, std::vector<Step> more) {
  steps.insert(steps.end(), more.begin(), more.end());
  return steps;
}

// Features (VERSION_1), then ring_start(): queue 0 runs.
std::vector<Step> running_ring(int ram, int kick) {
  return then({{Message::with_u64(Request::set_features, feature_bit(VIRTIO_F_VERSION_1)), {}}},
              ring_start(ram, kick));
}

// A device that returns the first chain it takes and holds the rest, as sound holds what it
// has not played yet.
class HoldingDevice final : public VirtioDevice {
 public:
  std::string name() const override { return "holding"; }
  uint32_t device_id() const override { return 3; }
  uint64_t device_features() const override { return 0; }
  std::vector<uint16_t> queue_max_sizes() const override { return {64, 64}; }
  uint32_t config_size() const override { return 0; }
  void read_config(uint32_t, std::span<uint8_t>) override {}
  void activate(VirtioTransport&, uint64_t) override {}
  void queue_notify(uint16_t, Virtqueue& queue) override {
    while (auto chain = queue.pop()) {
      if (taken++ == 0) {
        queue.push(chain->head(), 0);
      } else {
        held.push_back(std::move(*chain));
      }
    }
  }
  void reset() override { held.clear(); }
  void queue_reset(uint16_t) override { held.clear(); }
  void return_held(uint16_t, Virtqueue& queue) override {
    for (const DescriptorChain& chain : held) queue.push(chain.head(), 0);
    held.clear();
  }
  int taken = 0;  // the loop thread's
  std::vector<DescriptorChain> held;
};

// GET_VRING_BASE (QEMU's stop, a migration) answers past every chain taken: the chains the
// device still holds go back to the driver first. Dropped with the stopped ring, they never
// came back (the driver's sound, console or receive buffers lost for good).
TEST(VhostUserBackend, AStoppedRingGivesBackTheChainsTheDeviceHolds) {
  Served served(std::make_unique<HoldingDevice>());
  vhost::Channel channel(served.connect(), "back-end");
  const UniqueFd ram = memfd(0x200000);
  const UniqueFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  for (const Step& step : running_ring(ram.get(), kick.get()))
    channel.send(step.message(), step.fds);
  // Three one-descriptor chains at heads 0, 1 and 2, made available (the ring's layout of
  // ring_start: descriptors at 0x1000, the driver area at 0x2000).
  void* map = ::mmap(nullptr, 0x200000, PROT_READ | PROT_WRITE, MAP_SHARED, ram.get(), 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* bytes = static_cast<uint8_t*>(map);
  for (uint16_t i = 0; i < 3; ++i) {
    vring_desc d{};
    d.addr = 0x10000 + 0x100 * i;
    d.len = 16;
    std::memcpy(bytes + 0x1000 + 16 * i, &d, sizeof d);
    std::memcpy(bytes + 0x2000 + 4 + 2 * i, &i, 2);
  }
  const uint16_t avail_idx = 3;
  std::memcpy(bytes + 0x2000 + 2, &avail_idx, 2);
  const uint64_t one = 1;
  ASSERT_EQ(::write(kick.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
  auto& device = static_cast<HoldingDevice&>(*served.device);
  for (int i = 0; i < 200; ++i) {
    int taken = 0;
    served.loop.call([&] { taken = device.taken; });
    if (taken == 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  served.loop.call([&] { ASSERT_EQ(device.held.size(), 2u); });
  channel.send(Message::with_state(Request::get_vring_base, {0, 0}));
  const vhost::VringState base =
      vhost::decode_reply_state(channel.receive(2000, true), Request::get_vring_base, 0);
  EXPECT_EQ(base.num, 3u);
  uint16_t used_idx = 0;
  std::memcpy(&used_idx, bytes + 0x3000 + 2, 2);
  EXPECT_EQ(used_idx, 3u) << "the two held chains given back too";
  served.loop.call([&] { EXPECT_TRUE(device.held.empty()); });
  EXPECT_FALSE(served.closed());
  ::munmap(map, 0x200000);
}

TEST(VhostUserBackend, RefusesChangesUnderARunningRing) {
  // A front-end may reconfigure a ring only after GET_VRING_BASE stopped it: the queue's
  // addresses and size are what the device reads guest memory through.
  const UniqueFd ram = memfd(0x200000);
  const UniqueFd kick(::eventfd(0, EFD_CLOEXEC));
  const std::vector<Step> running = running_ring(ram.get(), kick.get());
  vhost::VringAddr moved;
  moved.desc = 0x7000000 + 0x5000;
  moved.avail = 0x7000000 + 0x6000;
  moved.used = 0x7000000 + 0x7000;
  EXPECT_TRUE(refused_after(
      then(running, {{Message::with_state(Request::set_vring_num, {0, 8}), {}}}), "while it runs"));
  EXPECT_TRUE(refused_after(then(running, {{Message::with_addr(moved), {}}}), "while it runs"));
  EXPECT_TRUE(
      refused_after(then(running, {{Message::with_state(Request::set_vring_base, {0, 3}), {}}}),
                    "while it runs"));
  EXPECT_TRUE(refused_after(
      then(running, {{Message::with_u64(Request::set_features, feature_bit(VIRTIO_F_VERSION_1) |
                                                                   feature_bit(VIRTIO_BLK_F_FLUSH)),
                      {}}}),
      "while queues run"));
  // A new memory table may change everything but where the running ring is in guest memory.
  EXPECT_TRUE(
      refused_after(then(running, {{mem_table({{0x200000, 0x200000, 0x7000000, 0}}), {ram.get()}}}),
                    "moves the rings of queue 0"));
  // The same table again, and the same features again, are accepted: only the last step here
  // (an enable that is neither 0 nor 1) is refused.
  EXPECT_TRUE(refused_after(
      then(running,
           {{mem_table({{0, 0x200000, 0x7000000, 0}}), {ram.get()}},
            {Message::with_u64(Request::set_features, feature_bit(VIRTIO_F_VERSION_1)), {}},
            {Message::with_state(Request::set_vring_enable, {0, 2}), {}}}),
      "SET_VRING_ENABLE 2 for queue 0 (0 or 1)"));
}

TEST(VhostUserBackend, RefusesRingAddressFlagsItDoesNotOffer) {
  vhost::VringAddr addr;
  addr.flags = 1;  // VHOST_VRING_F_LOG: dirty logging (live migration), not offered
  EXPECT_TRUE(refused_after({{Message::with_addr(addr), {}}}, "dirty logging"));
  addr.flags = 0x6;
  EXPECT_TRUE(refused_after({{Message::with_addr(addr), {}}}, "unknown flags 0x6"));
}

TEST(VhostUserBackend, AResetDeviceStopsTheRingsForANewSetUp) {
  // QEMU's front-end resets a device with RESET_DEVICE where it was negotiated (RESET_OWNER
  // before it): the rings stop and forget their set-up, the features go. What was refused
  // under a running ring is then accepted; only the last step is refused.
  const UniqueFd ram = memfd(0x200000);
  const UniqueFd kick(::eventfd(0, EFD_CLOEXEC));
  for (const Request reset : {Request::reset_device, Request::reset_owner}) {
    EXPECT_TRUE(refused_after(
        then(running_ring(ram.get(), kick.get()),
             {{Message::make(reset), {}},
              {Message::with_state(Request::set_vring_num, {0, 8}), {}},
              {Message::with_u64(Request::set_features,
                                 feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_BLK_F_FLUSH)),
               {}},
              {Message::with_state(Request::set_vring_enable, {0, 2}), {}}}),
        "(0 or 1)"))
        << vhost::request_name(static_cast<uint32_t>(reset));
  }
}

TEST(VhostUserBackend, AnswersTheSetUpQueries) {
  Served served;
  vhost::Channel channel(served.connect(), "back-end");
  channel.send(Message::make(Request::get_features));
  const uint64_t features =
      vhost::decode_reply_u64(channel.receive(2000, true), Request::get_features);
  EXPECT_TRUE(features & feature_bit(VIRTIO_F_VERSION_1));
  EXPECT_TRUE(features & vhost::kFeatureProtocolFeatures);
  EXPECT_TRUE(features & feature_bit(VIRTIO_BLK_F_FLUSH));
  channel.send(Message::make(Request::get_protocol_features));
  const uint64_t protocol =
      vhost::decode_reply_u64(channel.receive(2000, true), Request::get_protocol_features);
  EXPECT_EQ(protocol, VhostUserBackend::offered_protocol_features());
  channel.send(Message::with_u64(Request::set_protocol_features, protocol));
  channel.send(Message::make(Request::get_queue_num));
  EXPECT_EQ(vhost::decode_reply_u64(channel.receive(2000, true), Request::get_queue_num), 1u);
  channel.send(Message::make(Request::get_max_mem_slots));
  EXPECT_EQ(vhost::decode_reply_u64(channel.receive(2000, true), Request::get_max_mem_slots),
            vhost::kMaxRegions);
  // REPLY_ACK: a request asking for it gets a zero status.
  Message owner = Message::make(Request::set_owner);
  owner.flags |= vhost::kFlagNeedReply;
  channel.send(owner);
  vhost::decode_reply_ack(channel.receive(2000, true), Request::set_owner);
  // GET_CONFIG past the device's config space reads zeroes there.
  vhost::ConfigSpace ask;
  ask.data.assign(256, 0xff);
  channel.send(Message::with_config(Request::get_config, ask));
  const vhost::ConfigSpace got = vhost::decode_reply_config(channel.receive(2000, true), 0, 256);
  uint64_t capacity;
  std::memcpy(&capacity, got.data.data(), 8);
  EXPECT_EQ(capacity, kImageSize / 512);
  EXPECT_EQ(got.data[255], 0);
  EXPECT_FALSE(served.closed());
}

// --- A disk the host grew: the back-end's CONFIG_CHANGE_MSG (vmm-device's SIGUSR1)

// What vmm-device does on SIGUSR1, on the back-end's loop: true if the device changed.
bool rescan_and_tell(Served& served) {
  bool changed = false;
  served.loop.call([&] {
    changed = served.device->rescan();
    if (changed) served.backend->notify_config_change();
  });
  return changed;
}

TEST(VhostUserBackend, ADiskGrownOnTheHostReachesOurFrontEndsDriver) {
  LoopThread front_loop;  // where our front-end reads the back-end's channel
  Rig rig;
  front_loop.call([&] { rig.front->watch(front_loop.loop); });
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_BLK_F_FLUSH));
  EXPECT_EQ(rig.driver().reg(VIRTIO_MMIO_CONFIG), kImageSize / 512);
  const uint32_t generation = rig.driver().reg(VIRTIO_MMIO_CONFIG_GENERATION);
  const uint64_t data = rig.ring->alloc(512);
  EXPECT_EQ(rig.request(VIRTIO_BLK_T_IN, kImageSize / 512, data, 512, true), VIRTIO_BLK_S_IOERR);

  EXPECT_FALSE(rescan_and_tell(rig.served)) << "nothing changed yet";
  std::filesystem::resize_file(rig.served.image.path(), 2 * kImageSize);
  ASSERT_TRUE(rescan_and_tell(rig.served));
  bool interrupted = false;
  for (int i = 0; i < 500 && !interrupted; ++i) {
    interrupted = rig.driver().reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG;
    if (!interrupted) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(interrupted) << "no config interrupt";
  EXPECT_NE(rig.driver().reg(VIRTIO_MMIO_CONFIG_GENERATION), generation);
  EXPECT_EQ(rig.driver().reg(VIRTIO_MMIO_CONFIG), 2 * kImageSize / 512);
  // The sectors past the old end are the disk's now.
  EXPECT_EQ(rig.request(VIRTIO_BLK_T_IN, kImageSize / 512, data, 512, true), VIRTIO_BLK_S_OK);
  EXPECT_FALSE(rig.served.closed());
  front_loop.call([&] {
    rig.transport.reset();
    rig.front.reset();
  });
}

// The front-end's end of a back-end request channel, set up over a raw connection.
struct RequestChannel {
  Served served;
  vhost::Channel channel{served.connect(), "back-end"};
  UniqueFd ours;  // the front-end's end of the back-end's requests

  // `send_buffer`: the channel's, in bytes (0: the system's).
  explicit RequestChannel(int send_buffer = 0) {
    channel.send(Message::with_u64(Request::set_protocol_features,
                                   VhostUserBackend::offered_protocol_features()));
    int pair[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    ours = UniqueFd(pair[0]);
    const UniqueFd theirs(pair[1]);
    const int fd = theirs.get();
    if (send_buffer > 0) {
      EXPECT_EQ(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer), 0);
    }
    // Acknowledged (REPLY_ACK): the back-end has the channel once the answer is here.
    Message give = Message::make(Request::set_backend_req_fd);
    give.flags |= vhost::kFlagNeedReply;
    channel.send(give, std::span(&fd, 1));
    vhost::decode_reply_ack(channel.receive(2000, true), Request::set_backend_req_fd);
  }
};

TEST(VhostUserBackend, SendsAConfigChangeOnTheChannelTheFrontEndGave) {
  RequestChannel rc;
  std::filesystem::resize_file(rc.served.image.path(), 3 * kImageSize);
  ASSERT_TRUE(rescan_and_tell(rc.served));
  vhost::Channel requests(std::move(rc.ours), "back-end (its requests)", true);
  const Message change = requests.receive(2000, false);
  EXPECT_EQ(vhost::decode_backend_request(change), vhost::BackendRequest::config_change_msg);
  EXPECT_EQ(change.flags, vhost::kVersion) << "no reply asked for";
  // The front-end then reads the new capacity with GET_CONFIG.
  vhost::ConfigSpace ask;
  ask.data.assign(8, 0);
  rc.channel.send(Message::with_config(Request::get_config, ask));
  const vhost::ConfigSpace got = vhost::decode_reply_config(rc.channel.receive(2000, true), 0, 8);
  uint64_t capacity = 0;
  std::memcpy(&capacity, got.data.data(), 8);
  EXPECT_EQ(capacity, 3 * kImageSize / 512);
  EXPECT_FALSE(rc.served.closed());
}

TEST(VhostUserBackend, AChangeBeforeTheDeviceRunsIsSentAgainWhenItStarts) {
  RequestChannel rc;
  std::filesystem::resize_file(rc.served.image.path(), 2 * kImageSize);
  ASSERT_TRUE(rescan_and_tell(rc.served));
  vhost::Channel requests(std::move(rc.ours), "back-end (its requests)", true);
  EXPECT_EQ(vhost::decode_backend_request(requests.receive(2000, false)),
            vhost::BackendRequest::config_change_msg);
  // The front-end starts the device (QEMU looks at changes only from then on): its memory,
  // one ring, the ring's kick.
  const UniqueFd ram = memfd(0x200000);
  const int fd = ram.get();
  rc.channel.send(Message::with_u64(Request::set_features, feature_bit(VIRTIO_F_VERSION_1)));
  rc.channel.send(mem_table({{0, 0x200000, 0x7000000, 0}}), std::span(&fd, 1));
  rc.channel.send(Message::with_state(Request::set_vring_num, {0, 16}));
  vhost::VringAddr addr;
  addr.desc = 0x7000000 + 0x1000;
  addr.avail = 0x7000000 + 0x2000;
  addr.used = 0x7000000 + 0x3000;
  rc.channel.send(Message::with_addr(addr));
  const UniqueFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const int k = kick.get();
  rc.channel.send(Message::with_u64(Request::set_vring_kick, 0), std::span(&k, 1));
  EXPECT_EQ(vhost::decode_backend_request(requests.receive(2000, false)),
            vhost::BackendRequest::config_change_msg)
      << "sent again once the device runs";
  // Only once.
  EXPECT_FALSE(wait_readable(requests.fd(), 200));
  EXPECT_FALSE(rc.served.closed()) << rc.served.why;
}

TEST(VhostUserBackend, AFrontEndNotReadingItsRequestChannelLosesOnlyThoseMessages) {
  RequestChannel rc(1);  // the smallest send buffer: a few messages fill it
  for (uint64_t grow = 2; grow < 200; ++grow) {
    std::filesystem::resize_file(rc.served.image.path(), grow * kImageSize);
    ASSERT_TRUE(rescan_and_tell(rc.served)) << grow;  // never waits for the front-end
  }
  // The connection and the device go on.
  rc.channel.send(Message::make(Request::get_queue_num));
  EXPECT_EQ(vhost::decode_reply_u64(rc.channel.receive(2000, true), Request::get_queue_num), 1u);
  EXPECT_FALSE(rc.served.closed());
}

// --- The network device

// Our front-end for a two-queue device (the options of `--vhost-user net` or `console`) over the
// virtio-mmio transport, a test driver with a receive and a transmit ring, and the VirtioNet or
// VirtioConsole behind the back-end on an in-memory host.
struct PairRig {
  Served served;
  TestMemory memory{0x200000};
  std::shared_ptr<VhostUserDevice> front;
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::unique_ptr<VirtioMmioTransport> transport;
  UniqueFd kick[2] = {UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
                      UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))};
  UniqueFd call[2] = {UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
                      UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))};
  DriverRing rx{memory, 64, RingLayout::at(0x10000)};
  DriverRing tx{memory, 64, RingLayout::at(0x80000)};

  explicit PairRig(Kind kind) : served(kind) {
    VhostUserOptions o;
    o.name = kind == Kind::net ? "vhost-user-net0" : "vhost-user-console0";
    o.device_id = kind == Kind::net ? 1 : 3;
    o.socket = "test.sock";
    o.queue_sizes = {256, 256};
    o.config_size = 12;
    if (kind == Kind::net) {
      o.net_queue_pairs = 1;
      o.device_feature_mask = feature_bit(VIRTIO_NET_F_MAC) | feature_bit(VIRTIO_NET_F_STATUS) |
                              feature_bit(VIRTIO_NET_F_MTU) | feature_bit(VIRTIO_NET_F_CSUM);
    }
    front = std::make_shared<VhostUserDevice>(std::move(o), memory, served.connect());
    front->set_queue_eventfds({{kick[0].get(), call[0].get()}, {kick[1].get(), call[1].get()}});
    transport = std::make_unique<VirtioMmioTransport>(front, memory, irq);
  }
  MmioDriver driver() { return MmioDriver(*transport); }
  // Waits (on the call eventfd) until `ring` has used more than `before`.
  bool used_after(uint32_t queue, const DriverRing& ring, uint16_t before) {
    for (int i = 0; i < 50 && ring.used_idx() == before; ++i) {
      if (wait_readable(call[queue].get(), 100)) {
        uint64_t n;
        EXPECT_EQ(::read(call[queue].get(), &n, sizeof n), 8);
      }
    }
    return ring.used_idx() != before;
  }
};

std::vector<uint8_t> test_frame(size_t len, uint8_t seed) {
  std::vector<uint8_t> frame(len);
  for (size_t i = 0; i < len; ++i) frame[i] = static_cast<uint8_t>(seed + i * 13);
  return frame;
}

TEST(VhostUserBackend, ServesTheNetworkDeviceBothWays) {
  PairRig rig(Kind::net);
  // The config space is the back-end's device's: its MAC, link up, its MTU.
  const uint32_t words[3] = {rig.driver().reg(VIRTIO_MMIO_CONFIG),
                             rig.driver().reg(VIRTIO_MMIO_CONFIG + 4),
                             rig.driver().reg(VIRTIO_MMIO_CONFIG + 8)};
  uint8_t config[12];
  std::memcpy(config, words, sizeof config);
  EXPECT_TRUE(std::equal(kMac.begin(), kMac.end(), config));
  EXPECT_EQ(config[6], VIRTIO_NET_S_LINK_UP);
  EXPECT_EQ(words[2] >> 16, 1400u);  // mtu, after max_virtqueue_pairs
  const uint64_t offered = rig.driver().device_features();
  EXPECT_TRUE(offered & feature_bit(VIRTIO_NET_F_MAC));
  EXPECT_FALSE(offered & feature_bit(VIRTIO_NET_F_CTRL_VQ));
  ASSERT_TRUE(
      rig.driver().negotiate(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MAC)));
  rig.driver().setup_queue(0, rig.rx);
  rig.driver().setup_queue(1, rig.tx);
  rig.driver().driver_ok();
  ASSERT_FALSE(rig.driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET);

  // Transmit: header and frame from guest memory reach the host as one frame.
  std::vector<uint8_t> out(VirtioNet::kHeaderSize, 0);
  const std::vector<uint8_t> frame = test_frame(60, 3);
  out.insert(out.end(), frame.begin(), frame.end());
  const uint64_t gpa = rig.tx.place(out);
  rig.tx.add_chain({{gpa, static_cast<uint32_t>(out.size()), false}});
  rig.driver().notify(1);
  ASSERT_TRUE(rig.used_after(1, rig.tx, 0)) << "the transmit chain was not used";
  rig.served.loop.call([&] {
    ASSERT_EQ(rig.served.host->sent.size(), 1u);
    EXPECT_EQ(rig.served.host->sent[0], out);
  });

  // Receive: a buffer from the driver, then a frame from the host lands in it.
  const uint64_t buffer = rig.rx.alloc(2048);
  rig.rx.add_chain({{buffer, 2048, true}});
  rig.driver().notify(0);
  std::vector<uint8_t> in(VirtioNet::kHeaderSize, 0);
  const std::vector<uint8_t> arriving = test_frame(100, 7);
  in.insert(in.end(), arriving.begin(), arriving.end());
  rig.served.loop.call([&] {
    rig.served.host->incoming.push_back(in);
    static_cast<VirtioNet&>(*rig.served.device).backend_readable();
  });
  ASSERT_TRUE(rig.used_after(0, rig.rx, 0)) << "the frame was not received";
  EXPECT_EQ(rig.rx.used(0).len, in.size());
  EXPECT_EQ(rig.memory.bytes(buffer + VirtioNet::kHeaderSize, arriving.size()), arriving);
  EXPECT_FALSE(rig.served.closed());

  // A reset stops both rings; the device comes up again.
  rig.driver().set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_FALSE(rig.served.closed());
  ASSERT_TRUE(rig.driver().negotiate(feature_bit(VIRTIO_F_VERSION_1)));
  rig.tx.restart();
  rig.rx.restart();
  rig.driver().setup_queue(0, rig.rx);
  rig.driver().setup_queue(1, rig.tx);
  rig.driver().driver_ok();
  const uint64_t again = rig.tx.place(out);
  rig.tx.add_chain({{again, static_cast<uint32_t>(out.size()), false}});
  rig.driver().notify(1);
  ASSERT_TRUE(rig.used_after(1, rig.tx, 0)) << "no transmit after the reset";
  rig.served.loop.call([&] { EXPECT_EQ(rig.served.host->sent.size(), 2u); });
}

TEST(VhostUserBackend, AnswersTheNetworkDevicesSetUpQueries) {
  Served served(Kind::net);
  vhost::Channel channel(served.connect(), "back-end");
  channel.send(Message::make(Request::get_features));
  const uint64_t features =
      vhost::decode_reply_u64(channel.receive(2000, true), Request::get_features);
  EXPECT_TRUE(features & feature_bit(VIRTIO_NET_F_MAC));
  EXPECT_TRUE(features & feature_bit(VIRTIO_NET_F_MRG_RXBUF));
  EXPECT_FALSE(features & feature_bit(VIRTIO_NET_F_CTRL_VQ));
  EXPECT_FALSE(features & feature_bit(VIRTIO_NET_F_MQ));
  channel.send(Message::with_u64(Request::set_protocol_features,
                                 VhostUserBackend::offered_protocol_features()));
  // A network back-end counts queue pairs, as QEMU's front-end reads it.
  channel.send(Message::make(Request::get_queue_num));
  EXPECT_EQ(vhost::decode_reply_u64(channel.receive(2000, true), Request::get_queue_num), 1u);
  vhost::ConfigSpace ask;
  ask.data.assign(12, 0xff);
  channel.send(Message::with_config(Request::get_config, ask));
  const vhost::ConfigSpace got = vhost::decode_reply_config(channel.receive(2000, true), 0, 12);
  EXPECT_TRUE(std::equal(kMac.begin(), kMac.end(), got.data.begin()));
  EXPECT_EQ(got.data[6], VIRTIO_NET_S_LINK_UP);
  EXPECT_FALSE(served.closed());
}

// --- The network device with two queue pairs

// Our front-end with num_queues=2 (the options of `--vhost-user net,num_queues=2`) over
// virtio-mmio, its event loop serving the control queue, and a two-pair VirtioNet behind the
// back-end, each pair on its own in-memory host queue.
struct TwoPairRig {
  static constexpr uint16_t kCtrl = 4;
  std::shared_ptr<FakeNetBackend> hosts[2] = {std::make_shared<FakeNetBackend>(),
                                              std::make_shared<FakeNetBackend>()};
  Served served{std::make_unique<VirtioNet>(
      std::vector<std::shared_ptr<NetBackend>>{hosts[0], hosts[1]}, kMac, 1400)};
  TestMemory memory{0x200000};
  LoopThread front_loop;
  std::shared_ptr<VhostUserDevice> front;
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::unique_ptr<VirtioMmioTransport> transport;
  std::vector<UniqueFd> kick, call;
  std::vector<DriverRing> rings;  // rx0, tx0, rx1, tx1, control

  TwoPairRig() {
    // Started, as vmm-device starts it: pairs are attached and detached on the loop thread.
    served.loop.call([&] { static_cast<VirtioNet&>(*served.device).start(served.loop.loop); });
    VhostUserOptions o;
    o.name = "vhost-user-net0";
    o.device_id = 1;
    o.socket = "test.sock";
    o.queue_sizes = {256, 256, 256, 256, 64};
    o.config_size = 12;
    o.net_queue_pairs = 2;
    o.device_feature_mask = feature_bit(VIRTIO_NET_F_MAC) | feature_bit(VIRTIO_NET_F_STATUS);
    front = std::make_shared<VhostUserDevice>(std::move(o), memory, served.connect());
    std::vector<QueueEventfds> fds;
    for (size_t i = 0; i < 5; ++i) {
      kick.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      call.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      fds.push_back({kick.back().get(), call.back().get()});
      rings.emplace_back(memory, i == kCtrl ? 64 : 256, RingLayout::at(0x10000 + i * 0x10000));
    }
    front->set_queue_eventfds(std::move(fds));
    transport = std::make_unique<VirtioMmioTransport>(front, memory, irq);
    front_loop.call([&] { front->watch(front_loop.loop); });
  }
  ~TwoPairRig() {
    front_loop.call([&] {  // the device leaves its loop from the loop's own thread
      transport.reset();
      front.reset();
    });
  }
  MmioDriver driver() { return MmioDriver(*transport); }
  void bring_up(uint64_t features, uint32_t queues = 5) {
    ASSERT_TRUE(driver().negotiate(features));
    for (uint32_t i = 0; i < queues; ++i) driver().setup_queue(i, rings[i]);
    driver().driver_ok();
    ASSERT_FALSE(driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  }
  // The back-end's pairs in use once they settle at `n` (SET_VRING_ENABLE is not waited for).
  size_t backend_pairs(size_t n) {
    size_t got = 0;
    for (int i = 0; i < 200; ++i) {
      served.loop.call([&] { got = static_cast<VirtioNet&>(*served.device).active_queue_pairs(); });
      if (got == n) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return got;
  }
  // VQ_PAIRS_SET n on the control queue, its notify through the kick eventfd as KVM delivers
  // it (answered on the front-end's loop) or as a register write (answered at once): the
  // status byte, 0xee if none came.
  uint8_t set_pairs(uint16_t n, bool by_register) {
    DriverRing& ring = rings[kCtrl];
    const uint16_t answered = ring.used_idx();
    const std::vector<uint8_t> out = {VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
                                      static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8)};
    const uint64_t out_gpa = ring.place(out);
    const uint64_t status = ring.place(std::vector<uint8_t>{0xee});
    ring.add_chain({{out_gpa, 4, false}, {status, 1, true}});
    if (by_register) {
      driver().notify(kCtrl);
    } else {
      const uint64_t one = 1;
      EXPECT_EQ(::write(kick[kCtrl].get(), &one, sizeof one), 8);
    }
    for (int i = 0; i < 1000 && ring.used_idx() == answered; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return memory.bytes(status, 1)[0];
  }
};

TEST(VhostUserBackend, TwoQueuePairsFollowTheFrontEndsControlQueue) {
  TwoPairRig rig;
  const uint64_t offered = rig.driver().device_features();
  EXPECT_TRUE(offered & feature_bit(VIRTIO_NET_F_MQ));
  EXPECT_TRUE(offered & feature_bit(VIRTIO_NET_F_CTRL_VQ));
  EXPECT_EQ(rig.driver().reg(VIRTIO_MMIO_CONFIG + 8) & 0xffff, 2u);  // max_virtqueue_pairs
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MAC) |
               feature_bit(VIRTIO_NET_F_MQ) | feature_bit(VIRTIO_NET_F_CTRL_VQ));
  // The driver starts with one pair: the second's rings are in the back-end, disabled.
  EXPECT_EQ(rig.backend_pairs(1), 1u);
  rig.served.loop.call([&] { EXPECT_FALSE(rig.hosts[1]->enabled); });

  EXPECT_EQ(rig.set_pairs(2, false), VIRTIO_NET_OK);
  EXPECT_EQ(rig.backend_pairs(2), 2u);
  rig.served.loop.call([&] { EXPECT_TRUE(rig.hosts[1]->enabled); });
  // A frame on the second pair's transmit queue leaves through the second host queue.
  std::vector<uint8_t> out(VirtioNet::kHeaderSize, 0);
  const std::vector<uint8_t> frame = test_frame(60, 5);
  out.insert(out.end(), frame.begin(), frame.end());
  DriverRing& tx1 = rig.rings[3];
  tx1.add_chain({{tx1.place(out), static_cast<uint32_t>(out.size()), false}});
  rig.driver().notify(3);
  for (int i = 0; i < 1000 && tx1.used_idx() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(tx1.used_idx(), 1);
  rig.served.loop.call([&] {
    ASSERT_EQ(rig.hosts[1]->sent.size(), 1u);
    EXPECT_EQ(rig.hosts[1]->sent[0], out);
    EXPECT_TRUE(rig.hosts[0]->sent.empty());
  });

  // Out of range: an error, nothing changes; back to one pair through a register write.
  EXPECT_EQ(rig.set_pairs(3, true), VIRTIO_NET_ERR);
  EXPECT_EQ(rig.set_pairs(0, false), VIRTIO_NET_ERR);
  EXPECT_EQ(rig.backend_pairs(2), 2u);
  EXPECT_EQ(rig.set_pairs(1, true), VIRTIO_NET_OK);
  EXPECT_EQ(rig.backend_pairs(1), 1u);
  rig.served.loop.call([&] { EXPECT_FALSE(rig.hosts[1]->enabled); });

  // After a reset the driver starts again with one pair.
  EXPECT_EQ(rig.set_pairs(2, false), VIRTIO_NET_OK);
  EXPECT_EQ(rig.backend_pairs(2), 2u);
  rig.driver().set_reg(VIRTIO_MMIO_STATUS, 0);
  for (DriverRing& ring : rig.rings) ring.restart();
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MQ) |
               feature_bit(VIRTIO_NET_F_CTRL_VQ));
  EXPECT_EQ(rig.backend_pairs(1), 1u);
  EXPECT_EQ(rig.set_pairs(2, false), VIRTIO_NET_OK);
  EXPECT_EQ(rig.backend_pairs(2), 2u);
  EXPECT_FALSE(rig.served.closed());
}

TEST(VhostUserBackend, WithoutMqTheDriverSeesOnePairAndTheControlQueueAtTwo) {
  TwoPairRig rig;
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_CTRL_VQ), 3);
  // Queue 2 is the control queue now: VQ_PAIRS_SET is refused without MQ.
  DriverRing& ctrl = rig.rings[2];
  const std::vector<uint8_t> out = {VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 1, 0};
  const uint64_t status = ctrl.place(std::vector<uint8_t>{0xee});
  ctrl.add_chain({{ctrl.place(out), 4, false}, {status, 1, true}});
  rig.driver().notify(2);
  EXPECT_EQ(ctrl.used_idx(), 1);
  EXPECT_EQ(rig.memory.bytes(status, 1)[0], VIRTIO_NET_ERR);
  EXPECT_EQ(rig.backend_pairs(1), 1u);
  EXPECT_FALSE(rig.served.closed());
}

TEST(VhostUserBackend, RefusesMalformedMessagesForTheNetworkDevice) {
  const UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  // Two queues (receive, transmit): index 2 is out of range, whichever request names it.
  EXPECT_TRUE(refused_after({{Message::with_state(Request::set_vring_num, {2, 16}), {}}}, "queue 2",
                            Kind::net));
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_vring_kick, 2), {ev.get()}}},
                            "queue 2", Kind::net));
  vhost::VringAddr addr;
  addr.index = 3;
  EXPECT_TRUE(refused_after({{Message::with_addr(addr), {}}}, "queue 3", Kind::net));
  // Network features the device does not offer (a control queue, multiqueue).
  EXPECT_TRUE(refused_after(
      {{Message::with_u64(Request::set_features, feature_bit(VIRTIO_NET_F_CTRL_VQ)), {}}},
      "not offered", Kind::net));
  EXPECT_TRUE(
      refused_after({{Message::with_u64(Request::set_features, feature_bit(VIRTIO_NET_F_MQ)), {}}},
                    "not offered", Kind::net));
  // A ring larger than the queue takes; a call descriptor missing; a kick without a descriptor.
  EXPECT_TRUE(refused_after({{Message::with_state(Request::set_vring_num, {1, 4096}), {}}},
                            "power of two", Kind::net));
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_vring_call, 1), {}}},
                            "0 file descriptor(s) (expected 1)", Kind::net));
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_vring_kick, 1 | 0x100), {}}},
                            "polling", Kind::net));
  // The receive ring outside the memory table, refused when it starts.
  const UniqueFd ram = memfd(0x200000);
  addr = {};
  addr.index = 0;
  addr.desc = 0x7000000 + 0x1000;
  addr.avail = 0x7000000 + 0x2000;
  addr.used = 0x7000000 + 0x400000;
  EXPECT_TRUE(refused_after({{mem_table({{0, 0x200000, 0x7000000, 0}}), {ram.get()}},
                             {Message::with_state(Request::set_vring_num, {0, 64}), {}},
                             {Message::with_addr(addr), {}},
                             {Message::with_u64(Request::set_vring_kick, 0), {ev.get()}}},
                            "not inside the memory table", Kind::net));
}

// --- The console

TEST(VhostUserBackend, ServesTheConsoleBothWays) {
  PairRig rig(Kind::console);
  EXPECT_EQ(rig.driver().reg(VIRTIO_MMIO_CONFIG + 4), 1u);  // max_nr_ports
  ASSERT_TRUE(rig.driver().negotiate(feature_bit(VIRTIO_F_VERSION_1)));
  rig.driver().setup_queue(0, rig.rx);
  rig.driver().setup_queue(1, rig.tx);
  rig.driver().driver_ok();
  ASSERT_FALSE(rig.driver().status() & VIRTIO_CONFIG_S_NEEDS_RESET);

  // The driver's output reaches the host's character backend.
  const std::string hello = "hello from the guest\n";
  const uint64_t gpa =
      rig.tx.place(std::span(reinterpret_cast<const uint8_t*>(hello.data()), hello.size()));
  rig.tx.add_chain({{gpa, static_cast<uint32_t>(hello.size()), false}});
  rig.driver().notify(1);
  ASSERT_TRUE(rig.used_after(1, rig.tx, 0)) << "the output was not used";
  rig.served.loop.call([&] { EXPECT_EQ(rig.served.chars->output, hello); });

  // Host input lands in the driver's receive buffer.
  const uint64_t buffer = rig.rx.alloc(256);
  rig.rx.add_chain({{buffer, 256, true}});
  rig.driver().notify(0);
  const std::string typed = "typed on the host";
  rig.served.loop.call([&] {
    static_cast<VirtioConsole&>(*rig.served.device)
        .receive(std::span(reinterpret_cast<const uint8_t*>(typed.data()), typed.size()));
  });
  ASSERT_TRUE(rig.used_after(0, rig.rx, 0)) << "the input was not received";
  EXPECT_EQ(rig.rx.used(0).len, typed.size());
  EXPECT_EQ(rig.memory.text(buffer, typed.size()), typed);
  EXPECT_FALSE(rig.served.closed());
}

// `vmm --vhost-user TYPE,socket=PATH` through the device registry, connected to `served` over
// a real listening socket (as vmm-device's): the front-end device, or the UserError it threw.
std::shared_ptr<VirtioDevice> registry_front_end(Served& served, const std::string& type,
                                                 GuestMemory& memory, LoopThread& front_loop) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            fmt::format("libvmm-vhost-registry-{}.sock", ::getpid()))
                               .string();
  std::filesystem::remove(path);
  const UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  EXPECT_EQ(::bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::listen(listener.get(), 1), 0);
  std::thread acceptor([&] {
    UniqueFd connection(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    served.loop.call([&] {
      served.backend = std::make_unique<VhostUserBackend>(
          *served.device, served.loop.loop, std::move(connection), "front-end", [](auto&) {});
    });
  });
  const VirtioDeviceKind& kind = *find_virtio_device_kind("vhost_user");
  DeviceContext context{memory, front_loop.loop, "vm", 0, {}, {}, {}, 1};
  std::shared_ptr<VirtioDevice> front;
  try {
    front = kind.create(spec_from_flag(kind, type + ",socket=" + path), context);
  } catch (...) {
    acceptor.join();
    std::filesystem::remove(path);
    throw;
  }
  acceptor.join();
  std::filesystem::remove(path);
  return front;
}

// A console back-end that claims `ports` ports with MULTIPORT: what a hostile one could say.
class ClaimedPortsConsole final : public VirtioDevice {
 public:
  explicit ClaimedPortsConsole(uint32_t ports) : ports_(ports) {}
  std::string name() const override { return "claimed-ports"; }
  uint32_t device_id() const override { return 3; }
  uint64_t device_features() const override { return feature_bit(VIRTIO_CONSOLE_F_MULTIPORT); }
  std::vector<uint16_t> queue_max_sizes() const override { return {256, 256}; }
  uint32_t config_size() const override { return 12; }
  void read_config(uint32_t offset, std::span<uint8_t> data) override {
    std::array<uint8_t, 12> config{};
    std::memcpy(config.data() + 4, &ports_, 4);
    std::memcpy(data.data(), config.data() + offset, data.size());
  }
  void activate(VirtioTransport&, uint64_t) override {}
  void queue_notify(uint16_t, Virtqueue&) override {}
  void reset() override {}

 private:
  uint32_t ports_;
};

TEST(VhostUserBackend, TheRegistrysFrontEndRefusesAConsoleClaimingTooManyPorts) {
  for (const uint32_t ports : {0u, 33u, 0xffffffffu}) {
    Served served(std::make_unique<ClaimedPortsConsole>(ports));
    TestMemory memory{0x200000};
    LoopThread front_loop;
    try {
      registry_front_end(served, "console", memory, front_loop);
      ADD_FAILURE() << ports << " ports accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(fmt::format("its console has {} ports", ports)),
                std::string::npos)
          << e.what();
    }
  }
}

// A console with a named port behind `vmm --vhost-user console,socket=PATH` (the registry's
// front-end, on a real listening socket) and vmm-device's back-end: the front-end takes its
// queues from the back-end's max_nr_ports, and the driver's handshake and the port's data go
// through the back-end.
TEST(VhostUserBackend, ServesTheNamedPortsOfAConsoleToTheRegistrysFrontEnd) {
  auto agent = std::make_shared<test::FakeCharBackend>();
  auto console = std::make_unique<VirtioConsole>(
      std::make_shared<test::FakeCharBackend>(), VirtioConsole::kDefaultPendingLimit,
      std::vector<VirtioConsole::NamedPort>{{"org.libvmm.agent", agent}});
  VirtioConsole& served_console = *console;
  Served served(std::move(console));
  served.loop.call([&] { served_console.start(served.loop.loop); });

  TestMemory memory{0x200000};
  LoopThread front_loop;
  std::shared_ptr<VirtioDevice> front = registry_front_end(served, "console", memory, front_loop);

  ASSERT_EQ(front->queue_max_sizes().size(), 6u) << "port 0, control, port 1";
  std::vector<UniqueFd> kicks, calls;
  std::vector<QueueEventfds> fds;
  for (int i = 0; i < 6; ++i) {
    kicks.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    calls.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    fds.push_back({kicks.back().get(), calls.back().get()});
  }
  front->external_queues()->set_queue_eventfds(std::move(fds));
  auto irq = std::make_shared<FakeIrq>();
  VirtioMmioTransport transport(front, memory, irq);
  MmioDriver driver(transport);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4), 2u) << "the back-end's max_nr_ports";
  const uint64_t multiport = feature_bit(VIRTIO_CONSOLE_F_MULTIPORT);
  ASSERT_TRUE(driver.device_features() & multiport);
  ASSERT_TRUE(driver.negotiate(feature_bit(VIRTIO_F_VERSION_1) | multiport));
  std::vector<std::unique_ptr<DriverRing>> rings;
  for (uint32_t i = 0; i < 6; ++i) {
    rings.push_back(std::make_unique<DriverRing>(memory, 16, RingLayout::at(0x10000 * (i + 1))));
    driver.setup_queue(i, *rings.back());
  }
  driver.driver_ok();
  ASSERT_FALSE(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  auto used_after = [&](uint32_t queue, uint16_t before) {
    for (int i = 0; i < 50 && rings[queue]->used_idx() == before; ++i) {
      if (wait_readable(calls[queue].get(), 100)) {
        uint64_t n;
        EXPECT_EQ(::read(calls[queue].get(), &n, sizeof n), 8);
      }
    }
    return rings[queue]->used_idx() != before;
  };
  auto send_control = [&](uint32_t id, uint16_t event, uint16_t value) {
    const virtio_console_control message{id, event, value};
    std::array<uint8_t, sizeof(message)> raw{};
    std::memcpy(raw.data(), &message, sizeof(message));
    DriverRing& ring = *rings[VirtioConsole::kControlTransmitQueue];
    ring.add_chain({{ring.place(raw), sizeof(message), false}});
    driver.notify(VirtioConsole::kControlTransmitQueue);
  };
  DriverRing& control_rx = *rings[VirtioConsole::kControlReceiveQueue];
  std::vector<uint64_t> answers;
  for (int i = 0; i < 8; ++i) {
    answers.push_back(control_rx.alloc(64));
    control_rx.add_chain({{answers.back(), 64, true}});
  }
  driver.notify(VirtioConsole::kControlReceiveQueue);

  send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);
  ASSERT_TRUE(used_after(VirtioConsole::kControlReceiveQueue, 0)) << "no PORT_ADD";
  for (int i = 0; i < 50 && control_rx.used_idx() < 2; ++i) used_after(2, control_rx.used_idx());
  ASSERT_EQ(control_rx.used_idx(), 2) << "a PORT_ADD for each port";
  send_control(1, VIRTIO_CONSOLE_PORT_READY, 1);
  for (int i = 0; i < 50 && control_rx.used_idx() < 4; ++i) used_after(2, control_rx.used_idx());
  ASSERT_EQ(control_rx.used_idx(), 4) << "PORT_NAME and PORT_OPEN";
  const vring_used_elem name = control_rx.used(2);
  EXPECT_EQ(memory.text(answers[name.id] + sizeof(virtio_console_control),
                        name.len - sizeof(virtio_console_control)),
            "org.libvmm.agent");

  // The named port's output reaches its own backend.
  DriverRing& agent_tx = *rings[VirtioConsole::transmit_queue(1)];
  const std::string hello = "to the agent";
  agent_tx.add_chain({{agent_tx.place(test::bytes_of(hello)), 12, false}});
  driver.notify(VirtioConsole::transmit_queue(1));
  ASSERT_TRUE(used_after(VirtioConsole::transmit_queue(1), 0));
  served.loop.call([&] { EXPECT_EQ(agent->output, hello); });
  EXPECT_FALSE(served.closed());
  front_loop.call([&] {});
}

// An emergency write through the registry's front-end: emerg_wr's low byte reaches the
// back-end's console output (SET_CONFIG); cols is not the driver's to write.
TEST(VhostUserBackend, AnEmergencyWriteReachesTheBackEndsConsole) {
  Served served(Kind::console);
  TestMemory memory{0x200000};
  LoopThread front_loop;
  std::shared_ptr<VirtioDevice> front = registry_front_end(served, "console", memory, front_loop);
  ASSERT_TRUE(front->device_features() & feature_bit(VIRTIO_CONSOLE_F_EMERG_WRITE));
  const uint8_t emergency[4] = {'!', 0, 0, 0};
  front->write_config(offsetof(virtio_console_config, emerg_wr), emergency);
  const uint8_t cols[2] = {80, 0};
  front->write_config(offsetof(virtio_console_config, cols), cols);
  front->write_config(offsetof(virtio_console_config, emerg_wr), emergency);
  served.loop.call([&] { EXPECT_EQ(served.chars->output, "!!"); });
  uint8_t config[12];
  front->read_config(0, config);
  EXPECT_EQ(config[0], 0) << "cols stays the back-end's";
  EXPECT_FALSE(served.closed());
  front_loop.call([&] {});
}

TEST(VhostUserBackend, RefusesMalformedMessagesForTheConsole) {
  const UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  // Port 0's two queues only: no MULTIPORT control queues (2, 3).
  EXPECT_TRUE(refused_after({{Message::with_state(Request::set_vring_num, {2, 16}), {}}}, "queue 2",
                            Kind::console));
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_vring_call, 3), {ev.get()}}},
                            "queue 3", Kind::console));
  // MULTIPORT (bit 1) is not offered.
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_features, feature_bit(1)), {}}},
                            "not offered", Kind::console));
  // Descriptors extra, a size wrong.
  EXPECT_TRUE(refused_after({{Message::make(Request::get_queue_num), {ev.get()}}},
                            "1 file descriptor(s) (expected 0)", Kind::console));
  EXPECT_TRUE(
      refused_after({{raw(static_cast<uint32_t>(Request::set_vring_base), {1, 2, 3, 4, 5}), {}}},
                    "5-byte payload", Kind::console));
}

// --- The sound card

TEST(VhostUserBackend, ServesTheSoundCard) {
  Served served(Kind::sound);
  TestMemory memory{0x200000};
  VhostUserOptions o;
  o.name = "vhost-user-snd0";
  o.device_id = VIRTIO_ID_SOUND;
  o.socket = "test.sock";
  o.queue_sizes = {64, 64, 256, 256};  // control, event, tx, rx
  o.config_size = 12;
  auto front = std::make_shared<VhostUserDevice>(std::move(o), memory, served.connect());
  std::vector<UniqueFd> fds;
  std::vector<QueueEventfds> eventfds;
  for (int q = 0; q < 4; ++q) {
    fds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    fds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    eventfds.push_back({fds[fds.size() - 2].get(), fds.back().get()});
  }
  front->set_queue_eventfds(eventfds);
  VirtioMmioTransport transport(front, memory, std::make_shared<FakeIrq>());
  MmioDriver driver(transport);

  // The config space is the back-end's card: two jacks, two streams, four channel maps.
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 2u);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4), 2u);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 8), 4u);
  ASSERT_TRUE(driver.negotiate(feature_bit(VIRTIO_F_VERSION_1)));
  std::vector<std::unique_ptr<DriverRing>> rings;
  for (uint32_t q = 0; q < 4; ++q) {
    rings.push_back(std::make_unique<DriverRing>(memory, 64, RingLayout::at(0x10000 + q * 0x8000)));
    driver.setup_queue(q, *rings.back());
  }
  driver.driver_ok();
  ASSERT_FALSE(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET);

  // PCM_INFO of both streams on the control queue: answered by the back-end's device.
  virtio_snd_query_info query{};
  query.hdr.code = VIRTIO_SND_R_PCM_INFO;
  query.start_id = 0;
  query.count = 2;
  query.size = sizeof(virtio_snd_pcm_info);
  DriverRing& control = *rings[0];
  const uint64_t request =
      control.place(std::span(reinterpret_cast<const uint8_t*>(&query), sizeof query));
  const uint32_t reply_len = sizeof(virtio_snd_hdr) + 2 * sizeof(virtio_snd_pcm_info);
  const uint64_t reply = control.alloc(reply_len);
  control.add_chain({{request, sizeof query, false}, {reply, reply_len, true}});
  driver.notify(0);
  for (int i = 0; i < 50 && control.used_idx() == 0; ++i) wait_readable(fds[1].get(), 100);
  ASSERT_EQ(control.used_idx(), 1) << "the control request was not used";
  EXPECT_EQ(control.used(0).len, reply_len);
  const std::vector<uint8_t> answer = memory.bytes(reply, reply_len);
  virtio_snd_hdr status{};
  std::memcpy(&status, answer.data(), sizeof status);
  EXPECT_EQ(status.code, static_cast<uint32_t>(VIRTIO_SND_S_OK));
  virtio_snd_pcm_info info[2]{};
  std::memcpy(info, answer.data() + sizeof status, sizeof info);
  EXPECT_EQ(info[0].direction, VIRTIO_SND_D_OUTPUT);
  EXPECT_EQ(info[1].direction, VIRTIO_SND_D_INPUT);
  EXPECT_FALSE(served.closed());
}

TEST(VhostUserBackend, RefusesMalformedMessagesForTheSoundCard) {
  const UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  // Four queues (control, event, tx, rx): index 4 is out of range.
  EXPECT_TRUE(refused_after({{Message::with_state(Request::set_vring_num, {4, 16}), {}}}, "queue 4",
                            Kind::sound));
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_vring_kick, 4), {ev.get()}}},
                            "queue 4", Kind::sound));
  // VIRTIO_SND_F_CTLS (bit 0: control elements) is not offered.
  EXPECT_TRUE(refused_after({{Message::with_u64(Request::set_features, feature_bit(0)), {}}},
                            "not offered", Kind::sound));
  // A control ring larger than any front-end's queue (QEMU's virtio-mmio offers 1024).
  EXPECT_TRUE(refused_after({{Message::with_state(Request::set_vring_num, {0, 4096}), {}}},
                            "power of two", Kind::sound));
}

}  // namespace virtio_vhost_user_backend_test
}  // namespace libvmm
