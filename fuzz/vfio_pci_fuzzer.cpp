// A passed-through PCI function (VfioPciDevice) on a fake VFIO device file, driven by a hostile
// guest through the host bridge and directly: configuration accesses at any offset and width
// (BAR sizing and moves, the command register, MSI-X and MSI control), accesses anywhere in
// the BAR windows and past a BAR's end (trapped registers, the emulated MSI-X table and PBA),
// bar_moved with any mapping, well-formed table and enable sequences so that the vectors run,
// vectors signalled by the device (delivered through the event loop at the end), and a device
// and VFIO that fail now and then. The input first chooses the device's shape:
// its BARs, MSI-X (table and PBA placement, vectors) or MSI, an INTx pin, what VFIO offers and
// lets mmap, the region capability chain.
//
// Checks: open() refuses a shape it cannot pass through with a UserError only; the identity
// the guest reads never changes; VFIO never has two kinds of interrupt on; no trapped access
// reaches the device's MSI-X table or PBA bytes; the BAR pages in the guest lie inside a BAR
// that decodes there; the loop sends no more messages than the device signalled; at close
// every interrupt is off and every mmap undone. No exception may escape an access.
//
// Input: the shape (a fixed header), then operations of one byte each plus operands.
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>

#include "fuzz_input.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/unique_fd.hpp"
#include "libvmm/pci/host_bridge.hpp"
#include "libvmm/pci/vfio.hpp"
#include "unit/support/fake_vfio_device.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr size_t kMaxOps = 256;
constexpr uint16_t kMaxVectors = 64;  // VFIO's offer, so that an input opens few eventfds
constexpr pci::HostBridgeLayout kLayout{
    {0xb0000000, 1 << 20}, {0xc0000000, 0x20000000}, {0x8000000000, 1ull << 36}, {0xc000, 0x4000}};

size_t width(uint8_t selector) {
  static constexpr size_t kWidths[] = {1, 2, 4, 8, 3};
  return kWidths[selector % 5];
}
// Direct calls also try what the bus never sends.
size_t any_width(uint8_t selector) {
  static constexpr size_t kWidths[] = {1, 2, 4, 8, 3, 0, 16};
  return kWidths[selector % 7];
}

test::FakeVfioShape read_shape(fuzz::Input& in) {
  test::FakeVfioShape s;
  const uint8_t flags = in.u8();
  s.msix = flags & 1;
  s.msi = flags & 2;
  s.interrupt_pin = (flags & 4) ? 1 : 0;
  s.mmappable = !(flags & 8);
  s.resettable = !(flags & 16);
  s.header_type = (flags & 0xc0) == 0xc0 ? 1 : 0;
  s.vendor_id = in.u16();
  s.device_id = in.u16();
  for (unsigned i = 0; i < pci::kBarCount; ++i) {
    // kind (none, mem32, mem64, io), prefetchable, log2 of the size: mostly small, now and
    // then beyond what a 32-bit BAR or the windows hold.
    const uint8_t b = in.u8();
    static constexpr pci::BarKind kKinds[] = {pci::BarKind::mem32, pci::BarKind::mem64,
                                              pci::BarKind::io};
    if (b % 4 == 0) {
      s.bars[i] = {};
      continue;
    }
    const unsigned log2 = (b & 0x80) ? 28 + (b >> 3) % 8 : 2 + (b >> 3) % 15;
    s.bars[i] = {kKinds[b % 4 - 1], uint64_t{1} << log2, (b & 4) != 0};
    if ((b & 0x7f) == 0x7f) s.bars[i].size += 0x1000;  // not a power of two
  }
  s.msix_vectors = static_cast<uint16_t>(in.u16() % 2048 + 1);
  const uint8_t offered = in.u8();
  s.vfio_msix_count =
      offered == 0 ? 0u : std::min<uint32_t>(s.msix_vectors, offered % kMaxVectors + 1);
  const uint8_t places = in.u8();
  s.table_bar = places & 7;
  s.pba_bar = (places >> 3) & 7;
  s.table_offset = uint32_t{in.u16()} << 3;
  s.pba_offset = uint32_t{in.u16()} << 3;
  s.msi_capable_log2 = in.u8() & 7;
  if (const uint8_t msi = in.u8(); msi & 0x80) s.vfio_msi_count = msi & 0x3f;
  // The BAR regions' capability chain: none, sparse areas, or raw bytes.
  const uint8_t chain = in.u8();
  if (chain % 3 == 1) {
    for (unsigned n = (chain >> 2) % 4; n > 0; --n) {
      s.sparse.push_back({uint64_t{in.u16()} << 8, uint64_t{in.u16()} << 8});
    }
  } else if (chain % 3 == 2) {
    const auto raw = in.take((chain >> 2) % 48);
    s.raw_caps.assign(raw.begin(), raw.end());
    s.raw_cap_offset = in.u8();
  }
  return s;
}

