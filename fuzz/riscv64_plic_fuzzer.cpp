// The PLIC vmm emulates for riscv64 guests, driven the way a hostile guest (register reads and
// writes of any offset and width, claims and completions of any source) and busy devices
// (levels and edges on any source) could, and checked against a model: every output change is
// reported once and in order, the reported output of each context is always "some enabled,
// pending, unclaimed source above the threshold", and a claim returns such a source (the
// highest priority, then the lowest number) or 0.
//
// Input: the number of sources and contexts, then operations of one byte each plus operands.
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/riscv64/plic.hpp"

using namespace libvmm;
using namespace libvmm::riscv64;
using fuzz::check;

namespace {

constexpr size_t kMaxOps = 4096;

uint32_t read32(Plic& plic, uint64_t offset) {
  uint8_t b[4] = {};
  plic.read(offset, b);
  return uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 24);
}

void write32(Plic& plic, uint64_t offset, uint32_t value) {
  const uint8_t b[4] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                        static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
  plic.write(offset, b);
}

// What the registers say context `c` should see: the best source or 0 (claimed sources are
// invisible in registers: `claimed` tracks them from the claims and completions made).
uint32_t expected_claim(Plic& plic, uint32_t sources, uint32_t c,
                        const std::vector<bool>& claimed) {
  const uint32_t threshold = read32(plic, kPlicContextBase + kPlicContextStride * c);
  uint32_t best = 0, best_priority = threshold;
  for (uint32_t s = 1; s < sources; ++s) {
    const bool pending = (read32(plic, kPlicPendingBase + 4 * (s / 32)) >> (s % 32)) & 1;
    const bool enabled =
        (read32(plic, kPlicEnableBase + kPlicEnableStride * c + 4 * (s / 32)) >> (s % 32)) & 1;
    const uint32_t priority = read32(plic, 4 * s);
    if (pending && enabled && !claimed[s] && priority > best_priority) {
      best = s;
      best_priority = priority;
    }
  }
  return best;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const uint32_t sources = 2 + in.u8() % 100;
  const uint32_t contexts = 1 + in.u8() % 4;
  std::vector<bool> reported(contexts, false);
  auto plic = std::make_shared<Plic>(sources, contexts, [&](uint32_t c, bool asserted) {
    check(c < contexts && reported[c] != asserted);  // a change, once
    reported[c] = asserted;
  });
  std::vector<bool> claimed(sources, false);
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    const uint32_t s = in.u8() % (sources + 4);
    const uint32_t c = in.u8() % (contexts + 1);
    switch (code % 8) {
      case 0:
        plic->pulse(s);
        break;
      case 1:
        plic->set_level(s, code & 0x80);
        break;
      case 2:
        if (c < contexts) {
          const uint32_t want = expected_claim(*plic, sources, c, claimed);
          const uint32_t got = read32(*plic, kPlicContextBase + kPlicContextStride * c + 4);
          check(got == want);
          if (got != 0) claimed[got] = true;
        } else {
          check(read32(*plic, kPlicContextBase + kPlicContextStride * c + 4) == 0);
        }
        break;
      case 3: {
        const bool enabled =
            c < contexts && s < sources &&
            ((read32(*plic, kPlicEnableBase + kPlicEnableStride * c + 4 * (s / 32)) >> (s % 32)) &
             1);
        write32(*plic, kPlicContextBase + kPlicContextStride * c + 4, s);
        if (enabled && s != 0) claimed[s] = false;
        break;
      }
      case 4:
        write32(*plic, 4 * s, in.u32());
        break;
      case 5:
        write32(*plic, kPlicEnableBase + kPlicEnableStride * c + 4 * (in.u8() % 5), in.u32());
        break;
      case 6:
        write32(*plic, kPlicContextBase + kPlicContextStride * c, in.u32());
        break;
      default: {  // any access: offset, width
        const uint64_t offset = in.u32() % (kPlicSize + 0x1000);
        const size_t width = size_t{1} << (in.u8() % 4);
        uint8_t value[8] = {};
        if (code & 0x80) {
          for (size_t i = 0; i < width; ++i) value[i] = in.u8();
          if (offset >= kPlicContextBase && offset % kPlicContextStride == 4) break;  // model
          plic->write(offset, std::span<const uint8_t>(value, width));
        } else {
          if (offset >= kPlicContextBase && offset % kPlicContextStride == 4) break;  // a claim
          plic->read(offset, std::span<uint8_t>(value, width));
        }
        break;
      }
    }
    for (uint32_t k = 0; k < contexts; ++k) {
      check(plic->output(k) == reported[k]);
      check(reported[k] == (expected_claim(*plic, sources, k, claimed) != 0));
    }
  }
  return 0;
}
