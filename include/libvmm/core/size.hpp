// Parsing of sizes and numbers as users write them: 256M, 1G, 4096, 0x10_000_000.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace libvmm {

// Accepts decimal or 0x-hex digits with optional '_' separators, then an optional binary
// suffix K, M, G or T (KiB/MiB/GiB/TiB also accepted, any case). nullopt on anything else,
// including overflow.
std::optional<uint64_t> parse_size(std::string_view text);

// A count or an ID: decimal or 0x-hex digits with optional '_' separators and no suffix ("5b"
// is not 5). nullopt on anything else, including overflow.
std::optional<uint64_t> parse_number(std::string_view text);

// "256 MiB", "1.5 GiB", "4096 bytes": for messages.
std::string format_size(uint64_t bytes);

}  // namespace libvmm
