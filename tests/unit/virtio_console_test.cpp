// The virtIO console behind the real MMIO transport, driven through its registers and rings the
// way a guest driver does, with a fake character backend on the host side.
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_console.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/file_backend.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/console.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "unit/support/char_io.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/loop_thread.hpp"
#include "unit/support/virtio_kit.hpp"

namespace libvmm {
namespace virtio_console_test {

using namespace std::chrono_literals;
using test::bytes_of;
using test::DriverRing;
using test::FakeCharBackend;
using test::FakeIrq;
using test::LoopThread;
using test::MmioDriver;
using test::RingLayout;
using test::TestMemory;

constexpr uint64_t kRamSize = 1 * MiB;
constexpr uint16_t kQueueSize = 8;
constexpr uint64_t kVersion1 = 1ull << VIRTIO_F_VERSION_1;
constexpr uint64_t kEmergWrite = 1ull << VIRTIO_CONSOLE_F_EMERG_WRITE;
constexpr uint64_t kConfig = 0x100;  // config space offset in the MMIO window

class VirtioConsoleTest : public testing::Test {
 protected:
  // With `named_port`, the console also has port 1, "org.libvmm.agent", on agent_backend; with
  // `terminal`, port 0's backend is on a terminal of that size.
  explicit VirtioConsoleTest(size_t pending_limit = 16, bool named_port = false,
                             std::optional<CharBackend::TerminalSize> terminal = std::nullopt)
      : console(make_console(pending_limit, named_port, terminal)),
        transport(std::make_unique<VirtioMmioTransport>(console, memory, irq)) {}

  std::shared_ptr<VirtioConsole> make_console(size_t pending_limit, bool named_port,
                                              std::optional<CharBackend::TerminalSize> terminal) {
    backend->terminal = terminal;
    return std::make_shared<VirtioConsole>(
        backend, pending_limit,
        named_port ? std::vector<VirtioConsole::NamedPort>{{"org.libvmm.agent", agent_backend}}
                   : std::vector<VirtioConsole::NamedPort>{});
  }

  // Driver initialization (spec §3.1.1) with both queues, up to (not including) DRIVER_OK.
  void negotiate(uint64_t features = kVersion1) {
    ASSERT_TRUE(mmio.negotiate(features));
    mmio.setup_queue(VirtioConsole::kReceiveQueue, rx);
    mmio.setup_queue(VirtioConsole::kTransmitQueue, tx);
  }
  void bring_up() {
    negotiate();
    mmio.driver_ok();
    ASSERT_TRUE(live());
  }
  DriverRing ring_at(uint64_t base) { return DriverRing(memory, kQueueSize, RingLayout::at(base)); }
  bool live() { return mmio.status() & VIRTIO_CONFIG_S_DRIVER_OK; }
  bool needs_reset() { return mmio.status() & VIRTIO_CONFIG_S_NEEDS_RESET; }

  // One device-writable receive buffer of `len` bytes in descriptor `index`.
  void add_rx_buffer(uint16_t index, uint32_t len) {
    rx.set_desc(index, rx_buffer(index), len, VRING_DESC_F_WRITE);
    rx.publish(index);
  }
  uint64_t rx_buffer(uint16_t index) const { return rx.layout().buffers + 0x100ull * index; }
  // The bytes the device put in the receive buffer of used ring entry `idx`.
  std::string rx_data(uint16_t idx) {
    const vring_used_elem e = rx.used(idx);
    return memory.text(rx_buffer(static_cast<uint16_t>(e.id)), e.len);
  }
  void send(uint16_t index, std::string_view text) {
    const uint64_t gpa = tx.layout().buffers + 0x100ull * index;
    ASSERT_TRUE(memory.write(gpa, text.data(), text.size()));
    tx.set_desc(index, gpa, static_cast<uint32_t>(text.size()));
    tx.publish(index);
  }
  void receive(std::string_view text) { console->receive(bytes_of(text)); }
  // The transport can renotify `queue` (its eventfd, in the VMM); `count` counts the times.
  void renotify_counted(uint16_t queue, int& count) {
    transport->set_renotify([queue, &count](uint16_t q) {
      EXPECT_EQ(q, queue);
      ++count;
      return true;
    });
  }

  TestMemory memory{kRamSize};
  std::shared_ptr<FakeCharBackend> backend = std::make_shared<FakeCharBackend>();
  std::shared_ptr<FakeCharBackend> agent_backend = std::make_shared<FakeCharBackend>();
  std::shared_ptr<FakeIrq> irq = std::make_shared<FakeIrq>();
  std::shared_ptr<VirtioConsole> console;
  std::unique_ptr<VirtioMmioTransport> transport;
  MmioDriver mmio{*transport};
  DriverRing rx = ring_at(0x10000);
  DriverRing tx = ring_at(0x20000);
};

TEST_F(VirtioConsoleTest, IdentityFeaturesAndQueues) {
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_DEVICE_ID), 3u);
  EXPECT_EQ(console->name(), "virtio-console");
  mmio.set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_DEVICE_FEATURES) & 0xffff, kEmergWrite)
      << "no SIZE, no MULTIPORT; EMERG_WRITE";
  EXPECT_EQ(transport->queue_count(), 2);
  mmio.set_reg(VIRTIO_MMIO_QUEUE_SEL, 1);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_QUEUE_NUM_MAX), VirtioConsole::kQueueSize);
}

TEST_F(VirtioConsoleTest, ConfigSpace) {
  EXPECT_EQ(console->config_size(), sizeof(virtio_console_config));
  EXPECT_EQ(mmio.reg(kConfig + 0), 0u) << "cols and rows: no VIRTIO_CONSOLE_F_SIZE";
  EXPECT_EQ(mmio.reg(kConfig + 4), 1u) << "max_nr_ports";
  EXPECT_EQ(mmio.reg(kConfig + 8), 0u) << "emerg_wr reads as 0";
  std::array<uint8_t, 2> rows{0xff, 0xff};
  transport->read(kConfig + 2, rows);
  EXPECT_EQ(rows[0], 0);
  std::array<uint8_t, 8> wide{};
  transport->read(kConfig, wide);
  EXPECT_EQ(wide[4], 1);

  // Beyond the 12 bytes, the transport answers 0 and never asks the device.
  std::array<uint8_t, 8> past{0xff};
  transport->read(kConfig + 8, past);
  EXPECT_EQ(past[0], 0);
  EXPECT_EQ(mmio.reg(kConfig + 12), 0u);
  EXPECT_EQ(mmio.reg(kConfig + 0xfc), 0u);
  mmio.set_reg(kConfig + 12, 0x41);
  mmio.set_reg(kConfig + 0, 0x41);  // cols is read-only
  EXPECT_EQ(mmio.reg(kConfig + 0), 0u);
  EXPECT_EQ(backend->output, "");
}

TEST_F(VirtioConsoleTest, EmergencyWriteWorksBeforeInitialization) {
  mmio.set_reg(kConfig + 8, 'o');  // the 32-bit field, before the driver did anything
  std::array<uint8_t, 1> k{'k'};
  transport->write(kConfig + 8, k);
  std::array<uint8_t, 2> misplaced{'x', 'x'};
  transport->write(kConfig + 10, misplaced);  // not the start of emerg_wr
  EXPECT_EQ(backend->output, "ok");
}

