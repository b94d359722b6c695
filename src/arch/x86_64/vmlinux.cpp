#include "libvmm/arch/x86_64/vmlinux.hpp"

#include <elf.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "libvmm/core/error.hpp"

namespace libvmm::x86 {
namespace {

// [offset, offset + size) inside a file of `file_size` bytes, without overflowing.
bool inside(uint64_t offset, uint64_t size, uint64_t file_size) {
  return offset <= file_size && size <= file_size - offset;
}

void check_header(const Elf64_Ehdr& eh, size_t file_size, const std::string& path) {
  if (eh.e_ident[EI_CLASS] != ELFCLASS64)
    reject_input(path, "is a 32-bit ELF file: need a 64-bit vmlinux");
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB)
    reject_input(path, "is a big-endian ELF file, not an x86_64 vmlinux");
  if (eh.e_machine != EM_X86_64) {
    reject_input(path, fmt::format("is an ELF file for machine {}, not x86_64", eh.e_machine));
  }
  if (eh.e_type != ET_EXEC) {
    reject_input(path,
                 "is not an ELF executable (a module or object file?): pass the kernel's vmlinux");
  }
  if (eh.e_phnum == 0) reject_input(path, "has no program headers: nothing to load");
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) {
    reject_input(path, fmt::format("has program headers of {} bytes, not {}", eh.e_phentsize,
                                   sizeof(Elf64_Phdr)));
  }
  if (eh.e_phnum > Vmlinux::kMaxProgramHeaders) {
    reject_input(path, fmt::format("has {} program headers, more than the {} a kernel has room for",
                                   eh.e_phnum, Vmlinux::kMaxProgramHeaders));
  }
  if (!inside(eh.e_phoff, uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr), file_size)) {
    reject_input(path, "is truncated: its program headers lie past the end of the file");
  }
}

}  // namespace

bool Vmlinux::looks_like_elf(std::span<const uint8_t> image) {
  return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

Vmlinux Vmlinux::parse(std::span<const uint8_t> image, std::string path) {
  if (!looks_like_elf(image)) reject_input(path, "is not an ELF file");
  if (image.size() < sizeof(Elf64_Ehdr)) {
    reject_input(path,
                 fmt::format("is too small to be a vmlinux ({} bytes; truncated?)", image.size()));
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof(eh));
  check_header(eh, image.size(), path);

  Vmlinux kernel;
  for (size_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, image.data() + eh.e_phoff + i * sizeof(Elf64_Phdr), sizeof(ph));
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    if (ph.p_filesz > ph.p_memsz) {
      reject_input(path,
                   fmt::format("segment {} has more bytes in the file ({}) than in memory ({})", i,
                               ph.p_filesz, ph.p_memsz));
    }
    if (!inside(ph.p_offset, ph.p_filesz, image.size())) {
      reject_input(path, fmt::format("is truncated: segment {} lies past the end of the file", i));
    }
    if (ph.p_paddr > UINT64_MAX - ph.p_memsz) {
      reject_input(path, fmt::format("segment {} wraps around the physical address space", i));
    }
    kernel.segments_.push_back({ph.p_paddr, ph.p_memsz, image.subspan(ph.p_offset, ph.p_filesz)});
  }
  if (kernel.segments_.empty()) reject_input(path, "has no loadable segment");

  std::sort(kernel.segments_.begin(), kernel.segments_.end(),
            [](const Segment& a, const Segment& b) { return a.paddr < b.paddr; });
  for (size_t i = 1; i < kernel.segments_.size(); ++i) {
    const Segment& before = kernel.segments_[i - 1];
    if (before.paddr + before.mem_size > kernel.segments_[i].paddr) {
      reject_input(path, fmt::format("has segments that overlap at physical address {:#x}",
                                     kernel.segments_[i].paddr));
    }
  }
  kernel.start_ = kernel.segments_.front().paddr;
  kernel.end_ = kernel.segments_.back().paddr + kernel.segments_.back().mem_size;

  // Linux links vmlinux with its physical entry (phys_startup_64) as the ELF entry.
  const bool entry_loaded =
      std::any_of(kernel.segments_.begin(), kernel.segments_.end(), [&](const Segment& s) {
        return eh.e_entry >= s.paddr && eh.e_entry - s.paddr < s.bytes.size();
      });
  if (!entry_loaded) {
    reject_input(path,
                 fmt::format("entry point {:#x} is not inside a loaded segment's bytes (not a "
                             "Linux vmlinux, whose entry is the physical address of startup_64?)",
                             eh.e_entry));
  }
  kernel.entry_ = eh.e_entry;
  kernel.path_ = std::move(path);
  return kernel;
}

}  // namespace libvmm::x86
