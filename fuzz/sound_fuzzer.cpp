// virtio-snd driven the way a hostile driver could: control requests and I/O messages built from
// fuzz input, a clock moved by the input, resets. SoundCard::control() is checked directly on
// every control request (an accepted query fills exactly count * size bytes, a refused request
// changes no state), then the device gets the same request through its control queue; what comes
// back in the used rings must fit the chains the driver gave.
//
// Built twice: sound_control_fuzzer (mostly control requests: the state machine and the INFO
// queries) and, with LIBVMM_FUZZ_SOUND_IO, sound_io_fuzzer (streams set up validly, then mostly
// I/O messages on the tx and rx queues and clock ticks).
//
// Input: a sequence of operations, each an opcode byte and its operands (fuzz_input.hpp).
#include <linux/virtio_snd.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/sound.hpp"
#include "libvmm/virtio/sound_request.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRamSize = 256 * KiB;
constexpr uint16_t kRingSize = 16;
constexpr size_t kMaxOps = 256;
constexpr uint64_t kAreaBytes = 32 * KiB;  // each queue's buffers, anywhere in this area

struct Ring {
  Ring(const GuestMemory& memory, uint64_t base)
      : ring(memory, kRingSize, {base, base + 0x200, base + 0x400, base + 0x1000}) {
    area = ring.alloc(kAreaBytes);
  }
  test::DriverRing ring;
  uint64_t area = 0;
  std::array<uint64_t, kRingSize> room{};      // writable bytes of the chain at each head
  std::array<uint32_t, kRingSize> segments{};  // descriptors of the chain at each head, a mask
  uint32_t busy = 0;  // descriptors the device may still hold (it returns chains out of order)
  uint16_t seen = 0;  // used entries accounted for
};