TEST_F(VirtioConsoleTest, TransmitSendsEveryReadableByte) {
  bring_up();
  ASSERT_TRUE(memory.write(tx.layout().buffers, "hello, ", 7));
  ASSERT_TRUE(memory.write(tx.layout().buffers + 0x100, "world\n", 6));
  tx.set_desc(0, tx.layout().buffers, 7, VRING_DESC_F_NEXT, 3);
  tx.set_desc(3, tx.layout().buffers + 0x100, 6);
  tx.publish(0);
  send(5, "bye");
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output, "hello, world\nbye");
  ASSERT_EQ(tx.used_idx(), 2);
  EXPECT_EQ(tx.used(0).id, 0u);
  EXPECT_EQ(tx.used(0).len, 0u);
  EXPECT_EQ(tx.used(1).id, 5u);
  EXPECT_EQ(tx.used(1).len, 0u);
  EXPECT_EQ(irq->pulses, 1);
}

TEST_F(VirtioConsoleTest, BusyTransmitQueueYieldsWhenTheTransportCanRenotify) {
  bring_up();
  int renotifies = 0;
  renotify_counted(VirtioConsole::kTransmitQueue, renotifies);
  // A guest that puts a new buffer in as soon as one is taken.
  uint16_t next = 0;
  backend->on_write = [&] {
    send(next, "x");
    next = static_cast<uint16_t>((next + 1) % kQueueSize);
  };
  send(next++, "x");
  // As the loop does when the queue's eventfd fires (a register write would go to the hook).
  transport->notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(renotifies, 1);
  EXPECT_EQ(backend->output.size(), VirtioConsole::kTransmitPerNotify);
  EXPECT_EQ(tx.used_idx(), VirtioConsole::kTransmitPerNotify);
}

// Found in review: only chains were counted, and one chain may hold 4 GiB (many descriptors over
// the same guest pages), which a file backend takes in one write: the loop, and the quit key on
// it, stayed busy for as long as that took. A notification now takes at most
// kTransmitBytesPerNotify bytes; the rest of a chain is held until the renotified queue comes
// back, and nothing is lost or reordered.
TEST_F(VirtioConsoleTest, TransmitYieldsAfterAByteBudget) {
  constexpr uint32_t kPiece = 384 * 1024;
  constexpr uint16_t kPieces = 7;  // 2.625 MiB in one chain, over the same guest bytes
  constexpr uint64_t kData = 0x80000;
  static_assert(kData + kPiece <= kRamSize);
  ASSERT_TRUE(memory.write(kData, std::string(kPiece, 'a').data(), kPiece));
  bring_up();
  int renotifies = 0;
  renotify_counted(VirtioConsole::kTransmitQueue, renotifies);
  for (uint16_t i = 0; i < kPieces; ++i) {
    const bool last = i + 1 == kPieces;
    tx.set_desc(i, kData, kPiece, last ? 0 : VRING_DESC_F_NEXT, static_cast<uint16_t>(i + 1));
  }
  tx.publish(0);
  send(kPieces, "after");
  constexpr size_t kTotal = size_t{kPiece} * kPieces;
  constexpr size_t kBudget = VirtioConsole::kTransmitBytesPerNotify;
  transport->notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output.size(), kBudget);
  EXPECT_EQ(renotifies, 1);
  EXPECT_EQ(tx.used_idx(), 0) << "the chain is held, not returned half written";
  for (int pass = 2; backend->output.size() < kTotal && pass < 10; ++pass) {
    transport->notify(VirtioConsole::kTransmitQueue);  // the renotified queue
    EXPECT_LE(backend->output.size(), size_t(pass) * kBudget);
  }
  ASSERT_EQ(backend->output.size(), kTotal + 5);
  EXPECT_EQ(backend->output.substr(kTotal), "after");
  EXPECT_EQ(tx.used_idx(), 2);
  EXPECT_EQ(renotifies, 2);
}

// Without an eventfd to renotify (nowhere to yield to) the whole chain goes at once.
TEST_F(VirtioConsoleTest, WithoutRenotifyTheByteBudgetStartsAgain) {
  constexpr uint32_t kPiece = 512 * 1024;
  bring_up();
  tx.set_desc(0, 0x80000, kPiece, VRING_DESC_F_NEXT, 1);
  tx.set_desc(1, 0x80000, kPiece, VRING_DESC_F_NEXT, 2);
  tx.set_desc(2, 0x80000, kPiece, 0);
  tx.publish(0);
  transport->notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output.size(), 3u * kPiece);
  EXPECT_EQ(tx.used_idx(), 1);
}

// A guest giving only receive buffers the device cannot use (device-readable) while host input
// waits has them returned unused; after kReceivePerPass of them the device yields to the loop
// (the queue renotified) rather than go round for as long as another vCPU refills the ring.
TEST_F(VirtioConsoleTest, UnusableReceiveBuffersYieldToTheLoopAfterABudget) {
  rx = DriverRing(memory, VirtioConsole::kQueueSize, RingLayout::at(0x10000));
  bring_up();
  int renotifies = 0;
  renotify_counted(VirtioConsole::kReceiveQueue, renotifies);
  for (uint16_t i = 0; i < VirtioConsole::kQueueSize; ++i) {
    rx.set_desc(i, rx_buffer(0), 16, 0);  // device-readable: unusable
    rx.publish(i);
  }
  receive("hello");
  EXPECT_EQ(renotifies, 1);
  EXPECT_EQ(rx.used_idx(), VirtioConsole::kReceivePerPass);
  transport->notify(VirtioConsole::kReceiveQueue);  // the renotified pass
  EXPECT_EQ(rx.used_idx(), 2 * VirtioConsole::kReceivePerPass);
  EXPECT_EQ(renotifies, 2);
  add_rx_buffer(0, 0x100);
  transport->notify(VirtioConsole::kReceiveQueue);
  ASSERT_EQ(rx.used_idx(), 2 * VirtioConsole::kReceivePerPass + 1);
  EXPECT_EQ(rx_data(static_cast<uint16_t>(2 * VirtioConsole::kReceivePerPass)), "hello");
}

TEST_F(VirtioConsoleTest, TransmitSkipsChainsWithWritableBuffers) {
  bring_up();
  ASSERT_TRUE(memory.write(tx.layout().buffers, "secret", 6));
  tx.set_desc(0, tx.layout().buffers, 6, VRING_DESC_F_NEXT, 1);
  tx.set_desc(1, tx.layout().buffers + 0x100, 16, VRING_DESC_F_WRITE);
  tx.publish(0);
  tx.set_desc(2, tx.layout().buffers + 0x200, 8, VRING_DESC_F_WRITE);  // writable only
  tx.publish(2);
  send(4, "ok");
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output, "ok");
  ASSERT_EQ(tx.used_idx(), 3) << "malformed chains go back to the driver, unused";
  EXPECT_EQ(tx.used(0).len, 0u);
  EXPECT_EQ(tx.used(1).len, 0u);
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleTest, ReceiveFillsGuestBuffers) {
  bring_up();
  add_rx_buffer(0, 4);
  add_rx_buffer(1, 4);
  add_rx_buffer(2, 64);
  mmio.notify(VirtioConsole::kReceiveQueue);
  EXPECT_EQ(rx.used_idx(), 0) << "no input yet: the buffers wait";

  receive("hi");
  ASSERT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(rx.used(0).id, 0u);
  EXPECT_EQ(rx_data(0), "hi");
  EXPECT_EQ(irq->pulses, 1);

  receive("0123456789");  // spans two buffers
  ASSERT_EQ(rx.used_idx(), 3);
  EXPECT_EQ(rx_data(1), "0123");
  EXPECT_EQ(rx_data(2), "456789");
  EXPECT_EQ(console->pending_bytes(), 0u);
  EXPECT_EQ(backend->pauses, 0);
}

