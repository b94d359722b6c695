// The vhost-user front-end device behind the real virtio-mmio transport, against a scripted
// back-end on the other end of a socket pair: the set-up exchange, what DRIVER_OK hands over
// (memory table, ring addresses the back-end translates back to the driver's, kick and call
// descriptors), reset, and a back-end that refuses, lacks a feature or hangs up; the back-end's
// own channel: a config change reaching the driver, and a request the front-end does not take.
#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/backends/vhost_user.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/vhost_user.hpp"
#include "unit/support/loop_thread.hpp"
#include "unit/support/virtio_kit.hpp"

namespace libvmm {
namespace virtio_vhost_user_test {

using test::DriverRing;
using test::FakeIrq;
using test::MmioDriver;
using test::RingLayout;
using test::TestMemory;
using vhost::Message;
using vhost::Request;

// A back-end on its own thread that answers as scripted and records what it was asked.
class ScriptedBackend {
 public:
  uint64_t features =
      feature_bit(VIRTIO_F_VERSION_1) | vhost::kFeatureProtocolFeatures | feature_bit(29);
  uint64_t protocol = feature_bit(vhost::kProtocolReplyAck) | feature_bit(vhost::kProtocolConfig);
  Request refuse = Request{};              // answers this one's REPLY_ACK with a failure
  Request hang_up_at = Request{};          // closes the connection when this one arrives
  uint64_t queue_num = 1;                  // GET_QUEUE_NUM's answer (with PROTOCOL_F_MQ)
  std::atomic<uint8_t> config_base{0};     // GET_CONFIG answers byte i as i + 1 + config_base
  std::atomic<uint32_t> console_ports{0};  // if set, bytes 4-7 of GET_CONFIG (max_nr_ports)
  uint32_t queue_count = 2;                // rings it takes requests for
  std::atomic<int> reply_delay_ms{0};      // how long it takes over each reply
  std::string ended_with;                  // why serving ended (after join())
  bool wrong_vring_base = false;           // answers GET_VRING_BASE for another ring

