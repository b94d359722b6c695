#include "libvmm/core/size.hpp"

#include <fmt/format.h>

#include <cctype>

namespace libvmm {

namespace {

// The number at the start of `text` (decimal, or hex after 0x, whose digits b and B are no
// "bytes" suffix; one '_' between two digits); `end` is where it stops.
std::optional<uint64_t> leading_number(std::string_view text, size_t& end) {
  std::string digits;
  size_t i = 0;
  unsigned base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    base = 16;
    i = 2;
  }
  const auto is_digit = [base](char c) {
    return base == 16 ? std::isxdigit(static_cast<unsigned char>(c)) != 0
                      : std::isdigit(static_cast<unsigned char>(c)) != 0;
  };
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (is_digit(c)) {
      digits += c;
      continue;
    }
    // "1_000": a separator; "1_", "1__0" and "_1" are no numbers.
    if (c == '_' && !digits.empty() && i + 1 < text.size() && is_digit(text[i + 1])) continue;
    if (c == '_') return std::nullopt;
    break;
  }
  if (digits.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : digits) {
    const unsigned d =
        std::isdigit(static_cast<unsigned char>(c))
            ? static_cast<unsigned>(c - '0')
            : static_cast<unsigned>(std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
    if (value > (UINT64_MAX - d) / base) return std::nullopt;
    value = value * base + d;
  }
  end = i;
  return value;
}

}  // namespace

std::optional<uint64_t> parse_number(std::string_view text) {
  size_t end = 0;
  const auto value = leading_number(text, end);
  if (!value || end != text.size()) return std::nullopt;
  return value;
}

std::optional<uint64_t> parse_size(std::string_view text) {
  size_t i = 0;
  const auto number = leading_number(text, i);
  if (!number) return std::nullopt;
  const uint64_t value = *number;
  std::string suffix;
  for (; i < text.size(); ++i)
    suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  unsigned shift = 0;
  if (suffix.empty() || suffix == "b") {
    shift = 0;
  } else if (suffix == "k" || suffix == "kib" || suffix == "kb") {
    shift = 10;
  } else if (suffix == "m" || suffix == "mib" || suffix == "mb") {
    shift = 20;
  } else if (suffix == "g" || suffix == "gib" || suffix == "gb") {
    shift = 30;
  } else if (suffix == "t" || suffix == "tib" || suffix == "tb") {
    shift = 40;
  } else {
    return std::nullopt;
  }
  if (shift != 0 && value > (UINT64_MAX >> shift)) return std::nullopt;
  return value << shift;
}

std::string format_size(uint64_t bytes) {
  constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  double value = static_cast<double>(bytes);
  int unit = -1;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  if (value == static_cast<double>(static_cast<uint64_t>(value))) {
    return fmt::format("{} {}", static_cast<uint64_t>(value), units[unit]);
  }
  return fmt::format("{:.1f} {}", value, units[unit]);
}

}  // namespace libvmm