TEST_F(VirtioConsoleTest, ReceiveBufferOfSeveralDescriptors) {
  bring_up();
  rx.set_desc(0, rx.layout().buffers, 3, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
  rx.set_desc(1, rx.layout().buffers + 0x100, 5, VRING_DESC_F_WRITE);
  rx.publish(0);
  receive("abcdefgh");
  ASSERT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(rx.used(0).len, 8u);
  EXPECT_EQ(memory.text(rx.layout().buffers, 3), "abc");
  EXPECT_EQ(memory.text(rx.layout().buffers + 0x100, 5), "defgh");
}

TEST_F(VirtioConsoleTest, InputWithoutBuffersWaitsAndPausesTheBackend) {
  bring_up();
  receive("0123456789");
  EXPECT_EQ(console->pending_bytes(), 10u);
  EXPECT_EQ(backend->pauses, 0) << "below the limit of 16";
  receive("abcdef");
  EXPECT_EQ(console->pending_bytes(), 16u);
  EXPECT_EQ(backend->pauses, 1);
  EXPECT_EQ(rx.used_idx(), 0);
  EXPECT_EQ(irq->pulses, 0);

  // The driver adds buffers: everything arrives in order, and input resumes.
  add_rx_buffer(0, 6);
  add_rx_buffer(1, 6);
  mmio.notify(VirtioConsole::kReceiveQueue);
  ASSERT_EQ(rx.used_idx(), 2);
  EXPECT_EQ(rx_data(0), "012345");
  EXPECT_EQ(rx_data(1), "6789ab");
  EXPECT_EQ(backend->resumes, 1) << "4 bytes left, under half the limit";
  EXPECT_FALSE(backend->paused);
  add_rx_buffer(2, 64);
  mmio.notify(VirtioConsole::kReceiveQueue);
  ASSERT_EQ(rx.used_idx(), 3);
  EXPECT_EQ(rx_data(2), "cdef");
  EXPECT_EQ(backend->pauses, 1);
  EXPECT_EQ(backend->resumes, 1);
}

TEST_F(VirtioConsoleTest, StaysPausedUntilMostPendingInputIsDelivered) {
  bring_up();
  receive(std::string(20, 'x'));
  EXPECT_EQ(backend->pauses, 1);
  add_rx_buffer(0, 8);
  mmio.notify(VirtioConsole::kReceiveQueue);
  EXPECT_EQ(console->pending_bytes(), 12u);
  EXPECT_EQ(backend->resumes, 0);
  add_rx_buffer(1, 8);
  mmio.notify(VirtioConsole::kReceiveQueue);
  EXPECT_EQ(console->pending_bytes(), 4u);
  EXPECT_EQ(backend->resumes, 1);
}

TEST_F(VirtioConsoleTest, PendingInputIsBounded) {
  bring_up();
  // A backend that ignores pause_input(): the console keeps a bounded amount and drops the rest.
  const size_t cap = 16 + VirtioConsole::kMaxBackendRead;
  std::string chunk(4096, 'z');
  for (size_t sent = 0; sent < cap + 3 * chunk.size(); sent += chunk.size()) receive(chunk);
  EXPECT_EQ(console->pending_bytes(), cap);
  EXPECT_GT(console->dropped_bytes(), 0u);
  EXPECT_EQ(backend->pauses, 1) << "asked once";

  // What was kept is still delivered.
  for (uint16_t i = 0; i < kQueueSize; ++i) add_rx_buffer(i, 0x100);
  mmio.notify(VirtioConsole::kReceiveQueue);
  EXPECT_EQ(rx.used_idx(), kQueueSize);
  EXPECT_EQ(console->pending_bytes(), cap - kQueueSize * 0x100);
}

TEST_F(VirtioConsoleTest, ReceiveSkipsBuffersTheDeviceCannotWrite) {
  bring_up();
  rx.set_desc(0, rx.layout().buffers, 8);  // device-readable: not a receive buffer
  rx.publish(0);
  rx.set_desc(1, rx.layout().buffers + 0x100, 4, VRING_DESC_F_NEXT, 2);
  rx.set_desc(2, rx.layout().buffers + 0x200, 4, VRING_DESC_F_WRITE);  // readable, then writable
  rx.publish(1);
  rx.set_desc(3, rx.layout().buffers + 0x300, 0, VRING_DESC_F_WRITE);  // no room
  rx.publish(3);
  add_rx_buffer(4, 16);
  ASSERT_TRUE(memory.write(rx.layout().buffers, "keep", 4));
  receive("input");
  ASSERT_EQ(rx.used_idx(), 4);
  EXPECT_EQ(rx.used(0).len, 0u);
  EXPECT_EQ(rx.used(1).len, 0u);
  EXPECT_EQ(rx.used(2).len, 0u);
  EXPECT_EQ(rx_data(3), "input");
  EXPECT_EQ(memory.text(rx.layout().buffers, 4), "keep") << "a readable buffer is never written";
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleTest, BrokenReceiveRingNeedsResetAndKeepsInput) {
  bring_up();
  rx.set_desc(0, rx.layout().buffers, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);  // a loop
  rx.publish(0);
  receive("hello");
  EXPECT_TRUE(needs_reset());
  EXPECT_EQ(rx.used_idx(), 0);
  receive(" again");  // the transport refuses the queues now
  mmio.notify(VirtioConsole::kReceiveQueue);
  EXPECT_EQ(console->pending_bytes(), 11u);

  // After the driver resets and sets up again, the input arrives.
  rx = ring_at(0x40000);
  bring_up();
  add_rx_buffer(0, 64);
  mmio.notify(VirtioConsole::kReceiveQueue);
  ASSERT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(rx_data(0), "hello again");
}

TEST_F(VirtioConsoleTest, BrokenTransmitRingNeedsReset) {
  bring_up();
  tx.set_desc(0, kRamSize - 2, 8);  // runs off the end of RAM
  tx.publish(0);
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_TRUE(needs_reset());
  EXPECT_EQ(backend->output, "");
}

TEST_F(VirtioConsoleTest, InputBeforeTheDriverIsKept) {
  receive("early");
  EXPECT_EQ(console->pending_bytes(), 5u);
  bring_up();
  add_rx_buffer(0, 64);
  mmio.notify(VirtioConsole::kReceiveQueue);
  ASSERT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(rx_data(0), "early");
}

TEST_F(VirtioConsoleTest, ResetDropsTheDriverButKeepsHostInput) {
  bring_up();
  add_rx_buffer(0, 4);
  receive(std::string(4 + 16, 'a'));
  ASSERT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(backend->pauses, 1);
  const int pulses = irq->pulses;

  mmio.set_reg(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_STATUS), 0u);
  add_rx_buffer(1, 64);
  receive("");  // no transport: nothing reaches the old ring
  EXPECT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(irq->pulses, pulses);
  EXPECT_EQ(console->pending_bytes(), 16u);
  EXPECT_TRUE(backend->paused) << "still full: input stays paused across the reset";

  // A new driver starts from scratch on fresh rings and gets the pending input.
  rx = ring_at(0x50000);
  tx = ring_at(0x60000);
  bring_up();
  add_rx_buffer(0, 64);
  mmio.notify(VirtioConsole::kReceiveQueue);
  ASSERT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(rx_data(0), std::string(16, 'a'));
  EXPECT_FALSE(backend->paused);
  send(0, "after reset");
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output, "after reset");
}

