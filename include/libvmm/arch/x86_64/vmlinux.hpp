// An uncompressed x86_64 Linux kernel (the ELF `vmlinux` of a kernel build) held in memory,
// validated for booting through its 64-bit entry point, startup_64: each PT_LOAD segment is
// copied to its physical address and the vCPU starts at the ELF entry (a physical address in
// Linux's vmlinux) in long mode with RSI pointing at the zero page, as for a bzImage's 64-bit
// entry. No decompressor runs in the guest, which is what makes this the faster way to boot.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace libvmm::x86 {

class Vmlinux {
 public:
  // One PT_LOAD segment: `bytes` go to `paddr`, the rest of `mem_size` is zeroed (.bss).
  struct Segment {
    uint64_t paddr = 0;
    uint64_t mem_size = 0;
    std::span<const uint8_t> bytes;
  };

  // Most program headers accepted: Linux's vmlinux has 4 or 5.
  static constexpr size_t kMaxProgramHeaders = 64;

  // True if `image` starts with the ELF magic: what a loader checks to pick this or BzImage.
  static bool looks_like_elf(std::span<const uint8_t> image);

  // Validates `image` (the whole file): a little-endian ELF64 x86-64 executable whose PT_LOAD
  // segments lie inside the file, do not overlap, and hold the entry point. `path` names it in
  // error messages (UserError). The Vmlinux refers to `image`'s bytes, which must outlive it.
  static Vmlinux parse(std::span<const uint8_t> image, std::string path);

  const std::string& path() const { return path_; }
  uint64_t entry() const { return entry_; }  // physical address of startup_64
  const std::vector<Segment>& segments() const { return segments_; }
  // The lowest physical address of a segment, and the end of the highest.
  uint64_t start() const { return start_; }
  uint64_t end() const { return end_; }

 private:
  Vmlinux() = default;
  std::string path_;
  uint64_t entry_ = 0;
  uint64_t start_ = 0;
  uint64_t end_ = 0;
  std::vector<Segment> segments_;
};

}  // namespace libvmm::x86