  UniqueFd start() {
    int pair[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    channel_ = std::make_unique<vhost::Channel>(UniqueFd(pair[1]), "front-end");
    thread_ = std::thread([this] { serve(); });
    return UniqueFd(pair[0]);
  }
  ~ScriptedBackend() {
    if (thread_.joinable()) thread_.join();
  }
  void join() { thread_.join(); }
  // The back-end dies now, as a crashed process would: its socket reads end-of-file on both
  // sides (the serving thread sees it and returns).
  void hang_up() { ::shutdown(channel_->fd(), SHUT_RDWR); }

  std::vector<Request> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  std::vector<vhost::DecodedRequest> decoded() {
    std::lock_guard lock(mutex_);
    return decoded_;
  }
  std::vector<size_t> fd_counts() {
    std::lock_guard lock(mutex_);
    return fd_counts_;
  }
  // This side of the channel SET_BACKEND_REQ_FD gave (null before it came).
  vhost::Channel* to_frontend() {
    std::lock_guard lock(mutex_);
    return to_frontend_.get();
  }

 private:
  void reply(Message m) {
    if (const int delay = reply_delay_ms.load(); delay > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    }
    m.flags = vhost::kVersion | vhost::kFlagReply;
    channel_->send(m);
  }
  void serve() {
    try {
      for (;;) {
        Message m = channel_->receive(5000, false);
        const vhost::DecodedRequest d = vhost::decode_request(m, queue_count);
        {
          std::lock_guard lock(mutex_);
          requests_.push_back(d.request);
          decoded_.push_back(d);
          fd_counts_.push_back(m.fds.size());
        }
        if (d.request == hang_up_at) {
          channel_.reset();
          return;
        }
        if (d.request == Request::set_backend_req_fd) {
          std::lock_guard lock(mutex_);
          to_frontend_ =
              std::make_unique<vhost::Channel>(std::move(m.fds[0]), "front-end's channel", true);
        }
        switch (d.request) {
          case Request::get_features:
            reply(Message::with_u64(d.request, features));
            continue;
          case Request::get_protocol_features:
            reply(Message::with_u64(d.request, protocol));
            continue;
          case Request::get_queue_num:
            reply(Message::with_u64(d.request, queue_num));
            continue;
          case Request::get_config: {
            vhost::ConfigSpace c = d.config;
            for (size_t i = 0; i < c.data.size(); ++i) {
              c.data[i] = static_cast<uint8_t>(i + 1 + config_base.load());
              if (console_ports != 0 && i >= 4 && i < 8) {
                c.data[i] = static_cast<uint8_t>(console_ports >> (8 * (i - 4)));
              }
            }
            reply(Message::with_config(d.request, c));
            continue;
          }
          case Request::get_vring_base:
            reply(Message::with_state(d.request, {d.state.index + (wrong_vring_base ? 1 : 0), 7}));
            continue;
          default:
            break;
        }
        if (d.need_reply) reply(Message::with_u64(d.request, d.request == refuse ? 1 : 0));
      }
    } catch (const vhost::VhostError& e) {
      // The front-end went away: the test is over.
      ended_with = e.what();
    }
  }

  std::unique_ptr<vhost::Channel> channel_;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Request> requests_;
  std::vector<vhost::DecodedRequest> decoded_;
  std::vector<size_t> fd_counts_;
  std::unique_ptr<vhost::Channel> to_frontend_;
};

VhostUserOptions blk_options() {
  VhostUserOptions o;
  o.name = "vhost-user-blk0";
  o.device_id = 2;
  o.socket = "/run/blk.sock";
  o.queue_sizes = {16};
  o.config_size = 8;
  o.device_feature_mask = feature_bit(9);
  o.timeout_ms = 2000;
  return o;
}

struct Rig {
  TestMemory memory{0x100000};
  ScriptedBackend backend;
  std::shared_ptr<VhostUserDevice> device;
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::unique_ptr<VirtioMmioTransport> transport;
  UniqueFd kick{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  UniqueFd call{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};

  VhostUserOptions options = blk_options();

  void create() {
    device = std::make_shared<VhostUserDevice>(options, memory, backend.start());
    device->set_queue_eventfds({{kick.get(), call.get()}});
    transport = std::make_unique<VirtioMmioTransport>(device, memory, irq);
  }
  // The driver's bring-up of queue 0 at `layout`.
  void bring_up(const RingLayout& layout) {
    MmioDriver driver(*transport);
    ASSERT_TRUE(driver.negotiate(feature_bit(VIRTIO_F_VERSION_1)));
    driver.setup_queue(0, 16, layout);
    driver.driver_ok();
  }
  uint32_t status() { return MmioDriver(*transport).status(); }
};

// Found in review: a read-only map went into the memory table, which the back-end maps writable:
// a guest's block read could land in memory the VM may only read (a region shared with others).
TEST(VhostUserDevice, ReadOnlyMapsAreNotSharedWithTheBackend) {
  Rig rig;
  rig.memory.map(0x200000, MemoryRegion::create("rom", 0x10000), 0, 0x10000, /*readonly=*/true);
  rig.create();
  rig.bring_up(RingLayout::at(0x10000));
  const auto requests = rig.backend.requests();
  const auto decoded = rig.backend.decoded();
  const auto fds = rig.backend.fd_counts();
  const auto at = std::find(requests.begin(), requests.end(), Request::set_mem_table);
  ASSERT_NE(at, requests.end());
  const auto index = static_cast<size_t>(at - requests.begin());
  ASSERT_EQ(decoded[index].regions.size(), 1u);
  EXPECT_EQ(decoded[index].regions[0].gpa, 0u);
  EXPECT_EQ(fds[index], 1u);
}

// A ring in a read-only map is where the back-end cannot reach (it is given writable maps only):
// refused when the queues start, not handed over to drop the connection later.
TEST(VhostUserDevice, ARingInAReadOnlyMapIsRefused) {
  Rig rig;
  rig.memory.map(0x200000, MemoryRegion::create("rom", 0x10000), 0, 0x10000, /*readonly=*/true);
  rig.create();
  rig.bring_up(RingLayout{0x10000, 0x200000, 0x11000, 0x20000});
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const auto requests = rig.backend.requests();
  EXPECT_EQ(std::find(requests.begin(), requests.end(), Request::set_vring_addr), requests.end());
}

TEST(VhostUserDevice, HandsTheQueuesToTheBackend) {
  Rig rig;
  rig.create();
  // Features: the back-end's device bits through the mask; ring bits as it has them.
  MmioDriver driver(*rig.transport);
  const uint64_t offered = driver.device_features();
  EXPECT_TRUE(offered & feature_bit(VIRTIO_F_VERSION_1));
  EXPECT_TRUE(offered & feature_bit(29));   // EVENT_IDX, which the back-end has
  EXPECT_FALSE(offered & feature_bit(28));  // INDIRECT_DESC, which it has not
  EXPECT_FALSE(offered & feature_bit(30));  // never the vhost-user protocol bit
  // The config space came from the back-end.
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 0x04030201u);