// ---------------------------------------------------------------------------------------------
// With an event loop on its own thread, as in the VMM.

TEST_F(VirtioConsoleTest, PendingInputDeliveredOnceTheDriverIsReady) {
  LoopThread io;
  console->start(io.loop);
  ASSERT_TRUE(backend->sink);
  io.call([&] { backend->sink(bytes_of("typed early")); });
  // Linux may publish its receive buffers before DRIVER_OK, when notifies are ignored.
  negotiate();
  add_rx_buffer(0, 64);
  mmio.notify(VirtioConsole::kReceiveQueue);
  mmio.driver_ok();
  io.call([] {});  // the delivery activate() posted has run
  ASSERT_EQ(rx.used_idx(), 1);
  EXPECT_EQ(rx_data(0), "typed early");
}

TEST_F(VirtioConsoleTest, ResumeRunsOnTheLoopThread) {
  LoopThread io;
  console->start(io.loop);
  bring_up();
  io.call([&] { backend->sink(bytes_of(std::string(16, 'p'))); });
  EXPECT_EQ(backend->pauses, 1);
  add_rx_buffer(0, 64);
  mmio.notify(VirtioConsole::kReceiveQueue);  // a vCPU thread: the resume is posted
  io.call([] {});
  EXPECT_EQ(backend->resumes, 1);
  EXPECT_EQ(rx_data(0), std::string(16, 'p'));
}

// A backend that delivers a long stream as fast as the console lets it, honouring pause.
class StreamingBackend : public CharBackend {
 public:
  explicit StreamingBackend(std::string data) : data_(std::move(data)) {}
  size_t write(std::span<const uint8_t> bytes) override { return bytes.size(); }
  void start(EventLoop& loop, InputSink sink) override {
    loop_ = &loop;
    sink_ = std::move(sink);
    schedule();
  }
  void pause_input() override {
    paused_ = true;
    ++pauses;
  }
  void resume_input() override {
    paused_ = false;
    schedule();
  }
  std::string describe() const override { return "stream"; }

  std::atomic<int> pauses{0};

 private:
  void schedule() {
    loop_->post([this] {
      if (paused_ || sent_ == data_.size()) return;
      const size_t n = std::min<size_t>(1 + sent_ % 700, data_.size() - sent_);
      sink_(bytes_of(std::string_view(data_).substr(sent_, n)));
      sent_ += n;
      schedule();
    });
  }

  const std::string data_;
  EventLoop* loop_ = nullptr;
  InputSink sink_;
  bool paused_ = false;
  size_t sent_ = 0;
};

// The guest's driver recycles receive buffers on this thread while the loop feeds input: every
// byte arrives once, in order, and neither side deadlocks.
TEST(VirtioConsoleStreamTest, LongInputThroughFlowControl) {
  std::string data;
  for (int i = 0; i < 300'000; ++i) data.push_back(static_cast<char>('a' + i % 23));
  TestMemory memory(kRamSize);
  auto backend = std::make_shared<StreamingBackend>(data);
  auto console = std::make_shared<VirtioConsole>(backend);
  VirtioMmioTransport transport(console, memory, std::make_shared<FakeIrq>());
  MmioDriver mmio(transport);
  DriverRing rx(memory, kQueueSize, RingLayout::at(0x10000));
  ASSERT_TRUE(mmio.negotiate(kVersion1));
  mmio.setup_queue(VirtioConsole::kReceiveQueue, rx);
  for (uint16_t i = 0; i < kQueueSize; ++i) {
    rx.set_desc(i, rx.layout().buffers + 0x100ull * i, 0x100, VRING_DESC_F_WRITE);
    rx.publish(i);
  }
  mmio.driver_ok();

  std::string got;
  {
    LoopThread io;
    console->start(io.loop);
    uint16_t seen = 0;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (got.size() < data.size() && std::chrono::steady_clock::now() < deadline) {
      const uint16_t used = rx.used_idx();
      if (used == seen) {
        std::this_thread::yield();
        continue;
      }
      for (; seen != used; ++seen) {
        const vring_used_elem e = rx.used(seen);
        got += memory.text(rx.layout().buffers + 0x100ull * e.id, e.len);
        rx.publish(static_cast<uint16_t>(e.id));
      }
      mmio.notify(VirtioConsole::kReceiveQueue);
    }
  }
  EXPECT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data) << "reordered, duplicated or lost input";
  EXPECT_EQ(console->dropped_bytes(), 0u);
  EXPECT_GT(backend->pauses, 0) << "the guest's buffers ran out on the way";
}

// ---- Guest output to a backend without room -------------------------------------------------

// The backend takes part of a chain: the chain is held and the queue waits behind it (the driver
// gets no used buffer, however often it notifies); once the backend has room, both chains
// complete and their bytes leave in order.
TEST_F(VirtioConsoleTest, FullBackendHoldsTransmitChainsUntilItDrains) {
  bring_up();
  backend->room = 5;
  send(0, "hello world");
  send(1, "second");
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output, "hello");
  EXPECT_EQ(tx.used_idx(), 0);
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output, "hello");
  EXPECT_EQ(tx.used_idx(), 0);
  backend->make_room(6);
  EXPECT_EQ(backend->output, "hello world");
  EXPECT_EQ(tx.used_idx(), 1);
  EXPECT_EQ(tx.used(0).id, 0u);
  backend->make_room(FakeCharBackend::kUnbounded);
  EXPECT_EQ(backend->output, "hello worldsecond");
  EXPECT_EQ(tx.used_idx(), 2);
  EXPECT_EQ(tx.used(1).id, 1u);
}

// A reset forgets the held chain: its head means nothing in the next driver's ring.
TEST_F(VirtioConsoleTest, ResetDropsTheHeldTransmitChain) {
  bring_up();
  backend->room = 2;
  send(0, "abcdef");
  mmio.notify(VirtioConsole::kTransmitQueue);
  mmio.set_reg(VIRTIO_MMIO_STATUS, 0);
  backend->make_room(FakeCharBackend::kUnbounded);
  EXPECT_EQ(backend->output, "ab");
  tx = ring_at(0x30000);
  rx = ring_at(0x40000);
  bring_up();
  send(0, "new");
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output, "abnew");
  EXPECT_EQ(tx.used_idx(), 1);
}

