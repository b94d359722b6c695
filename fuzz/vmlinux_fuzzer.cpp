// The x86_64 vmlinux (ELF) loader on hostile files: Vmlinux::parse() and then load_linux()
// into guest RAM, with an initrd and a command line. A file it refuses gets a UserError naming
// it; one it accepts has non-overlapping PT_LOAD segments inside the file, in address order,
// and an entry inside one's bytes, and loads either with a UserError naming what does not fit
// or with every segment's bytes in RAM at its address, .bss cleared, and the command line,
// initrd and zero page in RAM, apart from the kernel and each other.
//
// Input: RAM size selector, initrd size (in 4 KiB pages), command line length, file size
// (in bytes beyond the ELF header), then the file's first bytes (the rest of the file is
// zeroes). Seeds: fuzz/corpus/vmlinux.
#include <asm/bootparam.h>
#include <elf.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/linux_loader.hpp"
#include "libvmm/arch/x86_64/vmlinux.hpp"
#include "libvmm/core/error.hpp"
#include "x86_boot_guest.hpp"

using namespace libvmm;
using namespace libvmm::x86;
using fuzz::check;
using fuzz::disjoint;
using fuzz::in_ram;
using Guest = fuzz::X86BootGuest;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Guest small(4 * MiB), large(32 * MiB);
  fuzz::Input in(data, size);
  const uint8_t selector = in.u8();
  Guest& guest = selector & 1 ? large : small;
  const uint64_t ram_size = guest.ram.front().size;
  const std::vector<uint8_t> initrd(size_t{in.u8()} % 16 * 4096 + (selector & 2u), 0x11);
  const std::string cmdline(in.u16() % 4096, 'c');
  const size_t file_size = sizeof(Elf64_Ehdr) + in.u32() % (256 * KiB);
  std::vector<uint8_t> file(file_size, 0);
  const auto head = in.rest();
  std::copy_n(head.begin(), std::min(head.size(), file.size()), file.begin());

  try {
    const Vmlinux kernel = Vmlinux::parse(file, "fuzz.vmlinux");
    const auto& segments = kernel.segments();
    check(!segments.empty() && segments.size() <= Vmlinux::kMaxProgramHeaders);
    bool entry_inside = false;
    for (size_t i = 0; i < segments.size(); ++i) {
      const auto& s = segments[i];
      check(s.bytes.data() >= file.data() &&
            s.bytes.data() + s.bytes.size() <= file.data() + file.size());
      check(s.bytes.size() <= s.mem_size && s.paddr + s.mem_size >= s.paddr);
      if (i > 0) check(segments[i - 1].paddr + segments[i - 1].mem_size <= s.paddr);
      entry_inside |= kernel.entry() >= s.paddr && kernel.entry() - s.paddr < s.bytes.size();
    }
    check(entry_inside);
    check(kernel.start() == segments.front().paddr && kernel.end() >= kernel.start());

    // Stale bytes where the kernel goes: the loader must clear .bss over them.
    if (kernel.end() <= ram_size) {
      check(guest.memory.fill(kernel.start(), 0xEE, kernel.end() - kernel.start()));
    }
    const LinuxBootInfo info =
        load_linux(guest.memory, kernel, initrd, "fuzz.initrd", cmdline, guest.ram);
    for (const GuestRange& r : {info.kernel, info.cmdline, info.initrd}) check(in_ram(r, ram_size));
    const GuestRange zero_page{info.zero_page, sizeof(boot_params)};
    check(info.kernel.gpa >= kKernelLoadAddr && info.entry == kernel.entry());
    check(disjoint(info.initrd, info.kernel) && disjoint(info.initrd, info.cmdline));
    check(disjoint(info.initrd, zero_page) && disjoint(info.cmdline, zero_page));
    check(disjoint(info.kernel, zero_page) && disjoint(info.kernel, info.cmdline));
    check(info.cmdline.size == cmdline.size() + 1 && info.initrd.size == initrd.size());
    for (const auto& s : segments) {
      std::vector<uint8_t> loaded(s.mem_size);
      check(guest.memory.read(s.paddr, loaded.data(), loaded.size()));
      check(std::equal(s.bytes.begin(), s.bytes.end(), loaded.begin()));
      check(std::all_of(loaded.begin() + static_cast<ptrdiff_t>(s.bytes.size()), loaded.end(),
                        [](uint8_t b) { return b == 0; }));
    }
    const auto params = guest.memory.read_obj<boot_params>(info.zero_page);
    check(params.has_value());
    check(params->hdr.cmd_line_ptr == info.cmdline.gpa);
    check(params->hdr.ramdisk_image == info.initrd.gpa);
    check(params->hdr.ramdisk_size == initrd.size());
    check(params->e820_entries == info.e820.size());
  } catch (const UserError& e) {
    const std::string what = e.what();
    check(what.starts_with("fuzz.vmlinux: ") || what.starts_with("fuzz.initrd: ") ||
          what.starts_with("--cmdline: "));
  }
  return 0;
}
