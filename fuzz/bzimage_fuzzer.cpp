// The x86_64 bzImage loader on hostile files: BzImage::parse() and then load_linux() into
// guest RAM, with an initrd and a command line. A file it refuses gets a UserError naming it;
// one it accepts is a 64-bit bzImage of protocol 2.12 or later whose header and kernel lie
// inside the file, and loads either with a UserError naming what does not fit or with the
// kernel, command line, initrd and zero page inside RAM, apart from each other, and the zero
// page saying where they are.
//
// Input: RAM size selector, initrd size (in 4 KiB pages), command line length, file size
// (in bytes beyond the header), then the file's first bytes (the rest of the file is zeroes).
#include <asm/bootparam.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/bzimage.hpp"
#include "libvmm/arch/x86_64/linux_loader.hpp"
#include "libvmm/core/error.hpp"
#include "x86_boot_guest.hpp"

using namespace libvmm;
using namespace libvmm::x86;
using fuzz::check;
using fuzz::disjoint;
using fuzz::in_ram;
using Guest = fuzz::X86BootGuest;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Guest small(2 * MiB), large(16 * MiB);
  fuzz::Input in(data, size);
  const uint8_t selector = in.u8();
  Guest& guest = selector & 1 ? large : small;
  const uint64_t ram_size = guest.ram.front().size;
  const std::vector<uint8_t> initrd(size_t{in.u8()} % 16 * 4096 + (selector & 2u), 0x11);
  const std::string cmdline(in.u16() % 4096, 'c');
  const size_t file_size = 0x300 + in.u32() % (256 * KiB);
  std::vector<uint8_t> file(file_size, 0);
  const auto head = in.rest();
  std::copy_n(head.begin(), std::min(head.size(), file.size()), file.begin());

  try {
    const BzImage bz = BzImage::parse(file, "fuzz.bzImage");
    check(bz.protocol_version() >= kMinBootProtocol);
    check((bz.xloadflags() & XLF_KERNEL_64) != 0 && (bz.loadflags() & LOADED_HIGH) != 0);
    const auto header = bz.setup_header_bytes();
    check(header.data() == file.data() + kSetupHeaderOffset);
    check(header.size() <= sizeof(setup_header));
    const auto kernel = bz.protected_mode_kernel();
    check(!kernel.empty() && kernel.data() + kernel.size() == file.data() + file.size());
    check(kernel.data() == file.data() + (size_t{bz.setup_sects()} + 1) * 512);

    const LinuxBootInfo info =
        load_linux(guest.memory, bz, initrd, "fuzz.initrd", cmdline, guest.ram);
    for (const GuestRange& r : {info.kernel, info.kernel_run, info.cmdline, info.initrd}) {
      check(in_ram(r, ram_size));
    }
    const GuestRange zero_page{info.zero_page, sizeof(boot_params)};
    check(disjoint(info.initrd, info.kernel) && disjoint(info.initrd, info.kernel_run));
    check(disjoint(info.initrd, info.cmdline) && disjoint(info.initrd, zero_page));
    check(disjoint(info.cmdline, zero_page) && disjoint(info.kernel, zero_page));
    check(info.cmdline.size == cmdline.size() + 1 && info.initrd.size == initrd.size());
    check(info.entry == info.kernel.gpa + kKernel64EntryOffset);
    const auto params = guest.memory.read_obj<boot_params>(info.zero_page);
    check(params.has_value());
    check(params->hdr.cmd_line_ptr == info.cmdline.gpa);
    check(params->hdr.ramdisk_image == info.initrd.gpa);
    check(params->hdr.ramdisk_size == initrd.size());
    check(params->e820_entries == info.e820.size());
  } catch (const UserError& e) {
    const std::string what = e.what();
    check(what.starts_with("fuzz.bzImage: ") || what.starts_with("fuzz.initrd: ") ||
          what.starts_with("--cmdline: "));
  }
  return 0;
}