// The console on a FIFO whose reader does not read: notifications return at once, the loop
// stays free, the backend keeps no more than its limit, the driver's buffers wait; once the
// reader reads, everything the guest wrote arrives in order.
TEST(VirtioConsoleOutputTest, FifoNobodyReadsKeepsLoopFree) {
  using Clock = std::chrono::steady_clock;
  ::signal(SIGPIPE, SIG_IGN);
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("libvmm-console-fifo-" + std::to_string(::getpid())))
                               .string();
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  UniqueFd reader(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  auto backend = std::make_shared<FileBackend>(path);
  std::filesystem::remove(path);
  const std::string data = test::numbered_lines(256 * 1024);
  constexpr size_t kChunk = 0x100;

  TestMemory memory(kRamSize);
  auto console = std::make_shared<VirtioConsole>(backend);
  VirtioMmioTransport transport(console, memory, std::make_shared<FakeIrq>());
  MmioDriver mmio(transport);
  DriverRing rx(memory, kQueueSize, RingLayout::at(0x10000));
  DriverRing tx(memory, kQueueSize, RingLayout::at(0x20000));
  ASSERT_TRUE(mmio.negotiate(kVersion1));
  mmio.setup_queue(VirtioConsole::kReceiveQueue, rx);
  mmio.setup_queue(VirtioConsole::kTransmitQueue, tx);
  mmio.driver_ok();

  LoopThread io;
  console->start(io.loop);
  // The guest's driver: a free descriptor gets the next chunk; used ones are free again.
  size_t sent = 0;
  uint16_t seen = 0;
  std::vector<uint16_t> free_descs;
  for (uint16_t i = 0; i < kQueueSize; ++i) free_descs.push_back(i);
  int64_t slowest_notify_us = 0;
  auto drive = [&] {
    for (const uint16_t used = tx.used_idx(); seen != used; ++seen) {
      free_descs.push_back(static_cast<uint16_t>(tx.used(seen).id));
    }
    bool added = false;
    while (!free_descs.empty() && sent < data.size()) {
      const uint16_t d = free_descs.back();
      free_descs.pop_back();
      const size_t n = std::min(kChunk, data.size() - sent);
      const uint64_t gpa = tx.layout().buffers + kChunk * d;
      EXPECT_TRUE(memory.write(gpa, data.data() + sent, n));
      tx.set_desc(d, gpa, static_cast<uint32_t>(n));
      tx.publish(d);
      sent += n;
      added = true;
    }
    if (added) {
      const auto start = Clock::now();
      mmio.notify(VirtioConsole::kTransmitQueue);
      slowest_notify_us = std::max<int64_t>(
          slowest_notify_us,
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
    }
  };
  // Until every buffer is out and none comes back for a while: the backend is full.
  auto last_progress = Clock::now();
  while (Clock::now() - last_progress < 300ms && Clock::now() - last_progress < 20s) {
    const uint16_t before = seen;
    drive();
    if (seen != before) last_progress = Clock::now();
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_LT(sent, data.size()) << "the backend never ran out of room";
  EXPECT_TRUE(free_descs.empty()) << "the driver's buffers wait for the backend";
  EXPECT_LE(backend->queued_bytes(), FileBackend::kOutputLimit);
  auto loop_alive = std::async(std::launch::async, [&] { io.call([] {}); });
  EXPECT_EQ(loop_alive.wait_for(5s), std::future_status::ready) << "the event loop is stuck";

  auto got =
      std::async(std::launch::async, [&] { return test::read_fd(reader.get(), data.size(), 60s); });
  const auto deadline = Clock::now() + 60s;
  while ((sent < data.size() || free_descs.size() < kQueueSize) && Clock::now() < deadline) {
    drive();
    std::this_thread::sleep_for(100us);
  }
  const std::string output = got.get();
  EXPECT_TRUE(output == data) << "output lost or reordered (" << output.size() << " bytes)";
  EXPECT_LT(slowest_notify_us, 1'000'000) << "a notification waited on the host";
}

// ---------------------------------------------------------------------------------------------
// MULTIPORT: the console on port 0 and a named port, with the control queues between.

constexpr uint64_t kMultiport = 1ull << VIRTIO_CONSOLE_F_MULTIPORT;

struct Control {
  uint32_t id;
  uint16_t event;
  uint16_t value;
  std::string text;  // what follows the header (PORT_NAME's name)
  bool operator==(const Control&) const = default;
};

class VirtioConsoleMultiportTest : public VirtioConsoleTest {
 protected:
  explicit VirtioConsoleMultiportTest(
      std::optional<CharBackend::TerminalSize> terminal = std::nullopt)
      : VirtioConsoleTest(16, true, terminal) {}

  // Every queue set up, MULTIPORT taken (by default), DRIVER_OK.
  void bring_up_all(uint64_t features = kVersion1 | kMultiport) {
    ASSERT_TRUE(mmio.negotiate(features));
    mmio.setup_queue(VirtioConsole::kReceiveQueue, rx);
    mmio.setup_queue(VirtioConsole::kTransmitQueue, tx);
    mmio.setup_queue(VirtioConsole::kControlReceiveQueue, control_rx);
    mmio.setup_queue(VirtioConsole::kControlTransmitQueue, control_tx);
    mmio.setup_queue(VirtioConsole::receive_queue(1), agent_rx);
    mmio.setup_queue(VirtioConsole::transmit_queue(1), agent_tx);
    mmio.driver_ok();
    ASSERT_TRUE(live());
  }

  // The driver's side: a message on the control transmitq, sent at once.
  void send_control(uint32_t id, uint16_t event, uint16_t value) {
    const virtio_console_control message{id, event, value};
    std::array<uint8_t, sizeof(message)> raw{};
    std::memcpy(raw.data(), &message, sizeof(message));
    control_tx.add_chain({{control_tx.place(raw), sizeof(message), false}});
    mmio.notify(VirtioConsole::kControlTransmitQueue);
  }
  // `n` control receive buffers of `len` bytes, given to the device.
  void give_control_buffers(int n, uint32_t len = 64) {
    for (int i = 0; i < n; ++i) {
      const uint64_t gpa = control_rx.alloc(len);
      control_buffers[control_rx.add_chain({{gpa, len, true}})] = gpa;
    }
    mmio.notify(VirtioConsole::kControlReceiveQueue);
  }
  // The control messages the device sent since the last call.
  std::vector<Control> received_control() {
    std::vector<Control> out;
    for (; seen_control < control_rx.used_idx(); ++seen_control) {
      const vring_used_elem e = control_rx.used(seen_control);
      if (e.len < sizeof(virtio_console_control)) {
        out.push_back({~0u, 0, 0, "short"});
        continue;
      }
      const uint64_t gpa = control_buffers.at(static_cast<uint16_t>(e.id));
      virtio_console_control header{};
      std::memcpy(&header, memory.bytes(gpa, sizeof(header)).data(), sizeof(header));
      const uint32_t text = e.len - static_cast<uint32_t>(sizeof(header));
      out.push_back({header.id, header.event, header.value,
                     text == 0 ? std::string() : memory.text(gpa + sizeof(header), text)});
    }
    return out;
  }
  // DEVICE_READY, then PORT_READY for both ports: what Linux's driver does.
  void handshake() {
    give_control_buffers(8);
    send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);
    mmio.notify(VirtioConsole::kControlReceiveQueue);  // no event loop here: see the device
    send_control(0, VIRTIO_CONSOLE_PORT_READY, 1);
    send_control(1, VIRTIO_CONSOLE_PORT_READY, 1);
    mmio.notify(VirtioConsole::kControlReceiveQueue);
  }

  DriverRing control_rx = ring_at(0x30000);
  DriverRing control_tx = ring_at(0x40000);
  DriverRing agent_rx = ring_at(0x50000);
  DriverRing agent_tx = ring_at(0x60000);
  uint16_t seen_control = 0;
  std::map<uint16_t, uint64_t> control_buffers;  // head -> buffer, of the control receiveq
};

TEST_F(VirtioConsoleMultiportTest, NamedPortsBringMultiportAndTheControlQueues) {
  EXPECT_EQ(mmio.device_features() & (kMultiport | kEmergWrite), kMultiport | kEmergWrite);
  EXPECT_EQ(transport->queue_count(), 6) << "port 0, control, port 1: two queues each";
  EXPECT_EQ(mmio.reg(kConfig + 4), 2u) << "max_nr_ports counts the console";
  EXPECT_EQ(VirtioConsole::receive_queue(2), 6);
  EXPECT_EQ(VirtioConsole::transmit_queue(2), 7);
}

TEST_F(VirtioConsoleMultiportTest, HandshakeAddsNamesAndOpensEveryPort) {
  bring_up_all();
  give_control_buffers(8);
  send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);
  EXPECT_TRUE(received_control().empty()) << "without a loop, sent at the next notify";
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  auto added = received_control();
  ASSERT_EQ(added.size(), 2u);
  EXPECT_EQ(added[0].event, VIRTIO_CONSOLE_PORT_ADD);
  EXPECT_EQ(added[0].id, 0u);
  EXPECT_EQ(added[1].event, VIRTIO_CONSOLE_PORT_ADD);
  EXPECT_EQ(added[1].id, 1u);

  send_control(0, VIRTIO_CONSOLE_PORT_READY, 1);
  send_control(1, VIRTIO_CONSOLE_PORT_READY, 1);
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  auto named = received_control();
  ASSERT_EQ(named.size(), 4u);
  EXPECT_EQ(named[0].event, VIRTIO_CONSOLE_CONSOLE_PORT);
  EXPECT_EQ(named[0].id, 0u);
  EXPECT_EQ(named[0].value, 1);
  EXPECT_EQ(named[1].event, VIRTIO_CONSOLE_PORT_OPEN);
  EXPECT_EQ(named[1].id, 0u);
  EXPECT_EQ(named[2].event, VIRTIO_CONSOLE_PORT_NAME);
  EXPECT_EQ(named[2].id, 1u);
  EXPECT_EQ(named[2].text, "org.libvmm.agent") << "the name follows the header, no NUL";
  EXPECT_EQ(named[3].event, VIRTIO_CONSOLE_PORT_OPEN);
  EXPECT_EQ(named[3].id, 1u);
  EXPECT_EQ(named[3].value, 1);

  send_control(1, VIRTIO_CONSOLE_PORT_OPEN, 1);  // a program opened the port: nothing to answer
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  EXPECT_TRUE(received_control().empty());
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleMultiportTest, EachPortHasItsOwnBackendBothWays) {
  bring_up_all();
  handshake();
  // Guest output on each port reaches that port's backend only.
  agent_tx.add_chain({{agent_tx.place(test::bytes_of("to the agent")), 12, false}});
  mmio.notify(VirtioConsole::transmit_queue(1));
  tx.add_chain({{tx.place(test::bytes_of("to the console")), 14, false}});
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(agent_backend->output, "to the agent");
  EXPECT_EQ(backend->output, "to the console");

  // Host input on each port fills that port's receive buffers only, once a program in the
  // guest has the named port open (Linux discards input to a port nobody has open).
  const uint64_t agent_buffer = agent_rx.alloc(64);
  agent_rx.add_chain({{agent_buffer, 64, true}});
  mmio.notify(VirtioConsole::receive_queue(1));
  console->receive(1, test::bytes_of("from the agent"));
  EXPECT_EQ(agent_rx.used_idx(), 0) << "held: nobody has the port open in the guest";
  EXPECT_EQ(console->pending_bytes(1), 14u);
  send_control(1, VIRTIO_CONSOLE_PORT_OPEN, 1);
  mmio.notify(VirtioConsole::receive_queue(1));  // no loop here: the next notify delivers it
  ASSERT_EQ(agent_rx.used_idx(), 1);
  EXPECT_EQ(memory.text(agent_buffer, agent_rx.used(0).len), "from the agent");
  EXPECT_EQ(rx.used_idx(), 0);
  console->receive(0, test::bytes_of("typed"));
  EXPECT_EQ(console->pending_bytes(0), 5u) << "port 0 has no buffers yet: it waits";
  EXPECT_EQ(console->pending_bytes(1), 0u);
}

