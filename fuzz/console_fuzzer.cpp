// Drives virtio-console the way a hostile driver and a host could, interleaved: receive and
// transmit chains of any shape, notifications, host input (honouring pause or not), a backend
// that runs out of room and gets it back, emerg_wr and other config accesses, queue resets,
// device resets and a transport that stops serving; with a named port (MULTIPORT), also
// control messages of any shape and well-formed ones for any port; with port 0 on a terminal,
// resizes of it (F_SIZE: config interrupts, RESIZE messages); host ends opening and closing
// (PORT_OPEN). Checks, for every port,
// that no host input byte is invented or lost (each is in a used receive buffer, still
// pending, or counted as dropped past the limit), that pending input stays within its bound,
// that the backend never gets more than the driver wrote to that port, and that used entries
// are sane (receive and control receive: at most the chain's room; transmit: nothing written).
//
// Input: a selector (pending limit, indirect descriptors, a named port, a terminal), then
// operations of one byte each plus operands (chain segments with flags, lengths and bytes; host
// input; amounts).
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
constexpr uint64_t kBuffers = 0x1800;  // after six rings 0x400 apart
constexpr size_t kMaxOps = 512;
constexpr uint32_t kEmergWr = offsetof(virtio_console_config, emerg_wr);
constexpr size_t kMaxQueues = 6;  // port 0, control, port 1

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

