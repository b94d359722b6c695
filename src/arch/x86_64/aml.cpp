#include "libvmm/arch/x86_64/aml.hpp"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace libvmm::x86::aml {
namespace {

// Opcodes (ACPI 6.5 §20.3).
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0A;
constexpr uint8_t kWordPrefix = 0x0B;
constexpr uint8_t kDWordPrefix = 0x0C;
constexpr uint8_t kStringPrefix = 0x0D;
constexpr uint8_t kQWordPrefix = 0x0E;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2E;
constexpr uint8_t kMultiNamePrefix = 0x2F;
constexpr uint8_t kExtOpPrefix = 0x5B;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = '\\';
constexpr uint8_t kParentPrefixChar = '^';
constexpr uint8_t kLocal0Op = 0x60;
constexpr uint8_t kArg0Op = 0x68;
constexpr uint8_t kStoreOp = 0x70;
constexpr uint8_t kAndOp = 0x7B;
constexpr uint8_t kOrOp = 0x7D;
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kCreateDWordFieldOp = 0x8A;
constexpr uint8_t kLNotOp = 0x92;
constexpr uint8_t kLEqualOp = 0x93;
constexpr uint8_t kIfOp = 0xA0;
constexpr uint8_t kElseOp = 0xA1;
constexpr uint8_t kReturnOp = 0xA4;

// Resource descriptor tags (§6.4).
constexpr uint8_t kIoPortTag = 0x47;  // small item 0x08, length 7
constexpr uint8_t kEndTag = 0x79;     // small item 0x0F, length 1
constexpr uint8_t kMemory32FixedTag = 0x86;
constexpr uint8_t kDWordAddressTag = 0x87;
constexpr uint8_t kWordAddressTag = 0x88;
constexpr uint8_t kExtendedInterruptTag = 0x89;
constexpr uint8_t kQWordAddressTag = 0x8A;

constexpr size_t kMaxPkgLength = (size_t{1} << 28) - 1;

[[noreturn]] void invalid(const std::string& what) {
  throw std::invalid_argument("AML: " + what);
}

// resize + memcpy, not insert: GCC 12 at -O3 warns falsely (-Warray-bounds) on inserting into
// a one-byte vector.
void append(Bytes& out, const Bytes& more) {
  if (more.empty()) return;
  const size_t at = out.size();
  out.resize(at + more.size());
  std::memcpy(out.data() + at, more.data(), more.size());
}

void append_le(Bytes& out, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

void append_all(Bytes& out, const std::vector<Bytes>& terms) {
  for (const Bytes& t : terms) append(out, t);
}

// OP PkgLength BODY.
Bytes with_pkg_length(std::initializer_list<uint8_t> op, const Bytes& body) {
  Bytes out(op);
  append(out, pkg_length(body.size()));
  append(out, body);
  return out;
}

bool lead_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || c == '_';
}
bool name_char(char c) {
  return lead_name_char(c) || (c >= '0' && c <= '9');
}

void append_name_seg(Bytes& out, std::string_view seg, std::string_view path) {
  if (seg.empty() || seg.size() > 4) {
    invalid(fmt::format("name segment '{}' in '{}' must have 1 to 4 characters", seg, path));
  }
  if (!lead_name_char(seg[0])) {
    invalid(fmt::format("name segment '{}' in '{}' must start with A-Z or _", seg, path));
  }
  for (char c : seg) {
    if (!name_char(c)) {
      invalid(fmt::format("name segment '{}' in '{}' may hold only A-Z, 0-9 and _", seg, path));
    }
  }
  out.insert(out.end(), seg.begin(), seg.end());
  out.insert(out.end(), 4 - seg.size(), '_');
}

Bytes binary(uint8_t op, const Bytes& a, const Bytes& b, const Bytes& target) {
  Bytes out{op};
  append(out, a);
  append(out, b);
  append(out, target.empty() ? Bytes{kZeroOp} : target);  // NullName: no target
  return out;
}

void check_fits(uint64_t value, size_t bytes, const char* field) {
  if (bytes < 8 && value >> (8 * bytes) != 0) {
    invalid(fmt::format("address space {} {:#x} does not fit in {} bytes", field, value, bytes));
  }
}

Bytes address(uint8_t tag, size_t field_bytes, const AddressSpace& s) {
  check_fits(s.granularity, field_bytes, "granularity");
  check_fits(s.min, field_bytes, "minimum");
  check_fits(s.max, field_bytes, "maximum");
  check_fits(s.translation, field_bytes, "translation");
  check_fits(s.length, field_bytes, "length");
  const size_t length = 3 + 5 * field_bytes;  // type, general flags, type flags, five fields
  Bytes out{tag};
  append_le(out, length, 2);
  out.push_back(static_cast<uint8_t>(s.type));
  out.push_back(static_cast<uint8_t>((s.max_fixed ? 1u << 3 : 0u) | (s.min_fixed ? 1u << 2 : 0u) |
                                     (s.subtractive ? 1u << 1 : 0u) | (s.producer ? 0u : 1u)));
  out.push_back(s.type_flags);
  append_le(out, s.granularity, field_bytes);
  append_le(out, s.min, field_bytes);
  append_le(out, s.max, field_bytes);
  append_le(out, s.translation, field_bytes);
  append_le(out, s.length, field_bytes);
  return out;
}

AddressSpace window(AddressSpaceType type, uint8_t type_flags, uint64_t min, uint64_t max) {
  if (max < min)
    invalid(fmt::format("address window [{:#x}, {:#x}] ends before it starts", min, max));
  AddressSpace s;
  s.type = type;
  s.type_flags = type_flags;
  s.min = min;
  s.max = max;
  s.length = max - min + 1;
  return s;
}

uint8_t hex_digit(char c, std::string_view text) {
  if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
  if (c >= 'A' && c <= 'F') return static_cast<uint8_t>(c - 'A' + 10);
  if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
  invalid(fmt::format("'{}' is not a hex digit in '{}'", c, text));
}

}  // namespace