TEST_F(VirtioConsoleMultiportTest, WithALoopAnswersGoOutWithoutAnotherNotify) {
  LoopThread io;
  console->start(io.loop);
  bring_up_all();
  give_control_buffers(8);
  send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);  // a vCPU thread: the answer is posted
  io.call([] {});
  EXPECT_EQ(received_control().size(), 2u) << "both PORT_ADDs";
  send_control(1, VIRTIO_CONSOLE_PORT_READY, 1);
  io.call([] {});
  EXPECT_EQ(received_control().size(), 2u) << "PORT_NAME and PORT_OPEN";

  // The named port's backend delivers on the loop thread, as a real one does: held until a
  // program in the guest opens the port, then sent through the loop without another notify.
  const uint64_t buffer = agent_rx.alloc(64);
  agent_rx.add_chain({{buffer, 64, true}});
  mmio.notify(VirtioConsole::receive_queue(1));
  io.call([&] { agent_backend->sink(test::bytes_of("over the loop")); });
  EXPECT_EQ(agent_rx.used_idx(), 0);
  send_control(1, VIRTIO_CONSOLE_PORT_OPEN, 1);
  io.call([] {});
  ASSERT_EQ(agent_rx.used_idx(), 1);
  EXPECT_EQ(memory.text(buffer, agent_rx.used(0).len), "over the loop");
}

