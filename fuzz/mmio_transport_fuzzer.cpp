// The virtio-mmio transport with a device behind it (block on a disk in memory, console, net
// or rng), driven by a hostile driver: register reads and writes in any order and width
// (features, status, queue selection, sizes, ring addresses, QueueReady, QueueReset,
// notifications, config space), mixed with well-formed steps (negotiation, queue setup,
// chains in the rings) so that devices run. Checks what the guest can see: the identity
// registers never change, reads past the window or config space are zero, a reset (status 0)
// leaves every queue not ready, interrupt status has only the two defined bits, and the device
// keeps within its disk. No exception may escape a register access.
//
// Input: a selector (the device), then operations of one byte each plus operands.
#include <linux/virtio_mmio.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/backends/block_backend.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/console.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/rng.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 128 * KiB;
constexpr uint64_t kRomBase = kRamSize;
constexpr uint64_t kRomSize = 4 * KiB;
constexpr uint16_t kRingSize = 8;
constexpr size_t kMaxOps = 256;
constexpr uint64_t kRegisters[] = {
    VIRTIO_MMIO_DEVICE_FEATURES,     VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_QUEUE_SEL,           VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_NUM,           VIRTIO_MMIO_QUEUE_READY,         VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_INTERRUPT_STATUS,    VIRTIO_MMIO_INTERRUPT_ACK,       VIRTIO_MMIO_STATUS,
    VIRTIO_MMIO_QUEUE_DESC_LOW,      VIRTIO_MMIO_QUEUE_DESC_HIGH,     VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH,    VIRTIO_MMIO_QUEUE_USED_LOW,      VIRTIO_MMIO_QUEUE_USED_HIGH,
    0x0c0 /* QueueReset */,          VIRTIO_MMIO_CONFIG_GENERATION,   VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_CONFIG + 4,          VIRTIO_MMIO_CONFIG + 8,          VIRTIO_MMIO_MAGIC_VALUE};

// A 64 KiB disk in memory that traps on any access outside it.
class MemoryDisk final : public BlockBackend {
 public:
  uint64_t size() const override { return bytes.size(); }
  bool readonly() const override { return false; }
  int read(uint64_t offset, std::span<iovec> iov) override { return copy(offset, iov, false); }
  int write(uint64_t offset, std::span<iovec> iov) override { return copy(offset, iov, true); }
  int flush() override { return 0; }
  int discard(uint64_t offset, uint64_t len) override { return write_zeroes(offset, len, true); }
  int write_zeroes(uint64_t offset, uint64_t len, bool) override {
    check(offset <= bytes.size() && len <= bytes.size() - offset);
    std::fill_n(bytes.begin() + static_cast<ptrdiff_t>(offset), len, 0);
    return 0;
  }
  std::vector<uint8_t> bytes = std::vector<uint8_t>(64 * KiB);

 private:
  int copy(uint64_t offset, std::span<iovec> iov, bool to_disk) {
    for (const iovec& v : iov) {
      check(offset <= bytes.size() && v.iov_len <= bytes.size() - offset);
      uint8_t* disk = bytes.data() + offset;
      if (v.iov_len > 0) {
        if (to_disk)
          std::memcpy(disk, v.iov_base, v.iov_len);
        else
          std::memcpy(v.iov_base, disk, v.iov_len);
      }
      offset += v.iov_len;
    }
    return 0;
  }
};

class QuietNet final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t>) override { return 0; }
  bool send(std::span<const iovec>) override { return true; }
  void set_offloads(uint64_t) override {}
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override {}
  void resume_receive() override {}
  std::string describe() const override { return "fuzz"; }
};

std::shared_ptr<VirtioDevice> make_device(uint8_t selector) {
  switch (selector % 4) {
    case 0:
      // Requests carried out inside the notification (iothread=off): deterministic, and the
      // checks after each operation see them done.
      return std::make_shared<VirtioBlock>(std::make_unique<MemoryDisk>(), "fuzz",
                                           BlockThreading{false, "blk-io-fuzz", {}});
    case 1:
      return std::make_shared<VirtioConsole>(std::make_shared<test::FakeCharBackend>());
    case 2:
      return std::make_shared<VirtioNet>(std::make_shared<QuietNet>(),
                                         MacAddress{0x02, 0, 0, 0, 0, 1});
    default:
      return std::make_shared<VirtioRng>([](std::span<uint8_t> out) {
        std::fill(out.begin(), out.end(), 0x42);
        return 0;
      });
  }
}