// The device under test and what it talks to.
struct Harness {
  Harness(const test::FakeVfioShape& device_shape, uint16_t direct, bool with_mapper)
      : shape(device_shape),
        fake(std::make_shared<test::FakeVfioDevice>(device_shape)),
        sink(std::make_shared<test::RecordingMsiSink>(direct)),
        mapper(with_mapper ? std::make_shared<test::RecordingBarMapper>() : nullptr) {}

  // False when open() refuses the shape (with a UserError: anything else escapes).
  bool open() {
    try {
      dev = pci::VfioPciDevice::open(
          fake->file(), "0000:01:00.0", "--vfio 0000:01:00.0",
          [this](uint16_t) -> std::shared_ptr<pci::MsiSink> { return sink; }, mapper);
    } catch (const UserError&) {
      return false;
    }
    if (dev->msix_vectors() != 0) {
      table_size = uint64_t{dev->msix_vectors()} * pci::MsixTable::kEntrySize;
      pba_size = (uint64_t{dev->msix_vectors()} + 63) / 64 * 8;
    }
    return true;
  }

  // The checks after every operation.
  void check_invariants(bool bridge_placed_bars) {
    check(fake->kinds_on() <= 1);
    for (const test::FakeVfioDevice::Access& a : fake->accesses) {
      if (a.region >= pci::kBarCount || dev->msix_vectors() == 0) continue;
      const uint64_t end = a.offset + a.bytes.size();
      check(!(a.region == shape.table_bar && a.offset < shape.table_offset + table_size &&
              end > shape.table_offset));
      check(!(a.region == shape.pba_bar && a.offset < shape.pba_offset + pba_size &&
              end > shape.pba_offset));
    }
    fake->accesses.clear();
    if (!mapper) return;
    check(mapper->slots.size() == dev->ranges_in_guest());
    for (const auto& [handle, slot] : mapper->slots) {
      bool in_a_map = false;
      for (const auto& [host, size] : fake->maps) {
        in_a_map |= slot.host == host && slot.size <= size;
      }
      check(in_a_map);
    }
    if (!bridge_placed_bars) return;
    // Pages in the guest only where a memory BAR decodes, inside it.
    const auto mappings = dev->mappings();
    for (const auto& [handle, slot] : mapper->slots) {
      bool inside = false;
      for (const auto& m : mappings) {
        inside |= m && m->kind != pci::BarKind::io && slot.gpa >= m->address &&
                  slot.gpa + slot.size <= m->address + m->size;
      }
      check(inside);
    }
  }

  test::FakeVfioShape shape;
  std::shared_ptr<test::FakeVfioDevice> fake;
  std::shared_ptr<test::RecordingMsiSink> sink;
  std::shared_ptr<test::RecordingBarMapper> mapper;
  std::shared_ptr<pci::VfioPciDevice> dev;
  uint64_t table_size = 0, pba_size = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log::set_level(log::Level::error);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const test::FakeVfioShape shape = read_shape(in);
  const uint8_t setup = in.u8();
  Harness h(shape, setup % 4, setup & 4);
  if (!h.open()) return 0;
  const uint32_t msix_cap = [&] {
    // Where the guest finds the capabilities (ours, not the device's offsets).
    std::array<uint8_t, 1> b{};
    h.dev->config_read(pci::kCapabilityPointer, b);
    uint32_t at = b[0];
    for (int guard = 0; at != 0 && guard < 48; ++guard) {
      h.dev->config_read(at, b);
      if (b[0] == pci::kCapMsix || b[0] == pci::kCapMsi) return at;
      h.dev->config_read(at + 1, b);
      at = b[0];
    }
    return 0u;
  }();