TEST_F(VirtioConsoleMultiportTest, MalformedControlMessagesAreIgnored) {
  bring_up_all();
  // Too short, device-writable, a port that does not exist, an event only devices send: each
  // is returned, nothing is sent, the device goes on.
  const std::array<uint8_t, 4> half{};
  control_tx.add_chain({{control_tx.place(half), 4, false}});
  control_tx.add_chain({{control_tx.alloc(8), 8, true}});
  mmio.notify(VirtioConsole::kControlTransmitQueue);
  send_control(7, VIRTIO_CONSOLE_PORT_READY, 1);
  send_control(0xffffffff, VIRTIO_CONSOLE_PORT_OPEN, 1);
  send_control(0, VIRTIO_CONSOLE_PORT_NAME, 0);
  send_control(0, 0xffff, 0xffff);
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  EXPECT_TRUE(received_control().empty());
  EXPECT_EQ(control_tx.used_idx(), 6) << "every message returned";
  EXPECT_FALSE(needs_reset());
  handshake();  // and the real handshake still works after all that
  EXPECT_EQ(received_control().size(), 6u);
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleMultiportTest, FailuresTheDriverReportsAreLoggedAtARateTheGuestCannotRaise) {
  bring_up_all();
  testing::internal::CaptureStderr();
  for (int i = 0; i < 200; ++i) {
    send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 0);
    send_control(1, VIRTIO_CONSOLE_PORT_READY, 0);
  }
  const std::string log = testing::internal::GetCapturedStderr();
  const auto lines = std::count(log.begin(), log.end(), '\n');
  EXPECT_GT(lines, 0) << "the first ones are said";
  EXPECT_LE(lines, 33) << "at most 32 guest errors and the line saying the rest are not";
  EXPECT_TRUE(received_control().empty());
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleMultiportTest, AControlMessageOutsideGuestRamBreaksOnlyTheDevice) {
  bring_up_all();
  control_tx.add_chain({{kRamSize + 0x1000, 8, false}});
  mmio.notify(VirtioConsole::kControlTransmitQueue);
  EXPECT_TRUE(needs_reset()) << "a ring the driver broke, as on every queue";
  EXPECT_TRUE(received_control().empty());
}

TEST_F(VirtioConsoleMultiportTest, ControlMessagesTheDriverDoesNotTakeAreBounded) {
  bring_up_all();
  // A driver that says DEVICE_READY over and over and never gives a buffer for the answers.
  for (int i = 0; i < 200; ++i) send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);
  give_control_buffers(kQueueSize - 1);
  give_control_buffers(1);
  EXPECT_EQ(received_control().size(), 2u) << "each port added once, however often asked";
  EXPECT_FALSE(needs_reset());
}

// Found in review: PORT_READY for a port never added (before DEVICE_READY) was answered with
// the port's name, CONSOLE_PORT and PORT_OPEN.
TEST_F(VirtioConsoleMultiportTest, PortReadyForAPortNotAddedIsIgnored) {
  bring_up_all();
  give_control_buffers(8);
  send_control(1, VIRTIO_CONSOLE_PORT_READY, 1);
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  EXPECT_TRUE(received_control().empty());
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleMultiportTest, AControlBufferTooShortLosesOnlyItsMessage) {
  bring_up_all();
  give_control_buffers(1, 4);  // shorter than a message header
  give_control_buffers(4);
  send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  auto out = received_control();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].text, "short") << "returned with nothing written";
  EXPECT_EQ(out[1].event, VIRTIO_CONSOLE_PORT_ADD);
  EXPECT_EQ(out[1].id, 1u);
}

TEST_F(VirtioConsoleMultiportTest, ADriverWithoutMultiportHasTheConsoleOnly) {
  ASSERT_TRUE(mmio.negotiate(kVersion1));
  mmio.setup_queue(VirtioConsole::kReceiveQueue, rx);
  mmio.setup_queue(VirtioConsole::kTransmitQueue, tx);
  mmio.setup_queue(VirtioConsole::kControlTransmitQueue, control_tx);
  mmio.driver_ok();
  tx.add_chain({{tx.place(test::bytes_of("hvc0")), 4, false}});
  mmio.notify(VirtioConsole::kTransmitQueue);
  EXPECT_EQ(backend->output, "hvc0");
  send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);  // not negotiated: ignored
  EXPECT_EQ(control_tx.used_idx(), 1);
  console->receive(1, test::bytes_of("nobody reads this yet"));
  EXPECT_EQ(console->pending_bytes(1), 21u) << "kept for a driver that takes the port";
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleMultiportTest, AResetForgetsTheMessagesNotYetSent) {
  bring_up_all();
  send_control(0, VIRTIO_CONSOLE_DEVICE_READY, 1);  // two PORT_ADDs wait for buffers
  mmio.set_reg(VIRTIO_MMIO_STATUS, 0);
  control_rx.restart();
  control_tx.restart();
  seen_control = 0;
  bring_up_all();
  give_control_buffers(4);
  EXPECT_TRUE(received_control().empty()) << "the new driver starts again with DEVICE_READY";
}

TEST(VirtioConsolePorts, NamesAreCheckedWhenTheDeviceIsMade) {
  auto fake = [] { return std::make_shared<FakeCharBackend>(); };
  using Ports = std::vector<VirtioConsole::NamedPort>;
  EXPECT_THROW(VirtioConsole(fake(), 16, Ports{{"", fake()}}), std::invalid_argument);
  EXPECT_THROW(VirtioConsole(fake(), 16, Ports{{"a/b", fake()}}), std::invalid_argument);
  EXPECT_THROW(VirtioConsole(fake(), 16, Ports{{"a", fake()}, {"a", fake()}}),
               std::invalid_argument);
  EXPECT_THROW(VirtioConsole(fake(), 16, Ports(VirtioConsole::kMaxNamedPorts + 1, {"x", fake()})),
               std::invalid_argument);
  EXPECT_EQ(VirtioConsole::port_name_problem("org.qemu.guest_agent.0"), "");
  EXPECT_NE(VirtioConsole::port_name_problem(std::string(65, 'a')), "");
  EXPECT_NE(VirtioConsole::port_name_problem("tab\there"), "");
}

// ---------------------------------------------------------------------------------------------
// The console's size (VIRTIO_CONSOLE_F_SIZE), when port 0's backend is on a terminal.

constexpr uint64_t kSize = 1ull << VIRTIO_CONSOLE_F_SIZE;

uint32_t cols_rows(uint16_t cols, uint16_t rows) {
  return cols | static_cast<uint32_t>(rows) << 16;
}

// What a RESIZE message carries after its header: le16 cols, le16 rows.
std::string resize_payload(uint16_t cols, uint16_t rows) {
  const char raw[4] = {static_cast<char>(cols & 0xff), static_cast<char>(cols >> 8),
                       static_cast<char>(rows & 0xff), static_cast<char>(rows >> 8)};
  return std::string(raw, sizeof raw);
}

class VirtioConsoleSizeTest : public VirtioConsoleTest {
 protected:
  explicit VirtioConsoleSizeTest(CharBackend::TerminalSize terminal = {100, 30})
      : VirtioConsoleTest(16, false, terminal) {}

  // Whether a config interrupt is pending; acknowledges it.
  bool config_interrupt() {
    const uint32_t status = mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS);
    mmio.set_reg(VIRTIO_MMIO_INTERRUPT_ACK, status);
    return (status & VIRTIO_MMIO_INT_CONFIG) != 0;
  }
};

TEST_F(VirtioConsoleSizeTest, OnATerminalTheSizeIsInTheConfigSpace) {
  EXPECT_EQ(mmio.device_features() & (kSize | kMultiport), kSize);
  EXPECT_EQ(mmio.reg(kConfig), cols_rows(100, 30));
  EXPECT_EQ(mmio.reg(kConfig + 4), 1u) << "max_nr_ports";
}