Bytes pkg_length(size_t body_length) {
  // The encoded value counts the PkgLength bytes themselves. One byte holds up to 63; longer
  // forms put the count of following bytes in bits 7-6 and the low nibble in bits 3-0.
  if (body_length + 1 <= 0x3F) return {static_cast<uint8_t>(body_length + 1)};
  for (size_t n = 2; n <= 4; ++n) {
    const size_t total = body_length + n;
    if (total < (size_t{1} << (4 + 8 * (n - 1)))) {
      Bytes out{static_cast<uint8_t>(((n - 1) << 6) | (total & 0x0F))};
      for (size_t i = 1; i < n; ++i)
        out.push_back(static_cast<uint8_t>(total >> (4 + 8 * (i - 1))));
      return out;
    }
  }
  invalid(
      fmt::format("package of {} bytes exceeds PkgLength's {} bytes", body_length, kMaxPkgLength));
}

Bytes name_string(std::string_view path) {
  Bytes out;
  std::string_view rest = path;
  if (!rest.empty() && rest[0] == '\\') {
    out.push_back(kRootChar);
    rest.remove_prefix(1);
  } else {
    while (!rest.empty() && rest[0] == '^') {
      out.push_back(kParentPrefixChar);
      rest.remove_prefix(1);
    }
  }
  std::vector<std::string_view> segs;
  while (!rest.empty()) {
    const size_t dot = rest.find('.');
    segs.push_back(rest.substr(0, dot));
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
    if (rest.empty()) invalid(fmt::format("name '{}' ends with a dot", path));
  }
  if (segs.size() > 255) invalid(fmt::format("name '{}' has more than 255 segments", path));
  if (segs.empty()) {
    out.push_back(0x00);  // NullName
  } else if (segs.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segs.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segs.size()));
  }
  for (std::string_view seg : segs) append_name_seg(out, seg, path);
  return out;
}

Bytes integer(uint64_t value) {
  if (value == 0) return {kZeroOp};
  if (value == 1) return {kOneOp};
  Bytes out;
  if (value <= 0xFF) {
    out.push_back(kBytePrefix);
    append_le(out, value, 1);
  } else if (value <= 0xFFFF) {
    out.push_back(kWordPrefix);
    append_le(out, value, 2);
  } else if (value <= 0xFFFFFFFF) {
    out.push_back(kDWordPrefix);
    append_le(out, value, 4);
  } else {
    out.push_back(kQWordPrefix);
    append_le(out, value, 8);
  }
  return out;
}

Bytes dword(uint32_t value) {
  Bytes out{kDWordPrefix};
  append_le(out, value, 4);
  return out;
}

