// Drives virtio-console the way a hostile driver and a host could, interleaved: receive and
// transmit chains of any shape, notifications, host input (honouring pause or not), a backend
// that runs out of room and gets it back, emerg_wr and other config accesses, queue resets,
// device resets and a transport that stops serving. Checks that no host input byte is invented
// or lost (each is in a used receive buffer, still pending, or counted as dropped past the
// limit), that pending input stays within its bound, that the backend never gets more than the
// driver wrote, and that used entries are sane (receive: at most the chain's room; transmit:
// nothing written).
//
// Input: a selector (pending limit, indirect descriptors), then operations of one byte each
// plus operands (chain segments with flags, lengths and bytes; host input; amounts).
#include <linux/virtio_console.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/console.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 64 * KiB;
constexpr uint64_t kRomBase = kRamSize;  // read-only, right after RAM
constexpr uint64_t kRomSize = 4 * KiB;
constexpr uint16_t kRingSize = 16;
constexpr uint64_t kBuffers = 0x1000;
constexpr size_t kMaxOps = 512;
constexpr uint32_t kEmergWr = offsetof(virtio_console_config, emerg_wr);

// The driver's side of one queue, and what its used ring has shown so far.
struct Ring {
  Ring(const GuestMemory& memory, uint64_t base)
      : ring(memory, kRingSize, {base, base + 0x100, base + 0x200, kBuffers}) {}
  test::DriverRing ring;
  std::array<uint64_t, kRingSize> room{};    // writable bytes of the chain at each head
  std::array<size_t, kRingSize> segments{};  // descriptors of the chain at each head
  uint32_t busy = 0;                         // descriptors the device may still hold
  uint16_t seen = 0;                         // used entries accounted for
};

// The descriptors a chain of `count` takes from `start` on, as a mask (the ring wraps).
uint32_t run_mask(uint16_t start, size_t count) {
  uint32_t mask = 0;
  for (size_t i = 0; i < count; ++i) mask |= 1u << ((start + i) % kRingSize);
  return mask;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static test::TestMemory memory(kRamSize, kRomBase, kRomSize);
  log::set_level(log::Level::error);  // guest errors are expected here
  fuzz::Input in(data, size);
  const uint8_t selector = in.u8();
  const size_t limit = 1 + (selector & 0x3f) * 8;
  const uint64_t ring_features = selector & 0x40 ? 1ull << VIRTIO_RING_F_INDIRECT_DESC : 0;

  memory.fill(0, 0, kRamSize);
  auto backend = std::make_shared<test::FakeCharBackend>();
  VirtioConsole console(backend, limit);
  std::vector<Virtqueue> queues;
  queues.emplace_back(memory, VirtioConsole::kQueueSize);
  queues.emplace_back(memory, VirtioConsole::kQueueSize);
  std::array<Ring, 2> rings{Ring(memory, 0x0), Ring(memory, 0x400)};
  test::FakeTransport transport;
  transport.serve(queues);
  auto restart = [&](size_t i) {
    queues[i].reset();
    rings[i].ring.restart();
    rings[i].ring.configure(queues[i], ring_features);
    rings[i].seen = 0;
    rings[i].busy = 0;
  };
  restart(0);
  restart(1);
  console.activate(transport, console.device_features() | ring_features);

  uint64_t next_buffer = kBuffers;
  uint64_t received = 0, delivered = 0, offered = 0;
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    switch (code & 15) {
      case 0:
      case 1: {  // the driver adds a chain: receive (0) or transmit (1)
        Ring& r = rings[code & 1];
        const size_t count = 1 + in.u8() % 4;
        const uint32_t run = run_mask(r.ring.next_desc(), count);
        if (r.busy & run) break;  // the driver has no free descriptors there
        std::vector<test::Buffer> buffers;
        uint64_t room = 0;
        for (size_t s = 0; s < count; ++s) {
          const uint8_t flags = in.u8();
          uint64_t len = in.u16() & 0x7ff;
          if (flags & 2) len = in.u32();  // any length: the queue must refuse bad ones
          uint64_t gpa = kBuffers + (next_buffer + (flags >> 4) - kBuffers) % (kRamSize - kBuffers);
          if (flags & 4) gpa = kRomBase + (flags >> 4);
          const bool writable = flags & 1;
          if (!writable) {
            const auto bytes = in.take(std::min<uint64_t>(len, 256));
            memory.write(gpa, bytes.data(), bytes.size());
            offered += len;
          } else {
            room += len;
          }
          if (gpa < kRomBase) next_buffer = gpa + std::min<uint64_t>(len, kRamSize);
          buffers.push_back({gpa, static_cast<uint32_t>(len), writable});
        }
        const uint16_t head = r.ring.add_chain(buffers);
        r.room[head] = room;
        r.segments[head] = count;
        r.busy |= run;
        break;
      }
      case 2:
      case 3:
        console.queue_notify(code & 1, queues[code & 1]);
        break;
      case 4: {  // host input; a backend that ignores pause too
        const auto bytes = in.take(in.u8());
        if (!backend->paused || (code & 0x10)) {
          console.receive(bytes);
          received += bytes.size();
        }
        break;
      }
      case 5:  // the backend's room: none, a little, or unlimited again
        if (code & 0x10) {
          backend->make_room(CharBackend::kUnbounded);
        } else {
          backend->room = 0;
          backend->make_room(in.u8() % 64);
        }
        break;
      case 6: {  // config writes: emerg_wr, or anywhere
        const uint32_t offset = code & 0x10 ? in.u8() % console.config_size() : kEmergWr;
        const size_t len = std::min<size_t>(1 + (code >> 5), console.config_size() - offset);
        uint8_t bytes[8] = {};
        for (size_t i = 0; i < len; ++i) bytes[i] = in.u8();
        console.write_config(offset, std::span<const uint8_t>(bytes, len));
        offered += offset == kEmergWr;
        break;
      }
      case 7: {
        const uint32_t offset = in.u8() % console.config_size();
        uint8_t bytes[8];
        console.read_config(offset,
                            std::span(bytes, std::min<size_t>(8, console.config_size() - offset)));
        break;
      }
      case 8:  // the driver takes a queue down and sets it up afresh
        console.queue_reset((code >> 4) & 1);
        restart((code >> 4) & 1);
        break;
      case 9:  // device reset, then the driver starts again
        console.reset();
        restart(0);
        restart(1);
        console.activate(transport, console.device_features() | ring_features);
        break;
      case 10:
        transport.live = !transport.live;
        break;
      default:
        break;
    }
    for (size_t i = 0; i < 2; ++i) {
      Ring& r = rings[i];
      const uint16_t used = r.ring.used_idx();
      check(static_cast<uint16_t>(used - r.seen) <= kRingSize);
      for (; r.seen != used; ++r.seen) {
        const vring_used_elem elem = r.ring.used(r.seen);
        check(elem.id < kRingSize && elem.len <= r.room[elem.id]);
        if (i == 0) delivered += elem.len;
        if (i == 1) check(elem.len == 0);
        r.busy &= ~run_mask(elem.id, r.segments[elem.id]);
      }
    }
    check(console.pending_bytes() <= limit + VirtioConsole::kMaxBackendRead);
    check(delivered + console.pending_bytes() + console.dropped_bytes() == received);
    check(backend->output.size() <= offered);
  }
  console.reset();
  return 0;
}