  const RingLayout layout = RingLayout::at(0x10000);
  rig.bring_up(layout);
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // While running, InterruptStatus always shows a used-buffer interrupt (the back-end's
  // irqfd cannot set it).
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
            uint32_t{VIRTIO_MMIO_INT_VRING});
  // Buffers made available before the back-end watched the kick are not forgotten.
  uint64_t kicks = 0;
  EXPECT_EQ(::read(rig.kick.get(), &kicks, sizeof kicks), 8);

  driver.set_reg(VIRTIO_MMIO_STATUS, 0);  // reset: the back-end stops the ring
  const auto requests = rig.backend.requests();
  const std::vector<Request> expected = {Request::set_owner,
                                         Request::get_features,
                                         Request::get_protocol_features,
                                         Request::set_protocol_features,
                                         Request::get_config,
                                         Request::set_features,
                                         Request::set_mem_table,
                                         Request::set_vring_num,
                                         Request::set_vring_base,
                                         Request::set_vring_addr,
                                         Request::set_vring_call,
                                         Request::set_vring_kick,
                                         Request::set_vring_enable,
                                         Request::get_vring_base};
  EXPECT_EQ(requests, expected);

  // What the back-end got: one region with its descriptor, rings that translate back to
  // where the driver put them, one descriptor each with kick and call.
  const auto decoded = rig.backend.decoded();
  const auto fds = rig.backend.fd_counts();
  ASSERT_EQ(decoded.size(), expected.size());
  EXPECT_EQ(decoded[5].u64 & vhost::kFeatureProtocolFeatures, vhost::kFeatureProtocolFeatures);
  ASSERT_EQ(decoded[6].regions.size(), 1u);
  EXPECT_EQ(fds[6], 1u);
  EXPECT_EQ(decoded[6].regions[0].size, 0x100000u);
  const vhost::RegionTable table(decoded[6].regions);
  EXPECT_EQ(decoded[7].state.num, 16u);
  const vhost::VringAddr gpa = table.rings_to_gpa(decoded[9].addr, 16);
  EXPECT_EQ(gpa.desc, layout.desc);
  EXPECT_EQ(gpa.avail, layout.avail);
  EXPECT_EQ(gpa.used, layout.used);
  EXPECT_EQ(fds[10], 1u);
  EXPECT_EQ(fds[11], 1u);
  EXPECT_EQ(decoded[12].state.num, 1u);  // enabled
}

// Found in review: each message of an exchange had its own timeout, so a back-end answering each
// just inside it held the transport's lock, and the event loop behind it, for their sum (40 s
// for a block device's DRIVER_OK, half an hour for a console's 66 queues). The exchange as a
// whole has the timeout now: here 8 replies of 100 ms each against 300 ms.
TEST(VhostUserDevice, AnExchangeAsAWholeHasTheTimeout) {
  Rig rig;
  rig.options.timeout_ms = 300;
  rig.create();
  rig.backend.reply_delay_ms = 100;  // each reply in time
  rig.bring_up(RingLayout::at(0x10000));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const auto requests = rig.backend.requests();
  EXPECT_EQ(std::find(requests.begin(), requests.end(), Request::set_vring_enable), requests.end());
}

// Found in review: a start that failed after some rings were handed over left them running in
// the back-end (the reset that followed sent no GET_VRING_BASE to a failed device), so it could
// go on serving rings in memory the guest had taken back. The connection ends instead.
TEST(VhostUserDevice, AFailedStartEndsTheConnection) {
  Rig rig;
  rig.backend.refuse = Request::set_vring_enable;  // after the ring's kick and call
  rig.create();
  rig.bring_up(RingLayout::at(0x10000));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  rig.backend.join();
  EXPECT_NE(rig.backend.ended_with.find("closed the connection"), std::string::npos)
      << rig.backend.ended_with;
}

// A back-end answering the reset's GET_VRING_BASE for another ring: the device fails (the
// next driver finds it needing a reset) and the connection ends.
TEST(VhostUserDevice, AWrongVringBaseReplyFailsTheDevice) {
  Rig rig;
  rig.backend.wrong_vring_base = true;
  rig.create();
  rig.bring_up(RingLayout::at(0x10000));
  ASSERT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  MmioDriver driver(*rig.transport);
  driver.set_reg(VIRTIO_MMIO_STATUS, 0);  // reset: GET_VRING_BASE, answered wrongly
  rig.backend.join();
  EXPECT_NE(rig.backend.ended_with.find("closed the connection"), std::string::npos)
      << rig.backend.ended_with;
  rig.bring_up(RingLayout::at(0x10000));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VhostUserDevice, ARefusalPutsTheDeviceInNeedsReset) {
  Rig rig;
  rig.backend.refuse = Request::set_mem_table;
  rig.create();
  rig.bring_up(RingLayout::at(0x10000));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_GE(rig.irq->pulses.load(), 1);  // the driver hears of it (config interrupt)
}

TEST(VhostUserDevice, AHangUpPutsTheDeviceInNeedsReset) {
  test::LoopThread loop;
  Rig rig;
  rig.backend.hang_up_at = Request::set_vring_enable;
  rig.create();
  loop.call([&] { rig.device->watch(loop.loop); });
  rig.bring_up(RingLayout::at(0x10000));  // fails at the enable: the back-end is gone
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // The transport goes on answering the driver; a new bring-up is refused at once.
  rig.bring_up(RingLayout::at(0x10000));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  loop.call([&] {  // the device leaves the loop from the loop's own thread
    rig.transport.reset();
    rig.device.reset();
  });
}

// The SET_CONFIG requests the back-end got.
std::vector<vhost::ConfigSpace> config_writes(ScriptedBackend& backend) {
  std::vector<vhost::ConfigSpace> writes;
  for (const vhost::DecodedRequest& d : backend.decoded()) {
    if (d.request == Request::set_config) writes.push_back(d.config);
  }
  return writes;
}

// A running device watched by a loop (which tells the transport of a failure), set up by
// `configure` before it is created; torn down on the loop's thread, where the device leaves
// the loop.
struct WatchedRig {
  test::LoopThread loop;
  Rig rig;
  explicit WatchedRig(const std::function<void(Rig&)>& configure) {
    configure(rig);
    rig.create();
    loop.call([&] { rig.device->watch(loop.loop); });
    rig.bring_up(RingLayout::at(0x10000));
  }
  ~WatchedRig() {
    loop.call([&] {
      rig.transport.reset();
      rig.device.reset();
    });
  }
};

// A running device with a writable config byte at 4.
struct RigWithWritableConfig : WatchedRig {
  explicit RigWithWritableConfig(Request refused = Request{})
      : WatchedRig([refused](Rig& r) {
          r.options.writable_config = {{4, 1}};
          r.backend.refuse = refused;
        }) {}
};

TEST(VhostUserDevice, TheDriversWriteToAWritableFieldGoesToTheBackend) {
  RigWithWritableConfig with;
  Rig& rig = with.rig;
  MmioDriver driver(*rig.transport);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4), 0x08070605u);
  const uint8_t off = 0;
  rig.transport->write(VIRTIO_MMIO_CONFIG + 4, std::span(&off, 1));
  const auto writes = config_writes(rig.backend);
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_EQ(writes[0].offset, 4u);
  EXPECT_EQ(writes[0].flags, 0u);  // VHOST_SET_CONFIG_TYPE_FRONTEND
  EXPECT_EQ(writes[0].data, std::vector<uint8_t>{0});
  // What the driver reads next is the back-end's config, fetched again.
  rig.backend.config_base = 0x20;
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4), 0x28272625u);
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VhostUserDevice, ConfigWritesOutsideTheWritableFieldsGoNowhere) {
  RigWithWritableConfig with;
  Rig& rig = with.rig;
  MmioDriver driver(*rig.transport);
  driver.set_reg(VIRTIO_MMIO_CONFIG, 0xffffffffu);  // before the field
  const uint8_t two[2] = {0xff, 0xff};
  rig.transport->write(VIRTIO_MMIO_CONFIG + 4, std::span(two));  // longer than the field
  const uint8_t one = 0xff;
  rig.device->write_config(5, std::span(&one, 1));  // after it
  rig.device->write_config(4, {});                  // empty
  EXPECT_TRUE(config_writes(rig.backend).empty());
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 0x04030201u);
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VhostUserDevice, ARefusedConfigWritePutsTheDeviceInNeedsReset) {
  RigWithWritableConfig with(Request::set_config);
  Rig& rig = with.rig;
  const uint8_t off = 0;
  rig.transport->write(VIRTIO_MMIO_CONFIG + 4, std::span(&off, 1));
  with.loop.call([] {});  // the loop has told the transport
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_GE(rig.irq->pulses.load(), 1);  // the driver hears of it (config interrupt)
}

