// Drives the PL011 UART's register file the way a hostile guest could, interleaved with host
// input and a backend that runs out of room, and checks what the guest and the host can see:
// the interrupt line is MIS != 0 and MIS = RIS & IMSC, FR agrees with the FIFOs, host input
// reaches the guest in order and whole, no guest byte is invented or silently lost (each
// leaves, waits in the FIFO or is counted as an overrun), and waiting host input stays
// bounded while the backend honours pause (by the limit, one delivery and a FIFO's worth).
//
// Input: a byte choosing the pending-input limit, then operations of one byte each plus their
// operands: register read or write (offset, width, value), host input (a length and bytes),
// backend room (an amount, or unlimited).
#include <cstdint>
#include <deque>
#include <memory>
#include <span>

#include "fuzz_input.hpp"
#include "libvmm/devices/pl011.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr size_t kMaxDelivery = 64;
constexpr size_t kMaxOps = 4096;
// The registers Linux uses, so that most operations hit one; any offset otherwise.
constexpr uint64_t kOffsets[16] = {Pl011::kDr,    Pl011::kRsrEcr, Pl011::kFr,        Pl011::kIbrd,
                                   Pl011::kFbrd,  Pl011::kLcrH,   Pl011::kCr,        Pl011::kIfls,
                                   Pl011::kImsc,  Pl011::kRis,    Pl011::kMis,       Pl011::kIcr,
                                   Pl011::kDmacr, Pl011::kIlpr,   Pl011::kPeriphId0, 0xFFC};

uint32_t reg(Pl011& uart, uint64_t offset) {
  uint8_t b[4] = {};
  uart.read(offset, b);
  return b[0] | b[1] << 8 | b[2] << 16 | static_cast<uint32_t>(b[3]) << 24;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const size_t limit = 1 + in.u8() % 64;
  auto backend = std::make_shared<test::FakeCharBackend>();
  auto irq = std::make_shared<test::FakeIrq>(33);
  Pl011 uart("pl011", backend, irq, limit);

  uint64_t transmitted = 0;        // DR writes: bytes the host must account for
  std::deque<uint8_t> host_input;  // received and not yet read by the guest, in order
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    const uint64_t offset = code & 0x20 ? in.u16() : kOffsets[(code >> 2) & 15];
    const size_t width = size_t{1} << ((code >> 6) & 3);
    switch (code & 3) {
      case 0: {  // guest write
        uint8_t value[8] = {};
        for (size_t i = 0; i < width; ++i) value[i] = in.u8();
        uart.write(offset, std::span<const uint8_t>(value, width));
        transmitted += offset == Pl011::kDr;
        break;
      }
      case 1: {  // guest read
        const bool rx_empty = (reg(uart, Pl011::kFr) & Pl011::kFrRxfe) != 0;
        uint8_t value[8];
        uart.read(offset, std::span(value, width));
        for (size_t i = 4; i < width; ++i) check(value[i] == 0);
        if (offset == Pl011::kDr && !rx_empty) {
          check(!host_input.empty() && value[0] == host_input.front());
          host_input.pop_front();
        }
        break;
      }
      case 2: {  // host input, as a backend that honours pause delivers it
        const auto bytes = in.take(in.u8() % kMaxDelivery);
        if (!backend->paused) {
          uart.receive(bytes);
          host_input.insert(host_input.end(), bytes.begin(), bytes.end());
        }
        break;
      }
      case 3:  // the backend's room: none, a little, or unlimited again
        if (code & 4) {
          backend->make_room(CharBackend::kUnbounded);
        } else {
          backend->room = 0;
          backend->make_room(in.u8() % 24);
        }
        break;
    }
    const uint32_t fr = reg(uart, Pl011::kFr);
    const uint32_t ris = reg(uart, Pl011::kRis);
    const uint32_t mis = reg(uart, Pl011::kMis);
    check(mis == (ris & reg(uart, Pl011::kImsc)));
    check(irq->level() == (mis != 0));
    check(((fr & Pl011::kFrTxfe) != 0) == (uart.transmit_fifo_bytes() == 0));
    // Host input is never stuck behind an empty FIFO, and the guest sees all of it.
    check(((fr & Pl011::kFrRxfe) != 0) == host_input.empty());
    check((fr & Pl011::kFrRxfe) == 0 || uart.pending_bytes() == 0);
    check(uart.transmit_fifo_bytes() <= Pl011::kFifoSize);
    check(backend->output.size() + uart.transmit_fifo_bytes() + uart.transmit_overruns() ==
          transmitted);
    // Pending input: below the limit before a delivery, plus that delivery, plus what leaving
    // FIFO mode moves back from the FIFO (all but one byte).
    check(uart.pending_bytes() < limit + kMaxDelivery + Pl011::kFifoSize);
    check(uart.pending_bytes() <= host_input.size());
  }
  return 0;
}
