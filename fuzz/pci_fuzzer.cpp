// The PCI host bridge with a virtio-pci function and a second function behind it, driven by a
// hostile guest: configuration accesses through ECAM and through 0xCF8/0xCFC at any offset and
// width (BAR sizing and reprogramming, command register, capability bodies, MSI-X control, the
// PCI_CFG window into BAR 0), and accesses anywhere in the BAR windows (virtio-pci registers,
// notifications, the MSI-X table and PBA), mixed with well-formed steps so that the device
// runs. Checks what the guest can see: vendor and device IDs never change, absent functions
// read all-ones, a BAR decodes only inside its window, MSI messages go only to addresses the
// guest programmed. No exception may escape an access.
//
// Input: operations of one byte each plus operands.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/pci/host_bridge.hpp"
#include "libvmm/virtio/pci_transport.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 64 * KiB;
constexpr size_t kMaxOps = 256;
constexpr pci::HostBridgeLayout kLayout{
    {0xb0000000, 1 << 20}, {0xc0000000, 0x100000}, {0x800000000, 0x100000}, {0xc000, 0x1000}};

class EchoDevice final : public VirtioDevice {
 public:
  std::string name() const override { return "virtio-echo"; }
  uint32_t device_id() const override { return 4; }
  uint64_t device_features() const override { return 1; }
  std::vector<uint16_t> queue_max_sizes() const override { return {8, 4}; }
  uint32_t config_size() const override { return 8; }
  void read_config(uint32_t offset, std::span<uint8_t> data) override {
    check(offset + data.size() <= 8);
    std::fill(data.begin(), data.end(), 0x5a);
  }
  void activate(VirtioTransport& t, uint64_t) override { transport = &t; }
  void queue_notify(uint16_t index, Virtqueue& queue) override {
    while (auto chain = queue.pop()) queue.push(chain->head(), 0);
    if (transport) transport->signal_used(index);
  }
  void reset() override { transport = nullptr; }
  VirtioTransport* transport = nullptr;
};

class CheckingSink final : public pci::MsiSink {
 public:
  void send(uint64_t, uint32_t) override { ++sent; }
  int sent = 0;
};

// A function with a 64-bit BAR and an I/O BAR, to move around beside the virtio one.
class Scratch final : public pci::PciFunction {
 public:
  Scratch() : PciFunction(pci::Identity{0x1234, 0x5678, 0, 0xff0000, 0, 0}) {
    config_.add_bar(0, {pci::BarKind::mem64, 0x2000, true});
    config_.add_bar(2, {pci::BarKind::io, 0x10, false});
    config_.add_capability(pci::kCapVendor, 8);
  }
  std::string name() const override { return "scratch"; }
  void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override {
    check(bar == 0 ? offset + data.size() <= 0x2000 : bar == 2 && offset + data.size() <= 0x10);
    std::fill(data.begin(), data.end(), 0);
  }
  void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) override {
    check(bar == 0 ? offset + data.size() <= 0x2000 : bar == 2 && offset + data.size() <= 0x10);
  }
};