TEST(VhostUserDevice, RefusesABackendWithoutWhatTheDeviceNeeds) {
  TestMemory memory(0x100000);
  {
    ScriptedBackend backend;
    backend.features = vhost::kFeatureProtocolFeatures;  // no VERSION_1
    try {
      VhostUserDevice device(blk_options(), memory, backend.start());
      FAIL() << "a legacy-only back-end was accepted";
    } catch (const UserError& e) {
      EXPECT_STREQ(e.what(),
                   "vhost-user-blk0 backend at /run/blk.sock: it does not offer "
                   "VIRTIO_F_VERSION_1 (a legacy-only device)");
    }
  }
  {
    ScriptedBackend backend;
    backend.protocol = feature_bit(vhost::kProtocolReplyAck);  // no config space
    try {
      VhostUserDevice device(blk_options(), memory, backend.start());
      FAIL() << "a back-end without PROTOCOL_F_CONFIG was accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("VHOST_USER_PROTOCOL_F_CONFIG"), std::string::npos);
    }
  }
  // A network device with two queue pairs needs a back-end that serves as many.
  VhostUserOptions net;
  net.name = "vhost-user-net0";
  net.device_id = 1;
  net.socket = "/run/net.sock";
  net.queue_sizes = {16, 16, 16, 16, 16};
  net.config_size = 12;
  net.net_queue_pairs = 2;
  {
    ScriptedBackend backend;  // no PROTOCOL_F_MQ
    try {
      VhostUserDevice device(net, memory, backend.start());
      FAIL() << "a back-end without PROTOCOL_F_MQ was accepted for two pairs";
    } catch (const UserError& e) {
      EXPECT_STREQ(e.what(),
                   "vhost-user-net0 backend at /run/net.sock: it does not offer "
                   "VHOST_USER_PROTOCOL_F_MQ, which 2 queue pairs need");
    }
  }
  {
    ScriptedBackend backend;
    backend.protocol |= feature_bit(vhost::kProtocolMq);
    backend.queue_num = 1;
    try {
      VhostUserDevice device(net, memory, backend.start());
      FAIL() << "a one-pair back-end was accepted for two pairs";
    } catch (const UserError& e) {
      EXPECT_STREQ(e.what(),
                   "vhost-user-net0 backend at /run/net.sock: it serves 1 queue pair(s); the "
                   "device needs 2");
    }
  }
  {
    ScriptedBackend backend;
    backend.protocol |= feature_bit(vhost::kProtocolMq);
    backend.queue_num = 2;
    VhostUserDevice device(net, memory, backend.start());
    // The pairs in the config space are this side's.
    uint8_t pairs[2] = {};
    device.read_config(8, pairs);
    EXPECT_EQ(pairs[0], 2);
    EXPECT_EQ(pairs[1], 0);
  }
}

