// Drives the 16550A UART's register file the way a hostile guest could, interleaved with host
// input and a backend that runs out of room, and checks what the guest and the host can see:
// the interrupt line agrees with IIR, LSR.THRE with the transmit FIFO, no guest byte is
// invented or silently lost (each leaves, waits in the FIFO or is counted as an overrun), and
// waiting host input stays bounded while the backend honours pause.
//
// Input: a byte choosing the pending-input limit, then operations of one byte each plus their
// operands: register read or write (offset, width, value), host input (a length and bytes),
// backend room (an amount, or unlimited).
#include <cstdint>
#include <memory>
#include <span>

#include "fuzz_input.hpp"
#include "libvmm/devices/uart16550.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5;
constexpr uint8_t kLcrDlab = 0x80, kMcrLoop = 0x10, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr size_t kMaxDelivery = 64;
constexpr size_t kMaxOps = 4096;

uint8_t reg(Uart16550& uart, uint64_t offset) {
  uint8_t value = 0;
  uart.read(offset, std::span(&value, 1));
  return value;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const size_t limit = 1 + in.u8() % 64;
  auto backend = std::make_shared<test::FakeCharBackend>();
  auto irq = std::make_shared<test::FakeIrq>(4);
  Uart16550 uart("ttyS0", backend, irq, limit);

  uint64_t transmitted = 0;  // THR writes outside loopback: bytes the host must account for
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    const uint64_t offset = code & 0x20 ? in.u8() : (code >> 2) & 7;  // sometimes out of range
    const size_t width = size_t{1} << ((code >> 6) & 3);              // 1, 2, 4 or 8 bytes
    switch (code & 3) {
      case 0: {  // guest write
        uint8_t value[8] = {};
        for (size_t i = 0; i < width; ++i) value[i] = in.u8();
        const bool to_thr =
            offset == 0 && (reg(uart, kLcr) & kLcrDlab) == 0 && (reg(uart, kMcr) & kMcrLoop) == 0;
        uart.write(offset, std::span<const uint8_t>(value, width));
        transmitted += to_thr;
        break;
      }
      case 1: {  // guest read
        const bool level = irq->level();
        const size_t fifo = uart.transmit_fifo_bytes();
        uint8_t value[8];
        uart.read(offset, std::span(value, width));
        for (size_t i = 1; i < width; ++i) check(value[i] == 0);
        if (offset == kIir) check(level == ((value[0] & 1) == 0));
        if (offset == kLsr) {
          check(((value[0] & kLsrThre) != 0) == (fifo == 0));
          check(((value[0] & kLsrTemt) != 0) == (fifo == 0));
        }
        if (offset >= Uart16550::kRegisterCount) check(value[0] == 0);
        break;
      }
      case 2: {  // host input, as a backend that honours pause delivers it
        const auto bytes = in.take(in.u8() % kMaxDelivery);
        if (!backend->paused) uart.receive(bytes);
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
    check(uart.transmit_fifo_bytes() <= Uart16550::kFifoSize);
    check(backend->output.size() + uart.transmit_fifo_bytes() + uart.transmit_overruns() +
              uart.transmit_discarded() ==
          transmitted);
    check(uart.pending_bytes() < limit + kMaxDelivery);
    // The line changes only when the level does, and ends where the registers say.
    check(irq->levels.empty() || irq->levels.size() == 1 ||
          irq->levels.back() != irq->levels[irq->levels.size() - 2]);
  }
  return 0;
}
