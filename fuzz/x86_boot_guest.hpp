// What the x86_64 kernel-loader fuzzers (bzimage, vmlinux) load into: a guest of one RAM size
// with its e820 layout, and the checks on where the loader put things.
#pragma once

#include <cstdint>
#include <vector>

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/core/guest_memory.hpp"

namespace libvmm::fuzz {

struct X86BootGuest {
  explicit X86BootGuest(uint64_t size) : ram(x86::x86_ram_layout(size)) {
    memory.map(0, MemoryRegion::create("ram", size), 0, size);
  }
  std::vector<x86::RamRange> ram;
  GuestMemory memory;
};

inline bool disjoint(const x86::GuestRange& a, const x86::GuestRange& b) {
  return a.size == 0 || b.size == 0 || a.end() <= b.gpa || b.end() <= a.gpa;
}

inline bool in_ram(const x86::GuestRange& r, uint64_t ram_size) {
  return r.gpa <= ram_size && r.size <= ram_size - r.gpa;
}

}  // namespace libvmm::fuzz