Bytes string(std::string_view text) {
  Bytes out{kStringPrefix};
  for (char c : text) {
    if (c <= 0 || static_cast<unsigned char>(c) > 0x7F) {
      invalid(fmt::format("string '{}' may hold only ASCII 0x01-0x7F", text));
    }
    out.push_back(static_cast<uint8_t>(c));
  }
  out.push_back(0x00);
  return out;
}

uint32_t eisa_id_value(std::string_view id) {
  if (id.size() != 7) invalid(fmt::format("EISA ID '{}' must have 7 characters", id));
  uint32_t letters = 0;
  for (size_t i = 0; i < 3; ++i) {
    if (id[i] < 'A' || id[i] > 'Z') {
      invalid(fmt::format("EISA ID '{}' must start with three letters A-Z", id));
    }
    letters = (letters << 5) | static_cast<uint32_t>(id[i] - 'A' + 1);
  }
  // Bytes in memory: the 15 bits of letters big-endian, then the product number's 4 digits.
  const uint8_t b0 = static_cast<uint8_t>(letters >> 8);
  const uint8_t b1 = static_cast<uint8_t>(letters);
  const uint8_t b2 = static_cast<uint8_t>(hex_digit(id[3], id) << 4 | hex_digit(id[4], id));
  const uint8_t b3 = static_cast<uint8_t>(hex_digit(id[5], id) << 4 | hex_digit(id[6], id));
  return uint32_t{b0} | uint32_t{b1} << 8 | uint32_t{b2} << 16 | uint32_t{b3} << 24;
}

Bytes eisa_id(std::string_view id) {
  return dword(eisa_id_value(id));
}

Bytes buffer(const Bytes& contents) {
  Bytes body = integer(contents.size());
  append(body, contents);
  return with_pkg_length({kBufferOp}, body);
}

Bytes uuid(std::string_view text) {
  // 8-4-4-4-12 hex digits.
  if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' ||
      text[23] != '-') {
    invalid(fmt::format("UUID '{}' must be written 8-4-4-4-12 hex digits", text));
  }
  auto byte_at = [&](size_t pos) {
    return static_cast<uint8_t>(hex_digit(text[pos], text) << 4 | hex_digit(text[pos + 1], text));
  };
  // Text byte positions, in the order they are stored.
  constexpr size_t kOrder[16] = {6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34};
  Bytes raw;
  for (size_t pos : kOrder) raw.push_back(byte_at(pos));
  return buffer(raw);
}

Bytes package(const std::vector<Bytes>& elements) {
  if (elements.size() > 255) {
    invalid(fmt::format("package of {} elements (at most 255)", elements.size()));
  }
  Bytes body{static_cast<uint8_t>(elements.size())};
  append_all(body, elements);
  return with_pkg_length({kPackageOp}, body);
}

Bytes name(std::string_view name, const Bytes& value) {
  Bytes out{kNameOp};
  append(out, name_string(name));
  append(out, value);
  return out;
}

Bytes scope(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes body = name_string(path);
  append_all(body, terms);
  return with_pkg_length({kScopeOp}, body);
}

Bytes device(std::string_view name, const std::vector<Bytes>& terms) {
  Bytes body = name_string(name);
  append_all(body, terms);
  return with_pkg_length({kExtOpPrefix, kDeviceOp}, body);
}

Bytes method(std::string_view name, uint8_t arg_count, bool serialized,
             const std::vector<Bytes>& terms) {
  if (arg_count > 7)
    invalid(fmt::format("method {} with {} arguments (at most 7)", name, arg_count));
  Bytes body = name_string(name);
  body.push_back(static_cast<uint8_t>(arg_count | (serialized ? 1u << 3 : 0u)));
  append_all(body, terms);
  return with_pkg_length({kMethodOp}, body);
}

Bytes return_value(const Bytes& value) {
  Bytes out{kReturnOp};
  append(out, value);
  return out;
}

Bytes notify(std::string_view object, const Bytes& value) {
  Bytes out{kNotifyOp};
  append(out, name_string(object));
  append(out, value);
  return out;
}

Bytes local(uint8_t n) {
  if (n > 7) invalid(fmt::format("Local{} (Local0 to Local7)", n));
  return {static_cast<uint8_t>(kLocal0Op + n)};
}

Bytes arg(uint8_t n) {
  if (n > 6) invalid(fmt::format("Arg{} (Arg0 to Arg6)", n));
  return {static_cast<uint8_t>(kArg0Op + n)};
}