// Polls `done` for up to 2 s (the loop thread acts on its own time).
bool eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 200; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

Message config_change(uint32_t flags) {
  Message m;
  m.request = static_cast<uint32_t>(vhost::BackendRequest::config_change_msg);
  m.flags = flags;
  return m;
}

TEST(VhostUserDevice, ABackEndDyingUnderARunningDevicePutsItInNeedsReset) {
  WatchedRig with([](Rig&) {});
  Rig& rig = with.rig;
  ASSERT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  const int pulses = rig.irq->pulses.load();
  rig.backend.hang_up();
  EXPECT_TRUE(eventually([&] { return (rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET) != 0; }));
  EXPECT_GT(rig.irq->pulses.load(), pulses);  // the driver hears of it (config interrupt)
  // The driver's reset is answered, and a new bring-up is refused at once.
  MmioDriver(*rig.transport).set_reg(VIRTIO_MMIO_STATUS, 0);
  rig.bring_up(RingLayout::at(0x10000));
  EXPECT_TRUE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VhostUserDevice, AConfigWriteForABackEndWithoutConfigGoesNowhere) {
  // The config space given in the options (a back-end without PROTOCOL_F_CONFIG): a driver's
  // write to a writable field has no back-end to reach, so it is dropped, not fatal.
  WatchedRig with([](Rig& r) {
    r.backend.protocol = feature_bit(vhost::kProtocolReplyAck);
    r.options.config = {1, 2, 3, 4, 5, 6, 7, 8};
    r.options.writable_config = {{4, 1}};
  });
  Rig& rig = with.rig;
  const uint8_t off = 0;
  rig.transport->write(VIRTIO_MMIO_CONFIG + 4, std::span(&off, 1));
  EXPECT_TRUE(config_writes(rig.backend).empty());
  EXPECT_EQ(MmioDriver(*rig.transport).reg(VIRTIO_MMIO_CONFIG + 4), 0x08070605u);
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

// A running device whose back-end asked for a channel of its own (BACKEND_REQ).
struct RigWithBackendChannel : WatchedRig {
  RigWithBackendChannel()
      : WatchedRig([](Rig& r) { r.backend.protocol |= feature_bit(vhost::kProtocolBackendReq); }) {}
};

TEST(VhostUserDevice, ABackendsConfigChangeReachesTheDriver) {
  RigWithBackendChannel with;
  Rig& rig = with.rig;
  MmioDriver driver(*rig.transport);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 0x04030201u);
  // The channel went with SET_BACKEND_REQ_FD, right after the protocol features.
  EXPECT_EQ(rig.backend.requests()[4], Request::set_backend_req_fd);
  EXPECT_EQ(rig.backend.fd_counts()[4], 1u);
  vhost::Channel* to_frontend = rig.backend.to_frontend();
  ASSERT_NE(to_frontend, nullptr);
  auto config_reads = [&] {
    const auto r = rig.backend.requests();
    return std::count(r.begin(), r.end(), Request::get_config);
  };
  const uint32_t generation = driver.reg(VIRTIO_MMIO_CONFIG_GENERATION);

  rig.backend.config_base = 0x10;
  to_frontend->send(config_change(vhost::kVersion | vhost::kFlagNeedReply));
  const Message ack = to_frontend->receive(2000, true);  // REPLY_ACK was negotiated
  EXPECT_EQ(ack.request, static_cast<uint32_t>(vhost::BackendRequest::config_change_msg));
  EXPECT_EQ(ack.payload, std::vector<uint8_t>(8, 0));
  ASSERT_TRUE(eventually(
      [&] { return (driver.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG) != 0; }));
  EXPECT_NE(driver.reg(VIRTIO_MMIO_CONFIG_GENERATION), generation);
  // Fetched again when the driver reads it, once.
  EXPECT_EQ(config_reads(), 1);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 0x14131211u);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4), 0x18171615u);
  EXPECT_EQ(config_reads(), 2);
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VhostUserDevice, ABackendRequestItDoesNotTakeClosesOnlyThatChannel) {
  RigWithBackendChannel with;
  Rig& rig = with.rig;
  vhost::Channel* to_frontend = rig.backend.to_frontend();
  ASSERT_NE(to_frontend, nullptr);
  Message iotlb = config_change(vhost::kVersion);
  iotlb.request = static_cast<uint32_t>(vhost::BackendRequest::iotlb_msg);
  to_frontend->send(iotlb);
  // The front-end stops listening there: this end reads the close.
  try {
    to_frontend->receive(2000, true);
    ADD_FAILURE() << "the channel stayed open";
  } catch (const vhost::VhostError& e) {
    EXPECT_NE(std::string(e.what()).find("closed the connection"), std::string::npos) << e.what();
  }
  // The device goes on, with the config space it had.
  EXPECT_FALSE(rig.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_EQ(MmioDriver(*rig.transport).reg(VIRTIO_MMIO_CONFIG), 0x04030201u);
}

// A device with its own eventfds for each queue, behind the virtio-mmio transport, on a loop.
struct MultiQueueRig {
  TestMemory memory{0x100000};
  ScriptedBackend backend;
  test::LoopThread loop;
  std::shared_ptr<VhostUserDevice> device;
  std::unique_ptr<VirtioMmioTransport> transport;
  std::vector<UniqueFd> eventfds;

  void create(const VhostUserOptions& options) {
    device = std::make_shared<VhostUserDevice>(options, memory, backend.start());
    std::vector<QueueEventfds> fds;
    for (size_t q = 0; q < device->queue_max_sizes().size(); ++q) {
      eventfds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      eventfds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      fds.push_back({eventfds[2 * q].get(), eventfds[2 * q + 1].get()});
    }
    device->set_queue_eventfds(fds);
    transport = std::make_unique<VirtioMmioTransport>(device, memory, std::make_shared<FakeIrq>());
    loop.call([&] { device->watch(loop.loop); });
  }
  // The driver takes `features` and sets up every queue.
  void bring_up(uint64_t features) {
    MmioDriver driver(*transport);
    ASSERT_TRUE(driver.negotiate(features));
    for (uint32_t q = 0; q < device->queue_max_sizes().size(); ++q) {
      driver.setup_queue(q, 16, RingLayout::at(0x10000 + q * 0x1000));
    }
    driver.driver_ok();
  }
  ~MultiQueueRig() {
    loop.call([&] {
      transport.reset();
      device.reset();
    });
  }
};

// A driver that takes MQ without CTRL_VQ (which MQ requires) has no control queue; what it set
// up at the control queue's index does not go to the back-end, which serves two pairs only.
TEST(VhostUserDevice, TheControlQueuesIndexNeverGoesToTheBackendAsARing) {
  MultiQueueRig rig;
  rig.backend.protocol |= feature_bit(vhost::kProtocolMq);
  rig.backend.queue_num = 2;
  rig.backend.queue_count = 5;  // so that a ring at index 4 would be recorded, not refused
  VhostUserOptions net;
  net.name = "vhost-user-net0";
  net.device_id = VIRTIO_ID_NET;
  net.socket = "/run/net.sock";
  net.queue_sizes = {16, 16, 16, 16, 16};
  net.config_size = 12;
  net.net_queue_pairs = 2;
  net.timeout_ms = 2000;
  rig.create(net);
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_NET_F_MQ));
  EXPECT_FALSE(MmioDriver(*rig.transport).status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  std::vector<uint32_t> rings;
  for (const vhost::DecodedRequest& d : rig.backend.decoded()) {
    if (d.request == Request::set_vring_num) rings.push_back(d.state.index);
  }
  EXPECT_EQ(rings, (std::vector<uint32_t>{0, 1, 2, 3}));
}

