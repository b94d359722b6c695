// Drives the CMOS RAM and RTC at ports 0x70/0x71 the way a hostile guest could, with the host
// clock anywhere from 1970 to 2099, and checks what the guest reads: every clock register a
// valid time in the format register B selects (BCD or binary, 12- or 24-hour), register A
// never "update in progress", D fixed, the index port write-only, plain RAM returning what was
// written; register C only the update and alarm flags, IRQF exactly when one B enables is set,
// and IRQ 8 high only while B enables an interrupt, low after C is read.
//
// Input: the host time (4 bytes, seconds), then operations of one byte each plus operands:
// index write, data write, data read, index read, an access of another width or offset, the
// clock moving on (or back) and the RTC's timer running.
#include <algorithm>
#include <array>
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <span>

#include "fuzz_input.hpp"
#include "libvmm/devices/cmos_rtc.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr std::time_t kYear2100 = 4102444800;
constexpr size_t kMaxOps = 4096;

class Line final : public IrqLine {
 public:
  uint32_t number() const override { return CmosRtc::kIrq; }
  void set_level(bool asserted) override {
    check(asserted != high);  // changed only when the level does
    high = asserted;
  }
  void pulse() override { check(false); }  // a level the guest acknowledges, never a pulse
  bool high = false;
};

bool is_clock(uint8_t index) {
  return index <= 9 ? index % 2 == 0 || index >= 6 : index == 0x32;
}

bool valid_bcd(uint8_t v) {
  return (v & 0x0F) <= 9 && (v >> 4) <= 9;
}

// The value a clock register shows, decoded; nullopt if it is not valid in its format.
std::optional<int> decode(uint8_t v, bool binary) {
  if (binary) return v;
  if (!valid_bcd(v)) return std::nullopt;
  return (v >> 4) * 10 + (v & 0x0F);
}

void check_clock(uint8_t index, uint8_t value, uint8_t b) {
  const bool binary = (b & 0x04) != 0;
  const bool h24 = (b & 0x02) != 0;
  if (index == 4 && !h24) {  // 12-hour: 1..12, bit 7 PM
    const auto hour = decode(value & 0x7F, binary);
    check(hour && *hour >= 1 && *hour <= 12);
    return;
  }
  const auto v = decode(value, binary);
  check(v.has_value());
  switch (index) {
    case 0:
      check(*v <= 59);
      break;
    case 2:
      check(*v <= 59);
      break;
    case 4:
      check(*v <= 23);
      break;
    case 6:
      check(*v >= 1 && *v <= 7);
      break;
    case 7:
      check(*v >= 1 && *v <= 31);
      break;
    case 8:
      check(*v >= 1 && *v <= 12);
      break;
    case 9:
      check(*v <= 99);
      break;
    case 0x32:
      check(*v == 19 || *v == 20);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  std::time_t now = static_cast<std::time_t>(in.u32()) % kYear2100;
  auto line = std::make_shared<Line>();
  CmosRtc rtc([&now] { return now; }, line);

  std::array<std::optional<uint8_t>, 128> written{};  // plain RAM the guest wrote
  uint8_t index = 0;
  uint8_t b = 0x02;  // register B as the guest last wrote it (reset: 24-hour BCD)
  for (size_t op = 0; op < kMaxOps && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    uint8_t value = 0;
    switch (code % 6) {
      case 0:
        value = in.u8();
        rtc.write(0, std::span(&value, 1));
        index = value & 0x7F;
        break;
      case 1:
        value = in.u8();
        rtc.write(1, std::span(&value, 1));
        if (index == 0x0B) b = value;
        if (!is_clock(index) && index > 0x0D) written[index] = value;
        break;
      case 2:
        rtc.read(1, std::span(&value, 1));
        if (is_clock(index)) check_clock(index, value, b);
        if (index == 0x0A) check((value & 0x80) == 0);
        if (index == 0x0B) check(value == b);
        if (index == 0x0C) {
          check((value & 0x4F) == 0);
          check(((value & 0x80) != 0) == ((value & b & 0x30) != 0));
          check(!line->high);
        }
        if (index == 0x0D) check(value == 0x80);
        if (written[index]) check(value == *written[index]);
        break;
      case 3:
        rtc.read(0, std::span(&value, 1));
        check(value == 0xFF);
        break;
      case 4: {  // another width or offset: never more than the byte, never a crash
        uint8_t wide[8] = {};
        const size_t width = size_t{1} << (code >> 6);
        const uint64_t offset = (code >> 3) & 7;
        if (code & 4) {
          rtc.read(offset, std::span(wide, width));
          for (size_t i = 1; i < width; ++i) check(wide[i] == 0);
          if (offset > 1) check(wide[0] == 0);
        } else {
          rtc.write(offset, std::span(wide, width));
          if (offset == 0) index = 0;
          if (offset == 1 && index == 0x0B) b = 0;
          if (offset == 1 && !is_clock(index) && index > 0x0D) written[index] = 0;
        }
        break;
      }
      case 5: {  // time passes (a byte's worth of seconds, a day, or back) and the timer runs
        const uint8_t step = in.u8();
        now = step == 0xFF   ? now - std::min<std::time_t>(now, 3600)
              : step == 0xFE ? (now + 86400) % kYear2100
                             : (now + step) % kYear2100;
        rtc.update();
        break;
      }
    }
    check(!line->high || (b & 0x30) != 0);  // raised only while B enables an interrupt
  }
  return 0;
}
