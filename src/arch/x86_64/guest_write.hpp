// Writes of the boot structures into guest RAM. They go to addresses the boot layout fixed and
// the loader checked, so a failure means the machine was set up wrong: throw, never ignore.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string_view>

#include "libvmm/core/guest_memory.hpp"

namespace libvmm::x86 {

inline void write_guest(const GuestMemory& memory, uint64_t gpa, const void* data, uint64_t len,
                        std::string_view what) {
  if (!memory.write(gpa, data, len)) {
    throw std::runtime_error(
        fmt::format("x86 boot: cannot write the {} ({:#x} bytes at {:#x}): "
                    "not writable guest RAM",
                    what, len, gpa));
  }
}

inline void write_guest(const GuestMemory& memory, uint64_t gpa, std::span<const uint8_t> bytes,
                        std::string_view what) {
  write_guest(memory, gpa, bytes.data(), bytes.size(), what);
}

}  // namespace libvmm::x86