Bytes store(const Bytes& source, const Bytes& target) {
  Bytes out{kStoreOp};
  append(out, source);
  append(out, target);
  return out;
}

Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& terms) {
  Bytes body = predicate;
  append_all(body, terms);
  return with_pkg_length({kIfOp}, body);
}

Bytes else_then(const std::vector<Bytes>& terms) {
  Bytes body;
  append_all(body, terms);
  return with_pkg_length({kElseOp}, body);
}

Bytes l_equal(const Bytes& a, const Bytes& b) {
  Bytes out{kLEqualOp};
  append(out, a);
  append(out, b);
  return out;
}

Bytes l_not(const Bytes& a) {
  Bytes out{kLNotOp};
  append(out, a);
  return out;
}

Bytes and_op(const Bytes& a, const Bytes& b, const Bytes& target) {
  return binary(kAndOp, a, b, target);
}

Bytes or_op(const Bytes& a, const Bytes& b, const Bytes& target) {
  return binary(kOrOp, a, b, target);
}

Bytes create_dword_field(const Bytes& source, const Bytes& byte_index, std::string_view name) {
  Bytes out{kCreateDWordFieldOp};
  append(out, source);
  append(out, byte_index);
  append(out, name_string(name));
  return out;
}

Bytes resource_template(const std::vector<Bytes>& descriptors) {
  Bytes contents;
  append_all(contents, descriptors);
  contents.push_back(kEndTag);
  contents.push_back(0x00);  // checksum 0: "treated as if the checksum operation succeeded"
  return buffer(contents);
}

Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
  Bytes out{kIoPortTag, 0x01};  // Decode16
  append_le(out, min, 2);
  append_le(out, max, 2);
  out.push_back(alignment);
  out.push_back(length);
  return out;
}

Bytes memory32_fixed(uint32_t base, uint32_t length, bool read_write) {
  Bytes out{kMemory32FixedTag, 9, 0, static_cast<uint8_t>(read_write ? 1 : 0)};
  append_le(out, base, 4);
  append_le(out, length, 4);
  return out;
}

Bytes extended_interrupt(const std::vector<uint32_t>& interrupts, InterruptFlags flags) {
  if (interrupts.empty() || interrupts.size() > 255) {
    invalid(fmt::format("an interrupt descriptor lists 1 to 255 interrupts, not {}",
                        interrupts.size()));
  }
  Bytes out{kExtendedInterruptTag};
  append_le(out, 2 + 4 * interrupts.size(), 2);
  out.push_back(static_cast<uint8_t>(
      (flags.consumer ? 1u : 0u) | (flags.edge ? 1u << 1 : 0u) | (flags.active_low ? 1u << 2 : 0u) |
      (flags.shared ? 1u << 3 : 0u) | (flags.wake_capable ? 1u << 4 : 0u)));
  out.push_back(static_cast<uint8_t>(interrupts.size()));
  for (uint32_t irq : interrupts) append_le(out, irq, 4);
  return out;
}

uint8_t memory_flags(bool read_write, Cacheability cacheability) {
  return static_cast<uint8_t>((read_write ? 1u : 0u) | static_cast<unsigned>(cacheability) << 1);
}

uint8_t io_flags() {
  return 0x03;
}  // _RNG = 3: ISA and non-ISA ranges

Bytes word_address(const AddressSpace& space) {
  return address(kWordAddressTag, 2, space);
}
Bytes dword_address(const AddressSpace& space) {
  return address(kDWordAddressTag, 4, space);
}
Bytes qword_address(const AddressSpace& space) {
  return address(kQWordAddressTag, 8, space);
}

Bytes word_bus_number(uint16_t min, uint16_t max) {
  return word_address(window(AddressSpaceType::bus_number, 0, min, max));
}

Bytes word_io(uint16_t min, uint16_t max) {
  return word_address(window(AddressSpaceType::io, io_flags(), min, max));
}

Bytes dword_memory(uint32_t min, uint32_t max, Cacheability cacheability) {
  return dword_address(
      window(AddressSpaceType::memory, memory_flags(true, cacheability), min, max));
}

Bytes qword_memory(uint64_t min, uint64_t max, Cacheability cacheability) {
  return qword_address(
      window(AddressSpaceType::memory, memory_flags(true, cacheability), min, max));
}

}  // namespace libvmm::x86::aml