  auto bridge = pci::HostBridge::create(kLayout);
  try {
    bridge->add(h.dev);
  } catch (const UserError&) {
    return 0;  // BARs larger than the windows
  }
  auto ecam = bridge->ecam();
  auto mmio32 = bridge->window(pci::BarKind::mem32);
  auto mmio64 = bridge->window(pci::BarKind::mem64);
  auto io = bridge->window(pci::BarKind::io);
  constexpr uint64_t kFunction = 1 << 15;  // device 1 on bus 0
  EventLoop loop;
  // INTx's trigger and resample eventfds (KVM's irqfd on a real VM).
  const UniqueFd intx_trigger(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const UniqueFd intx_unmask(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if ((setup & 8) && h.dev->has_intx()) {
    check(h.dev->set_intx(intx_trigger.get(), intx_unmask.get()));
  }
  try {
    h.dev->start(loop);
  } catch (const UserError&) {
    return 0;
  }

  bool bridge_placed_bars = true;
  size_t signals = 0;
  std::array<uint8_t, 16> buffer{};
  const std::array<uint8_t, 4> identity{
      static_cast<uint8_t>(shape.vendor_id), static_cast<uint8_t>(shape.vendor_id >> 8),
      static_cast<uint8_t>(shape.device_id), static_cast<uint8_t>(shape.device_id >> 8)};
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t kind = in.u8();
    const uint8_t w = in.u8();
    const uint64_t value = uint64_t{in.u32()} | uint64_t{in.u32()} << 32;
    std::memcpy(buffer.data(), &value, 8);
    std::memcpy(buffer.data() + 8, &value, 8);
    std::span<uint8_t> bytes(buffer.data(), width(w));
    switch (kind % 13) {
      case 0:  // configuration read anywhere in the function's 4 KiB
        ecam->read(kFunction | (in.u16() & 0xfff), bytes);
        break;
      case 1:  // configuration write anywhere
        ecam->write(kFunction | (in.u16() & 0xfff), bytes);
        break;
      case 2: {  // configuration write near what matters: command, BARs, the capability
        static constexpr uint32_t kTargets[] = {pci::kCommand,  pci::kBar0,      pci::kBar0 + 4,
                                                pci::kBar0 + 8, pci::kBar0 + 12, pci::kBar0 + 16,
                                                pci::kBar0 + 20};
        const uint8_t t = in.u8();
        const uint32_t offset =
            t % 8 == 7 ? msix_cap + (t >> 3) % 16 : kTargets[t % 8] + (t >> 3) % 4;
        ecam->write(kFunction | offset, bytes);
        break;
      }
      case 3:  // the 32-bit memory window
        if (w & 0x80) {
          mmio32->write(in.u32() % kLayout.mmio32.size, bytes);
        } else {
          mmio32->read(in.u32() % kLayout.mmio32.size, bytes);
        }
        break;
      case 4: {  // the 64-bit memory window and the I/O window
        const uint64_t offset = uint64_t{in.u32()} << 4 | (in.u8() & 15);
        if (w & 0x80) {
          mmio64->write(offset % kLayout.mmio64.size, bytes);
        } else {
          io->read(offset % kLayout.io.size, bytes);
        }
        break;
      }
      case 5: {  // straight to the function: any BAR, offset and width
        const unsigned bar = in.u8() % 8;
        const uint64_t offset = (w & 0x40) ? UINT64_MAX - in.u8() : in.u32();
        std::span<uint8_t> any(buffer.data(), any_width(w));
        if (w & 0x80) {
          h.dev->bar_write(bar, offset, any);
        } else {
          h.dev->bar_read(bar, offset, any);
        }
        break;
      }
      case 6: {  // an MSI-X table entry, well formed, where the device has its table
        const uint64_t entry = uint64_t{in.u8()} * pci::MsixTable::kEntrySize;
        const std::array<uint32_t, 4> words{0xfee00000u | (in.u8() << 12), 0, in.u16(),
                                            in.u8() & 1u};
        for (unsigned i = 0; i < 4; ++i) {
          std::array<uint8_t, 4> word{};
          std::memcpy(word.data(), &words[i], 4);
          h.dev->bar_write(shape.table_bar, shape.table_offset + entry + 4 * i, word);
        }
        break;
      }
      case 7: {  // MSI-X or MSI control, well formed (enable, function mask, vectors)
        if (msix_cap == 0) break;
        const uint16_t control = in.u16() & 0xc071;
        std::array<uint8_t, 2> c{static_cast<uint8_t>(control), static_cast<uint8_t>(control >> 8)};
        h.dev->config_write(msix_cap + 2, c);
        break;
      }
      case 8: {  // the command register, well formed
        std::array<uint8_t, 2> c{static_cast<uint8_t>(in.u8() & 0x07),
                                 static_cast<uint8_t>(in.u8() & 0x04)};
        ecam->write(kFunction | pci::kCommand, c);
        break;
      }
      case 9: {  // bar_moved with any mapping, as no bridge would
        const unsigned bar = in.u8() % 8;
        const uint8_t k = in.u8();
        std::optional<pci::BarMapping> now;
        if (k & 1) {
          now = pci::BarMapping{bar, k & 2 ? pci::BarKind::io : pci::BarKind::mem64,
                                value & ~uint64_t{0xfff}, uint64_t{1} << (k >> 3) % 32};
        }
        h.dev->bar_moved(bar, std::nullopt, now);
        bridge_placed_bars = false;
        break;
      }
      case 10: {  // the device, VFIO and KVM fail now and then
        const uint8_t f = in.u8();
        h.fake->fail_io = f & 1;
        h.fake->refuse_set_irqs = f & 2;
        if (h.mapper) h.mapper->refuse = f & 4;
        h.sink->pending.assign(4, (f & 8) != 0);
        break;
      }
      case 11: {  // the device signals a vector VFIO has on (delivered by the loop at the end)
        for (const auto& fds : h.fake->triggers) {
          if (fds.empty()) continue;
          const int32_t fd = fds[in.u8() % fds.size()];
          const uint64_t one = 1;
          if (::write(fd, &one, sizeof one) == sizeof one) ++signals;
        }
        break;
      }
      default: {  // the PBA and table read back
        std::span<uint8_t> b8(buffer.data(), (w & 1) ? 8 : 4);
        h.dev->bar_read(shape.pba_bar, shape.pba_offset + (in.u8() & 0x38), b8);
        h.dev->bar_read(shape.table_bar, shape.table_offset + (in.u16() & 0x7ff8), b8);
        break;
      }
    }
    std::array<uint8_t, 4> id{};
    ecam->read(kFunction, id);
    check(id == identity);
    h.check_invariants(bridge_placed_bars);
  }
  // The signals reach the guest through the loop (those to the sink's own eventfds stay
  // there): as the guest has programmed the vectors now, and never more messages than signals.
  h.fake->fail_io = false;
  h.fake->refuse_set_irqs = false;
  loop.post([&loop] { loop.stop(); });
  loop.run();
  check(h.sink->sent.size() <= signals);
  // Closing: every interrupt off, every mmap undone.
  std::weak_ptr<pci::VfioPciDevice> gone = h.dev;
  h.dev.reset();
  bridge.reset();
  ecam.reset();
  mmio32.reset();
  mmio64.reset();
  io.reset();
  check(gone.expired());
  check(h.fake->kinds_on() == 0);
  check(h.fake->maps.empty());
  return 0;
}