TEST_F(VirtioConsoleSizeTest, TheDriverIsToldAtDriverOkAndAtEveryResize) {
  negotiate(kVersion1 | kSize);
  EXPECT_FALSE(config_interrupt());
  mmio.driver_ok();
  ASSERT_TRUE(live());
  EXPECT_TRUE(config_interrupt()) << "Linux reads the size only when told it changed";

  const uint32_t generation = mmio.reg(VIRTIO_MMIO_CONFIG_GENERATION);
  backend->resize(132, 43);
  EXPECT_TRUE(config_interrupt());
  EXPECT_NE(mmio.reg(VIRTIO_MMIO_CONFIG_GENERATION), generation);
  EXPECT_EQ(mmio.reg(kConfig), cols_rows(132, 43));

  backend->resize(132, 43);  // SIGWINCH without a change: nothing to tell
  EXPECT_FALSE(config_interrupt());
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleSizeTest, ADriverThatDidNotTakeSizeIsNotInterrupted) {
  negotiate(kVersion1);
  mmio.driver_ok();
  EXPECT_FALSE(config_interrupt());
  backend->resize(80, 24);
  EXPECT_FALSE(config_interrupt());
}

TEST_F(VirtioConsoleSizeTest, AResizeWithoutADriverIsReadByTheNextOne) {
  bring_up();
  config_interrupt();
  mmio.set_reg(VIRTIO_MMIO_STATUS, 0);  // the driver resets the device
  backend->resize(90, 20);
  EXPECT_FALSE(config_interrupt()) << "no driver to tell";
  negotiate(kVersion1 | kSize);
  EXPECT_EQ(mmio.reg(kConfig), cols_rows(90, 20));
  mmio.driver_ok();
  EXPECT_TRUE(config_interrupt());
}

// A terminal that does not know its size (0 x 0) is still a terminal: F_SIZE, told once known.
class VirtioConsoleUnknownSizeTest : public VirtioConsoleSizeTest {
 protected:
  VirtioConsoleUnknownSizeTest() : VirtioConsoleSizeTest(CharBackend::TerminalSize{}) {}
};

TEST_F(VirtioConsoleUnknownSizeTest, SaysNothingUntilItKnowsOne) {
  EXPECT_EQ(mmio.device_features() & kSize, kSize);
  negotiate(kVersion1 | kSize);
  mmio.driver_ok();
  EXPECT_FALSE(config_interrupt());
  backend->resize(80, 24);
  EXPECT_TRUE(config_interrupt());
  EXPECT_EQ(mmio.reg(kConfig), cols_rows(80, 24));
}

// With MULTIPORT, Linux ignores the config space's size and reads RESIZE messages for port 0.
class VirtioConsoleMultiportSizeTest : public VirtioConsoleMultiportTest {
 protected:
  VirtioConsoleMultiportSizeTest()
      : VirtioConsoleMultiportTest(CharBackend::TerminalSize{100, 30}) {}
};

TEST_F(VirtioConsoleMultiportSizeTest, PortZeroGetsItsSizeOnceItIsTheConsole) {
  EXPECT_EQ(mmio.device_features() & (kSize | kMultiport), kSize | kMultiport);
  bring_up_all(kVersion1 | kMultiport | kSize);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG, 0u)
      << "no config interrupt: this driver would not look";
  handshake();
  const auto messages = received_control();
  ASSERT_EQ(messages.size(), 7u);
  EXPECT_EQ(messages[2].event, VIRTIO_CONSOLE_CONSOLE_PORT);
  EXPECT_EQ(messages[3].event, VIRTIO_CONSOLE_RESIZE);
  EXPECT_EQ(messages[3].id, 0u);
  EXPECT_EQ(messages[3].text, resize_payload(100, 30)) << "cols, then rows";
  EXPECT_EQ(messages[4].event, VIRTIO_CONSOLE_PORT_OPEN);
  EXPECT_EQ(messages[4].id, 0u);

  backend->resize(132, 43);  // no loop here: it goes out at the next notify
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  const auto resized = received_control();
  ASSERT_EQ(resized.size(), 1u);
  EXPECT_EQ(resized[0].event, VIRTIO_CONSOLE_RESIZE);
  EXPECT_EQ(resized[0].text, resize_payload(132, 43));
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG, 0u);
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleMultiportSizeTest, ResizesTheDriverHasNotTakenBecomeOneMessage) {
  bring_up_all(kVersion1 | kMultiport | kSize);
  backend->resize(90, 20);  // before port 0 is the console: it takes the size with CONSOLE_PORT
  handshake();
  auto messages = received_control();
  ASSERT_EQ(messages.size(), 7u);
  EXPECT_EQ(messages[3].text, resize_payload(90, 20));

  for (uint16_t cols = 1; cols <= 200; ++cols) backend->resize(cols, 50);
  give_control_buffers(4);
  messages = received_control();
  ASSERT_EQ(messages.size(), 1u) << "one message, with the newest size";
  EXPECT_EQ(messages[0].text, resize_payload(200, 50));
}

TEST_F(VirtioConsoleMultiportSizeTest, ADriverWithoutSizeGetsNoResize) {
  bring_up_all(kVersion1 | kMultiport);
  handshake();
  backend->resize(132, 43);
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  for (const Control& message : received_control()) {
    EXPECT_NE(message.event, VIRTIO_CONSOLE_RESIZE);
  }
}

// ---------------------------------------------------------------------------------------------
// PORT_OPEN follows the host end of a port (a socket backend's client).

TEST_F(VirtioConsoleMultiportTest, PortOpenFollowsTheHostEnd) {
  agent_backend->set_connected(false);  // no client yet: before any driver, nothing to tell
  bring_up_all();
  handshake();
  const auto messages = received_control();
  ASSERT_EQ(messages.size(), 6u);
  EXPECT_EQ(messages[5], (Control{1, VIRTIO_CONSOLE_PORT_OPEN, 0, ""}))
      << "the host end is closed: Linux holds the port's writes";

  agent_backend->set_connected(true);  // no loop here: it goes out at the next notify
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  EXPECT_EQ(received_control(), (std::vector<Control>{{1, VIRTIO_CONSOLE_PORT_OPEN, 1, ""}}));

  agent_backend->set_connected(true);  // no change: nothing to tell
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  EXPECT_TRUE(received_control().empty());

  give_control_buffers(2);
  agent_backend->set_connected(false);
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  EXPECT_EQ(received_control(), (std::vector<Control>{{1, VIRTIO_CONSOLE_PORT_OPEN, 0, ""}}))
      << "readers in the guest get an end of file";
  EXPECT_FALSE(needs_reset());
}

TEST_F(VirtioConsoleMultiportTest, AClientComingAndGoingFastBecomesOneMessage) {
  bring_up_all();
  handshake();
  received_control();
  for (int i = 0; i < 101; ++i) agent_backend->set_connected(i % 2 == 1);
  give_control_buffers(4);
  EXPECT_EQ(received_control(), (std::vector<Control>{{1, VIRTIO_CONSOLE_PORT_OPEN, 0, ""}}))
      << "no backlog however often a client comes and goes";
}

TEST_F(VirtioConsoleMultiportTest, APortTheDriverHasNotAddedIsToldNothing) {
  bring_up_all();
  give_control_buffers(4);
  agent_backend->set_connected(false);
  mmio.notify(VirtioConsole::kControlReceiveQueue);
  EXPECT_TRUE(received_control().empty()) << "before PORT_READY the port does not exist";
}

}  // namespace virtio_console_test
}  // namespace libvmm