uint32_t reg(BusDevice& window, uint64_t offset) {
  uint8_t b[4];
  window.read(offset, b);
  return b[0] | b[1] << 8 | b[2] << 16 | static_cast<uint32_t>(b[3]) << 24;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static test::TestMemory memory(kRamSize, kRomBase, kRomSize);
  log::set_level(log::Level::error);  // guest errors are expected here
  fuzz::Input in(data, size);
  memory.fill(0, 0, kRamSize);
  const auto device = make_device(in.u8());
  const uint32_t device_id = device->device_id();
  const size_t queue_count = device->queue_max_sizes().size();
  auto irq = std::make_shared<test::FakeIrq>(40);
  VirtioMmioTransport transport(device, memory, irq);
  transport.set_renotify([](uint16_t) { return false; });
  const test::MmioDriver driver(transport);
  std::vector<test::DriverRing> rings;
  for (size_t i = 0; i < queue_count; ++i) {
    rings.emplace_back(memory, kRingSize, test::RingLayout::at(0x4000 * i));
  }
  uint64_t next_buffer = 0x10000;

  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    switch (code & 7) {
      case 0:
      case 1: {  // a raw register write, any width
        const uint64_t offset = code & 0x80 ? in.u16() % 0x240 : kRegisters[in.u8() % 24];
        const size_t width = code & 0x40 ? size_t{1} << (in.u8() & 3) : 4;
        uint8_t bytes[8] = {};
        for (size_t i = 0; i < width; ++i) bytes[i] = in.u8();
        // Ring addresses mostly inside RAM, where the device can find something.
        if (code & 0x20) {
          const uint32_t gpa = uint32_t{in.u16()} << 1;
          std::memcpy(bytes, &gpa, 4);
        }
        transport.write(offset, std::span<const uint8_t>(bytes, width));
        break;
      }
      case 2: {  // a raw register read, any width
        const uint64_t offset = code & 0x80 ? in.u16() % 0x400 : kRegisters[in.u8() % 24];
        const size_t width = size_t{1} << ((code >> 3) & 3);
        uint8_t bytes[8];
        std::fill(bytes, bytes + 8, 0xcc);
        transport.read(offset, std::span(bytes, width));
        if (offset >= VirtioMmioTransport::kWindowSize) {
          for (size_t i = 0; i < width; ++i) check(bytes[i] == 0);
        }
        break;
      }
      case 3:  // negotiation as a driver does it, with some features
        driver.negotiate(driver.device_features() & (uint64_t{in.u32()} << 32 | in.u32()));
        break;
      case 4: {                                              // one queue set up properly
        const uint32_t index = in.u8() % (queue_count + 1);  // sometimes one that does not exist
        if (index < queue_count) {
          rings[index].restart();
          driver.setup_queue(index, rings[index]);
        }
        break;
      }
      case 5:
        driver.driver_ok();
        break;
      case 6: {  // a chain in a ring, then a notification (a register write or the ioeventfd)
        const size_t index = in.u8() % queue_count;
        std::vector<test::Buffer> buffers;
        for (size_t s = 0, n = 1 + in.u8() % 3; s < n; ++s) {
          const uint8_t flags = in.u8();
          const uint32_t len = flags & 2 ? in.u32() : in.u16() & 0x1fff;
          const uint64_t gpa = flags & 4 ? kRomBase : 0x10000 + next_buffer % 0x10000;
          const auto bytes = in.take(flags & 1 ? 0 : std::min<uint32_t>(len, 64));
          memory.write(gpa, bytes.data(), bytes.size());
          next_buffer += len % 0x2000;
          buffers.push_back({gpa, len, (flags & 1) != 0});
        }
        rings[index].add_chain(buffers);
        if (code & 0x10) {
          transport.notify(static_cast<uint32_t>(index));
        } else {
          driver.notify(static_cast<uint32_t>(index));
        }
        break;
      }
      case 7:  // device reset: every queue goes down
        driver.set_reg(VIRTIO_MMIO_STATUS, 0);
        check(driver.status() == 0);
        for (uint32_t i = 0; i < queue_count; ++i) {
          driver.set_reg(VIRTIO_MMIO_QUEUE_SEL, i);
          check(driver.reg(VIRTIO_MMIO_QUEUE_READY) == 0);
        }
        break;
    }
    check(reg(transport, VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
    check(reg(transport, VIRTIO_MMIO_VERSION) == 2);
    check(reg(transport, VIRTIO_MMIO_DEVICE_ID) == device_id);
    check(reg(transport, VIRTIO_MMIO_VENDOR_ID) == VirtioMmioTransport::kVendorId);
    check((reg(transport, VIRTIO_MMIO_INTERRUPT_STATUS) & ~3u) == 0);
  }
  driver.set_reg(VIRTIO_MMIO_STATUS, 0);
  return 0;
}