// A console's ports are what its queues were made for: a back-end announcing more later does
// not send the driver looking for queues the transport does not have.
TEST(VhostUserDevice, AConsolesPortCountStaysWhatItsQueuesWereMadeFor) {
  MultiQueueRig rig;
  rig.backend.features |= feature_bit(VIRTIO_CONSOLE_F_MULTIPORT);
  rig.backend.protocol |= feature_bit(vhost::kProtocolBackendReq);
  rig.backend.console_ports = 2;
  rig.backend.queue_count = 6;
  VhostUserOptions console;
  console.name = "vhost-user-console0";
  console.device_id = VIRTIO_ID_CONSOLE;
  console.socket = "/run/console.sock";
  console.config_size = 12;
  console.device_feature_mask = feature_bit(VIRTIO_CONSOLE_F_MULTIPORT);
  console.queues_from_config = vhost_user_console_queues;
  console.timeout_ms = 2000;
  rig.create(console);
  ASSERT_EQ(rig.device->queue_max_sizes().size(), 6u);  // two ports, two control queues
  rig.bring_up(feature_bit(VIRTIO_F_VERSION_1) | feature_bit(VIRTIO_CONSOLE_F_MULTIPORT));
  MmioDriver driver(*rig.transport);
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4), 2u);

  rig.backend.console_ports = 5;
  vhost::Channel* to_frontend = rig.backend.to_frontend();
  ASSERT_NE(to_frontend, nullptr);
  to_frontend->send(config_change(vhost::kVersion | vhost::kFlagNeedReply));
  to_frontend->receive(2000, true);
  ASSERT_TRUE(eventually(
      [&] { return (driver.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG) != 0; }));
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG), 0x04030201u);  // cols and rows: the back-end's
  EXPECT_EQ(driver.reg(VIRTIO_MMIO_CONFIG + 4), 2u);
  EXPECT_FALSE(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

}  // namespace virtio_vhost_user_test
}  // namespace libvmm