void put32(std::vector<uint8_t>& v, uint32_t x) {
  for (int i = 0; i < 4; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}

struct Guest {
  test::TestMemory memory{kRamSize};
  std::vector<Virtqueue> queues;
  std::vector<std::unique_ptr<Ring>> rings;
  test::FakeTransport transport;
  int64_t now = 0;
  std::shared_ptr<VirtioSound> device;

  Guest() {
    device =
        std::make_shared<VirtioSound>(std::make_unique<NullSoundBackend>(), [this] { return now; });
    for (uint16_t i = 0; i < 4; ++i) {
      queues.emplace_back(memory, device->queue_max_sizes()[i]);
      rings.push_back(std::make_unique<Ring>(memory, 0x1000 + uint64_t{i} * 0xa000));
      rings[i]->ring.configure(queues[i]);
    }
    transport.serve(queues);
    device->activate(transport, 0);
  }

  // What the device returned on queue `q` fits what the driver gave.
  void collect(uint16_t q) {
    Ring& r = *rings[q];
    check(!queues[q].broken());
    while (r.seen != r.ring.used_idx()) {
      const vring_used_elem e = r.ring.used(r.seen++);
      check(e.id < kRingSize);
      check(e.len <= r.room[e.id]);
      check(r.segments[e.id] != 0);
      r.busy &= ~r.segments[e.id];
      r.segments[e.id] = 0;
    }
  }

  // A chain of a readable part of `readable` bytes holding `bytes` and a writable part of
  // `writable` bytes (each split at `split` bytes in two descriptors when it is shorter).
  bool add(uint16_t q, std::span<const uint8_t> bytes, uint32_t readable, uint32_t writable,
           uint32_t offset) {
    Ring& r = *rings[q];
    std::vector<test::Buffer> bufs;
    offset %= kAreaBytes / 2;
    readable = std::min<uint32_t>(readable, kAreaBytes / 4);
    writable = std::min<uint32_t>(writable, kAreaBytes / 4);
    if (readable > 0) {
      memory.fill(r.area + offset, 0, readable);
      memory.write(r.area + offset, bytes.data(), std::min<uint64_t>(bytes.size(), readable));
      bufs.push_back({r.area + offset, readable, false});
    }
    if (writable > 0) bufs.push_back({r.area + offset + readable, writable, true});
    if (bufs.empty()) return false;
    // The driver's ring takes the next descriptors in turn: not while the device holds one.
    uint32_t mask = 0;
    for (size_t i = 0; i < bufs.size(); ++i) mask |= 1u << ((r.ring.next_desc() + i) % kRingSize);
    if ((r.busy & mask) != 0) return false;
    const uint16_t head = r.ring.add_chain(bufs);
    check(r.segments[head] == 0);
    r.room[head] = writable;
    r.segments[head] = mask;
    r.busy |= mask;
    return true;
  }

  void control(std::span<const uint8_t> request, uint32_t writable) {
    // The parser alone first: what it accepts is consistent.
    const SoundControlReply reply = device->card().control(request, writable);
    if (reply.status == SoundStatus::ok) {
      // (The device answers nothing without room for the status: the parser need not check.)
      check(writable < kSoundHdrBytes || kSoundHdrBytes + reply.payload.size() <= writable);
    } else {
      check(!reply.error.empty());
      check(reply.payload.empty());
      SoundCard copy = device->card();
      const PcmState before0 = copy.stream(0).state;
      const PcmState before1 = copy.stream(1).state;
      copy.apply(reply);
      check(copy.stream(0).state == before0 && copy.stream(1).state == before1);
    }
    if (!add(VirtioSound::kControlQueue, request, static_cast<uint32_t>(request.size()), writable,
             0)) {
      return;
    }
    device->queue_notify(VirtioSound::kControlQueue, queues[VirtioSound::kControlQueue]);
    collect(VirtioSound::kControlQueue);
  }

  void io(bool tx, uint32_t stream, uint32_t data, uint32_t extra, uint32_t offset) {
    std::vector<uint8_t> hdr;
    put32(hdr, stream);
    const uint16_t q = tx ? VirtioSound::kTxQueue : VirtioSound::kRxQueue;
    const uint32_t readable = tx ? 4 + data : 4 + extra;
    const uint32_t writable = tx ? 8 + extra : data + 8;
    if (!add(q, hdr, readable, writable, offset)) return;
    device->queue_notify(q, queues[q]);
    collect(q);
  }

  // A valid SET_PARAMS, PREPARE and START of `stream`.
  void setup(uint32_t stream, uint8_t format, uint8_t rate, uint8_t channels, uint32_t period) {
    std::vector<uint8_t> p;
    put32(p, VIRTIO_SND_R_PCM_SET_PARAMS);
    put32(p, stream);
    put32(p, period * 4);
    put32(p, period);
    put32(p, 0);
    p.push_back(channels);
    p.push_back(format);
    p.push_back(rate);
    p.push_back(0);
    control(p, 4);
    for (uint32_t code : {VIRTIO_SND_R_PCM_PREPARE, VIRTIO_SND_R_PCM_START}) {
      std::vector<uint8_t> c;
      put32(c, code);
      put32(c, stream);
      control(c, 4);
    }
  }

  void tick(uint32_t micros) {
    now += int64_t{micros} * 1000;
    device->tick();
    collect(VirtioSound::kTxQueue);
    collect(VirtioSound::kRxQueue);
  }

  void reset() {
    device->reset();
    for (uint16_t i = 0; i < 4; ++i) {
      queues[i].reset();
      rings[i]->ring.restart();
      rings[i]->ring.configure(queues[i]);
      rings[i]->room.fill(0);
      rings[i]->segments.fill(0);
      rings[i]->busy = 0;
      rings[i]->seen = 0;
    }
    device->activate(transport, 0);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    log::set_level(log::Level::error);
    return true;
  }();
  static_cast<void>(quiet);
  fuzz::Input in(data, size);
  Guest guest;
#ifdef LIBVMM_FUZZ_SOUND_IO
  // Streams set up from the first bytes: format, rate, channels and period of each.
  for (uint32_t stream = 0; stream < 2; ++stream) {
    const uint8_t formats[] = {VIRTIO_SND_PCM_FMT_U8, VIRTIO_SND_PCM_FMT_S16,
                               VIRTIO_SND_PCM_FMT_S24, VIRTIO_SND_PCM_FMT_S32,
                               VIRTIO_SND_PCM_FMT_FLOAT};
    const uint8_t f = formats[in.u8() % 5];
    const uint8_t rate = static_cast<uint8_t>(VIRTIO_SND_PCM_RATE_8000 + in.u8() % 12);
    const uint8_t channels = static_cast<uint8_t>(1 + in.u8() % 2);
    const uint32_t period = 8 * (1 + in.u8() % 64);
    guest.setup(stream, f, rate, channels, period);
  }
#endif
  for (size_t ops = 0; ops < kMaxOps && !in.empty(); ++ops) {
    const uint8_t op = in.u8();
#ifdef LIBVMM_FUZZ_SOUND_IO
    switch (op % 8) {
      case 0:
      case 1:
      case 2:
        guest.io(true, in.u8() % 4 == 3 ? in.u32() : in.u8() % 2, in.u16() % 4096,
                 in.u8() % 4 == 0 ? in.u8() : 0, in.u16());
        break;
      case 3:
      case 4:
        guest.io(false, in.u8() % 4 == 3 ? in.u32() : in.u8() % 2, in.u16() % 4096,
                 in.u8() % 4 == 0 ? in.u8() : 0, in.u16());
        break;
      case 5:
        guest.tick(in.u16() * 10u);
        break;
      case 6: {
        std::vector<uint8_t> c;
        put32(c, VIRTIO_SND_R_PCM_SET_PARAMS + 1 + in.u8() % 4);  // PREPARE .. STOP
        put32(c, in.u8() % 2);
        guest.control(c, 4);
        break;
      }
      default:
        if (in.u8() % 16 == 0) guest.reset();
        break;
    }
#else
    switch (op % 4) {
      case 0:
      case 1: {
        const size_t len = in.u8() % 40;
        const auto bytes = in.take(len);
        guest.control(bytes, in.u8() % 2 == 0 ? 4 : in.u16() % 512);
        break;
      }
      case 2:
        guest.tick(in.u16() * 10u);
        break;
      default:
        if (in.u8() % 8 == 0) {
          guest.reset();
        } else {
          guest.io(in.u8() % 2 == 0, in.u8() % 3, in.u16() % 2048, 0, in.u16());
        }
        break;
    }
#endif
  }
  return 0;
}
