// Drives the i8042 keyboard controller through the port bus the way a hostile guest could
// (any port from 0x60 to 0x64, any width, any byte) and checks that it stays the idle
// controller Linux expects: reads are all zeroes (no data, empty buffers), nothing but the
// attached ports answers, and exactly the writes of 0xFE to the command port reset the machine.
//
// Input: operations of one byte each plus operands: a port offset, a width, a value.
#include <cstdint>
#include <memory>
#include <span>

#include "fuzz_input.hpp"
#include "libvmm/core/bus.hpp"
#include "libvmm/devices/i8042.hpp"

using namespace libvmm;
using fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  int resets = 0;
  Bus pio("pio");
  I8042::attach(pio, std::make_shared<I8042>([&] { ++resets; }));

  int expected_resets = 0;
  for (size_t op = 0; op < 4096 && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    const uint64_t port = I8042::kDataPort + (code & 7);
    const size_t width = size_t{1} << ((code >> 3) & 3);
    const bool answers = (port == I8042::kDataPort || port == I8042::kCommandPort) && width == 1;
    uint8_t bytes[8] = {};
    if (code & 0x80) {
      for (size_t i = 0; i < width; ++i) bytes[i] = 0xA5;
      check(pio.read(port, std::span(bytes, width)) == answers);
      if (answers) check(bytes[0] == 0);
    } else {
      for (size_t i = 0; i < width; ++i) bytes[i] = in.u8();
      check(pio.write(port, std::span<const uint8_t>(bytes, width)) == answers);
      expected_resets +=
          answers && port == I8042::kCommandPort && bytes[0] == I8042::kPulseResetCommand;
    }
    check(resets == expected_resets);
  }
  return 0;
}