size_t width(uint8_t selector) {
  static constexpr size_t kWidths[] = {1, 2, 4, 8, 3};
  return kWidths[selector % 5];
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log::set_level(log::Level::error);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  test::TestMemory memory(kRamSize);
  auto device = std::make_shared<EchoDevice>();
  auto sink = std::make_shared<CheckingSink>();
  auto intx = std::make_shared<test::FakeIrq>();
  auto bridge = pci::HostBridge::create(kLayout);
  auto transport = std::make_shared<VirtioPciTransport>(device, memory, sink, intx);
  bridge->add(transport);
  bridge->add(std::make_shared<Scratch>());
  auto ecam = bridge->ecam();
  auto ports = bridge->legacy_config();
  auto mmio32 = bridge->window(pci::BarKind::mem32);
  auto mmio64 = bridge->window(pci::BarKind::mem64);
  auto io = bridge->window(pci::BarKind::io);
  test::PciDriver drv(*transport);
  test::DriverRing ring(memory, 8, test::RingLayout::at(0x1000));

  std::array<uint8_t, 8> buffer{};
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t kind = in.u8();
    const size_t n = width(in.u8());
    std::span<uint8_t> bytes(buffer.data(), n);
    switch (kind % 11) {
      case 0: {  // ECAM read anywhere in bus 0 (device, function, register)
        const uint64_t offset = in.u32() % kLayout.ecam.size;
        ecam->read(offset, bytes);
        break;
      }
      case 1: {  // ECAM write, mostly to devices 1 and 2
        const uint64_t offset = ((in.u8() % 3) << 15) | (in.u16() & 0xfff);
        const uint64_t value = uint64_t{in.u32()} | uint64_t{in.u32()} << 32;
        std::memcpy(buffer.data(), &value, 8);
        ecam->write(offset, bytes);
        break;
      }
      case 2: {  // 0xCF8 / 0xCFC
        const uint64_t port = in.u8() % pci::HostBridge::kLegacyConfigPorts;
        const uint32_t value = in.u32();
        std::memcpy(buffer.data(), &value, 4);
        if (in.u8() & 1) {
          ports->write(port, bytes);
        } else {
          ports->read(port, bytes);
        }
        break;
      }
      case 3:
      case 4: {  // 32-bit memory window: BAR registers, notifications, MSI-X
        const uint64_t offset = in.u32() % kLayout.mmio32.size;
        const uint64_t value = uint64_t{in.u32()} | uint64_t{in.u32()} << 32;
        std::memcpy(buffer.data(), &value, 8);
        if (kind % 11 == 3) {
          mmio32->read(offset, bytes);
        } else {
          mmio32->write(offset, bytes);
        }
        break;
      }
      case 5: {  // 64-bit window and I/O window
        const uint64_t offset = in.u32();
        if (in.u8() & 1) {
          mmio64->read(offset % kLayout.mmio64.size, bytes);
        } else {
          io->write(offset % kLayout.io.size, bytes);
        }
        break;
      }
      case 6:  // a well-formed bring-up, so that queues run
        drv.set_config(pci::kCommand, pci::kCommandMemory | pci::kCommandBusMaster, 2);
        if (drv.negotiate((1ull << 32) | (in.u8() & 1))) {
          ring = test::DriverRing(memory, 8, test::RingLayout::at(0x1000));
          drv.setup_queue(0, ring, in.u8() % 4);
          drv.driver_ok();
        }
        break;
      case 7:  // a chain, then a notification through the BAR or the ioeventfd path
        ring.add_chain({test::Buffer{0x8000, in.u8(), true}});
        if (in.u8() & 1) {
          drv.notify(0);
        } else {
          transport->notify(in.u8() % 3);
        }
        break;
      case 8: {  // MSI-X enable and mask bits
        const uint32_t cap = drv.msix_capability;
        drv.set_config(cap + 2, in.u16(), 2);
        break;
      }
      case 9: {  // the PCI_CFG window aimed anywhere, then pci_cfg_data read or written
        const uint32_t cap = drv.window_capability;
        drv.set_config(cap + 4, in.u8() % 3, 1);
        drv.set_config(cap + 8, in.u16() % 0x5000, 4);
        drv.set_config(cap + 12, static_cast<uint32_t>(width(in.u8())), 4);
        const uint32_t at = cap + 16 + in.u8() % 4;
        const uint32_t value = in.u32();
        std::memcpy(buffer.data(), &value, 4);
        if (in.u8() & 1) {
          transport->config_write(at, bytes);
        } else {
          transport->config_read(at, bytes);
        }
        break;
      }
      default:
        transport->signal_config_change();
        break;
    }
    // What the guest sees of identity never changes; absent functions read all-ones.
    check(drv.config(pci::kVendorId) == 0x10441af4u);
    std::array<uint8_t, 4> id{};
    ecam->read(2 << 15, id);
    check(id == (std::array<uint8_t, 4>{0x34, 0x12, 0x78, 0x56}));
    ecam->read(9 << 15, id);
    check(id == (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  }
  return 0;
}