// Rings 0x400 apart from 0, their buffers after them.
static_assert(kMaxQueues * 0x400 <= kBuffers);

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
  std::array<std::shared_ptr<test::FakeCharBackend>, 2> backends{
      std::make_shared<test::FakeCharBackend>(), std::make_shared<test::FakeCharBackend>()};
  std::vector<VirtioConsole::NamedPort> named;
  if (selector & 0x80) named.push_back({"org.libvmm.fuzz", backends[1]});
  // Odd selectors: port 0 on a terminal, so F_SIZE, its config interrupts and RESIZE messages.
  if (selector & 1) backends[0]->terminal = CharBackend::TerminalSize{80, 24};
  VirtioConsole console(backends[0], limit, named);
  const size_t ports = console.port_count();
  const size_t queue_count = console.queue_max_sizes().size();
  std::vector<Virtqueue> queues;
  std::vector<Ring> rings;
  for (size_t i = 0; i < queue_count; ++i) {
    queues.emplace_back(memory, VirtioConsole::kQueueSize);
    rings.emplace_back(memory, 0x400 * i);
  }
  test::FakeTransport transport;
  transport.serve(queues);
  auto restart = [&](size_t i) {
    queues[i].reset();
    rings[i].ring.restart();
    rings[i].ring.configure(queues[i], ring_features);
    rings[i].seen = 0;
    rings[i].busy = 0;
  };
  for (size_t i = 0; i < queue_count; ++i) restart(i);
  console.activate(transport, console.device_features() | ring_features);
  // Queue `bit` (receive 0, transmit 1) of the pair `code` picks: port 0, control, port 1.
  auto queue_of = [&](uint8_t code, unsigned bit) -> size_t {
    return bit | (((code >> 5) % (queue_count / 2)) << 1);
  };
  auto port_of_queue = [](size_t queue) -> size_t { return queue < 2 ? 0 : queue / 2 - 1; };

  uint64_t next_buffer = kBuffers;
  std::array<uint64_t, 2> received{}, delivered{}, offered{};
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    switch (code & 15) {
      case 0:
      case 1: {  // the driver adds a chain: receive (0) or transmit (1), to any queue pair
        const size_t q = queue_of(code, code & 1);
        Ring& r = rings[q];
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
            if (q != VirtioConsole::kControlTransmitQueue) offered[port_of_queue(q)] += len;
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
      case 3: {
        const size_t q = queue_of(code, code & 1);
        console.queue_notify(static_cast<uint16_t>(q), queues[q]);
        break;
      }
      case 4: {  // host input for a port; a backend that ignores pause too
        const size_t port = (code >> 5) % ports;
        const auto bytes = in.take(in.u8());
        if (!backends[port]->paused || (code & 0x10)) {
          console.receive(static_cast<uint32_t>(port), bytes);
          received[port] += bytes.size();
        }
        break;
      }
      case 5: {  // a port's backend room: none, a little, or unlimited again
        auto& backend = backends[(code >> 5) % ports];
        if (code & 0x10) {
          backend->make_room(CharBackend::kUnbounded);
        } else {
          backend->room = 0;
          backend->make_room(in.u8() % 64);
        }
        break;
      }
      case 6: {  // config writes: emerg_wr, or anywhere
        const uint32_t offset = code & 0x10 ? in.u8() % console.config_size() : kEmergWr;
        const size_t len = std::min<size_t>(1 + (code >> 5), console.config_size() - offset);
        uint8_t bytes[8] = {};
        for (size_t i = 0; i < len; ++i) bytes[i] = in.u8();
        console.write_config(offset, std::span<const uint8_t>(bytes, len));
        offered[0] += offset == kEmergWr;
        break;
      }
      case 7: {
        const uint32_t offset = in.u8() % console.config_size();
        uint8_t bytes[8];
        console.read_config(offset,
                            std::span(bytes, std::min<size_t>(8, console.config_size() - offset)));
        break;
      }
      case 8: {  // the driver takes a queue down and sets it up afresh
        const size_t q = queue_of(code, (code >> 4) & 1);
        console.queue_reset(static_cast<uint16_t>(q));
        restart(q);
        break;
      }
      case 9:  // device reset, then the driver starts again
        console.reset();
        for (size_t i = 0; i < queue_count; ++i) restart(i);
        console.activate(transport, console.device_features() | ring_features);
        break;
      case 10:
        transport.live = !transport.live;
        break;
      case 11: {  // a well-formed control message, for a port that may or may not exist
        if (queue_count < 4) break;
        Ring& r = rings[VirtioConsole::kControlTransmitQueue];
        const uint32_t run = run_mask(r.ring.next_desc(), 1);
        if (r.busy & run) break;
        const virtio_console_control message{in.u8() % 3u, static_cast<uint16_t>(in.u8() % 8),
                                             static_cast<uint16_t>(in.u8() % 2)};
        const uint64_t gpa = kBuffers + (next_buffer - kBuffers) % (kRamSize - kBuffers - 8);
        memory.write(gpa, &message, sizeof(message));
        next_buffer = gpa + sizeof(message);
        const uint16_t head = r.ring.add_chain({{gpa, sizeof(message), false}});
        r.room[head] = 0;
        r.segments[head] = 1;
        r.busy |= run;
        console.queue_notify(VirtioConsole::kControlTransmitQueue,
                             queues[VirtioConsole::kControlTransmitQueue]);
        break;
      }
      case 12:  // the terminal resized (SIGWINCH), to any size, 0 x 0 included
        if (backends[0]->terminal) backends[0]->resize(in.u8(), in.u8());
        break;
      case 13:  // a port's host end opens or closes (a socket's client comes or goes)
        backends[(code >> 5) % ports]->set_connected((code & 0x10) != 0);
        break;
      default:
        break;
    }
    for (size_t i = 0; i < queue_count; ++i) {
      Ring& r = rings[i];
      const uint16_t used = r.ring.used_idx();
      check(static_cast<uint16_t>(used - r.seen) <= kRingSize);
      for (; r.seen != used; ++r.seen) {
        const vring_used_elem elem = r.ring.used(r.seen);
        check(elem.id < kRingSize && elem.len <= r.room[elem.id]);
        const bool receive = i % 2 == 0;
        if (receive && i != VirtioConsole::kControlReceiveQueue) {
          delivered[port_of_queue(i)] += elem.len;
        }
        if (!receive) check(elem.len == 0);
        r.busy &= ~run_mask(elem.id, r.segments[elem.id]);
      }
    }
    for (size_t port = 0; port < ports; ++port) {
      const auto p = static_cast<uint32_t>(port);
      check(console.pending_bytes(p) <= limit + VirtioConsole::kMaxBackendRead);
      check(delivered[port] + console.pending_bytes(p) + console.dropped_bytes(p) ==
            received[port]);
      check(backends[port]->output.size() <= offered[port]);
    }
  }
  console.reset();
  return 0;
}
