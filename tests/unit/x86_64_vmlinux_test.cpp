// vmlinux (ELF) validation and loading, on synthetic kernels built here with the shape of
// Linux's x86_64 vmlinux: text at 16 MiB, a per-CPU segment linked at 0, .bss past the file.
#include <elf.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/linux_loader.hpp"
#include "libvmm/arch/x86_64/vmlinux.hpp"
#include "libvmm/core/error.hpp"
#include "unit/support/packed.hpp"

using namespace libvmm;
using namespace libvmm::x86;
using libvmm::test::packed;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace x86_64_vmlinux_test {

struct FakeSegment {
  uint32_t type = PT_LOAD;
  uint64_t paddr = 0;
  uint64_t file_size = 0;
  uint64_t mem_size = 0;
  uint8_t fill = 0;
  uint64_t offset = 0;  // 0: placed by build()
};

// The fields of a vmlinux a test may want to break.
struct FakeVmlinux {
  uint8_t elf_class = ELFCLASS64;
  uint8_t data = ELFDATA2LSB;
  uint16_t type = ET_EXEC;
  uint16_t machine = EM_X86_64;
  uint16_t phentsize = sizeof(Elf64_Phdr);
  uint64_t entry = 16 * MiB;
  std::vector<FakeSegment> segments{
      {PT_LOAD, 16 * MiB, 0x3000, 0x3000, 0xA1},           // text
      {PT_NOTE, 16 * MiB + 0x100, 0x20, 0x20, 0xB2},       // ignored
      {PT_LOAD, 16 * MiB + 0x3000, 0x1000, 0x4000, 0xC3},  // data, then .bss
  };
  size_t truncate_to = 0;  // 0: keep the whole file

  std::vector<uint8_t> build() const {
    const size_t headers = sizeof(Elf64_Ehdr) + segments.size() * sizeof(Elf64_Phdr);
    size_t size = (headers + 0xfff) & ~size_t{0xfff};
    std::vector<uint64_t> offsets;
    for (const auto& s : segments) {
      offsets.push_back(s.offset ? s.offset : size);
      if (!s.offset) size += s.file_size;
    }
    std::vector<uint8_t> file(size, 0);
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = elf_class;
    eh.e_ident[EI_DATA] = data;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = type;
    eh.e_machine = machine;
    eh.e_version = EV_CURRENT;
    eh.e_entry = entry;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = phentsize;
    eh.e_phnum = static_cast<uint16_t>(segments.size());
    std::memcpy(file.data(), &eh, sizeof(eh));
    for (size_t i = 0; i < segments.size(); ++i) {
      const FakeSegment& s = segments[i];
      Elf64_Phdr ph{};
      ph.p_type = s.type;
      ph.p_offset = offsets[i];
      ph.p_vaddr = 0xffffffff80000000 + s.paddr;
      ph.p_paddr = s.paddr;
      ph.p_filesz = s.file_size;
      ph.p_memsz = s.mem_size;
      std::memcpy(file.data() + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), &ph, sizeof(ph));
      if (!s.offset) std::memset(file.data() + offsets[i], s.fill, s.file_size);
    }
    if (truncate_to) file.resize(truncate_to);
    return file;
  }
};

std::string parse_error(const std::vector<uint8_t>& file) {
  try {
    Vmlinux::parse(file, "vmlinux");
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}
std::string parse_error(const FakeVmlinux& k) {
  return parse_error(k.build());
}

struct VmlinuxLoad : ::testing::Test {
  std::vector<uint8_t> file;
  std::vector<RamRange> ram;
  GuestMemory memory;

  LinuxBootInfo load(const FakeVmlinux& k, uint64_t memory_size, std::span<const uint8_t> initrd,
                     std::string_view cmdline = "console=ttyS0") {
    file = k.build();
    ram = x86_ram_layout(memory_size);
    memory = GuestMemory{};
    memory.map(0, MemoryRegion::create("ram", memory_size), 0, memory_size);
    return load_linux(memory, Vmlinux::parse(file, "vmlinux"), initrd, "initrd.img", cmdline, ram);
  }
  std::string load_error(const FakeVmlinux& k, uint64_t memory_size,
                         std::span<const uint8_t> initrd = {}, std::string_view cmdline = "") {
    try {
      load(k, memory_size, initrd, cmdline);
    } catch (const UserError& e) {
      return e.what();
    }
    return "(no error)";
  }
  uint8_t byte_at(uint64_t gpa) const { return memory.read_obj<uint8_t>(gpa).value(); }
};

TEST(Vmlinux, ParsesTheLoadSegmentsInAddressOrder) {
  FakeVmlinux k;
  std::swap(k.segments[0], k.segments[2]);
  const auto file = k.build();
  const Vmlinux v = Vmlinux::parse(file, "vmlinux");
  EXPECT_EQ(v.entry(), 16 * MiB);
  ASSERT_EQ(v.segments().size(), 2u);  // the PT_NOTE is not loaded
  EXPECT_EQ(v.segments()[0].paddr, 16 * MiB);
  EXPECT_EQ(v.segments()[0].bytes.size(), 0x3000u);
  EXPECT_EQ(v.segments()[1].paddr, 16 * MiB + 0x3000);
  EXPECT_EQ(v.segments()[1].mem_size, 0x4000u);
  EXPECT_EQ(v.start(), 16 * MiB);
  EXPECT_EQ(v.end(), 16 * MiB + 0x7000);
}

TEST(Vmlinux, RecognisesElfByItsMagic) {
  EXPECT_TRUE(Vmlinux::looks_like_elf(FakeVmlinux{}.build()));
  const std::vector<uint8_t> bz(4096, 0);
  EXPECT_FALSE(Vmlinux::looks_like_elf(bz));
  EXPECT_FALSE(Vmlinux::looks_like_elf({}));
}

TEST(Vmlinux, RejectsOtherElfFiles) {
  FakeVmlinux k;
  k.elf_class = ELFCLASS32;
  EXPECT_EQ(parse_error(k), "vmlinux: is a 32-bit ELF file: need a 64-bit vmlinux");
  k = {};
  k.data = ELFDATA2MSB;
  EXPECT_THAT(parse_error(k), HasSubstr("big-endian"));
  k = {};
  k.machine = EM_AARCH64;
  EXPECT_EQ(parse_error(k), "vmlinux: is an ELF file for machine 183, not x86_64");
  k = {};
  k.type = ET_REL;
  EXPECT_THAT(parse_error(k), HasSubstr("not an ELF executable"));
}

TEST(Vmlinux, RejectsBadProgramHeaders) {
  FakeVmlinux k;
  k.phentsize = 48;
  EXPECT_THAT(parse_error(k), HasSubstr("program headers of 48 bytes, not 56"));
  k = {};
  k.segments.clear();
  EXPECT_EQ(parse_error(k), "vmlinux: has no program headers: nothing to load");
  k = {};
  k.segments.assign(Vmlinux::kMaxProgramHeaders + 1, FakeSegment{PT_NOTE, 0, 0, 0});
  EXPECT_THAT(parse_error(k), HasSubstr("has 65 program headers"));
  k = {};
  k.segments = {{PT_NOTE, 16 * MiB, 0x10, 0x10}};
  EXPECT_EQ(parse_error(k), "vmlinux: has no loadable segment");
}

TEST(Vmlinux, RejectsTruncatedFiles) {
  EXPECT_THAT(parse_error(std::vector<uint8_t>{0x7f, 'E', 'L', 'F', 2}),
              HasSubstr("too small to be a vmlinux (5 bytes"));
  FakeVmlinux k;
  k.truncate_to = sizeof(Elf64_Ehdr) + 10;
  EXPECT_THAT(parse_error(k), HasSubstr("program headers lie past the end of the file"));
  k = {};
  k.truncate_to = k.build().size() - 1;
  EXPECT_EQ(parse_error(k), "vmlinux: is truncated: segment 2 lies past the end of the file");
  k = {};
  k.segments[0].offset = UINT64_MAX - 0x10;  // offset + size wraps
  EXPECT_THAT(parse_error(k), HasSubstr("segment 0 lies past the end of the file"));
}

TEST(Vmlinux, RejectsInconsistentSegments) {
  FakeVmlinux k;
  k.segments[2].mem_size = 0x800;  // less than its 0x1000 bytes in the file
  EXPECT_THAT(parse_error(k), HasSubstr("segment 2 has more bytes in the file (4096) than in"));
  k = {};
  k.segments[2].paddr = UINT64_MAX - 0x1000;
  EXPECT_THAT(parse_error(k), HasSubstr("segment 2 wraps around"));
  k = {};
  k.segments[2].paddr = 16 * MiB + 0x2000;  // inside the text
  EXPECT_EQ(parse_error(k), "vmlinux: has segments that overlap at physical address 0x1002000");
}

TEST(Vmlinux, RejectsAnEntryOutsideTheLoadedBytes) {
  FakeVmlinux k;
  k.entry = 0xffffffff81000000;  // a virtual address
  EXPECT_THAT(parse_error(k), HasSubstr("entry point 0xffffffff81000000 is not inside"));
  k.entry = 16 * MiB + 0x5000;  // in .bss: nothing to run there
  EXPECT_THAT(parse_error(k), HasSubstr("entry point 0x1005000"));
}

TEST_F(VmlinuxLoad, CopiesSegmentsClearsBssAndWritesTheZeroPage) {
  const std::vector<uint8_t> initrd(0x2000, 0x5A);
  FakeVmlinux k;
  const LinuxBootInfo info = load(k, 64 * MiB, initrd, "console=ttyS0 quiet");
  EXPECT_EQ(info.entry, 16 * MiB);
  EXPECT_EQ(info.zero_page, kZeroPageAddr);
  EXPECT_EQ(info.kernel, (GuestRange{16 * MiB, 0x7000}));
  EXPECT_EQ(info.kernel_run, info.kernel);
  EXPECT_EQ(info.initrd, (GuestRange{64 * MiB - 0x2000, 0x2000}));
  EXPECT_EQ(byte_at(16 * MiB), 0xA1);
  EXPECT_EQ(byte_at(16 * MiB + 0x2fff), 0xA1);
  EXPECT_EQ(byte_at(16 * MiB + 0x3000), 0xC3);
  EXPECT_EQ(byte_at(64 * MiB - 1), 0x5A);

  const boot_params bp = memory.read_obj<boot_params>(kZeroPageAddr).value();
  EXPECT_EQ(packed(bp.hdr.boot_flag), 0xAA55);
  EXPECT_EQ(packed(bp.hdr.header), 0x53726448u);
  EXPECT_EQ(packed(bp.hdr.version), 0x020c);
  EXPECT_EQ(packed(bp.hdr.type_of_loader), 0xff);
  EXPECT_EQ(packed(bp.hdr.loadflags), LOADED_HIGH);
  EXPECT_EQ(packed(bp.hdr.cmd_line_ptr), kCmdlineAddr);
  EXPECT_EQ(packed(bp.hdr.cmdline_size), 2047u);
  EXPECT_EQ(packed(bp.hdr.ramdisk_image), 64 * MiB - 0x2000);
  EXPECT_EQ(packed(bp.hdr.ramdisk_size), 0x2000u);
  EXPECT_EQ(packed(bp.e820_entries), 3);
  std::string cmdline(20, '?');
  ASSERT_TRUE(memory.read(kCmdlineAddr, cmdline.data(), cmdline.size()));
  EXPECT_EQ(cmdline, std::string("console=ttyS0 quiet\0", 20));
}

TEST_F(VmlinuxLoad, ClearsBssThatHeldEarlierBytes) {
  FakeVmlinux k;
  file = k.build();
  ram = x86_ram_layout(64 * MiB);
  memory.map(0, MemoryRegion::create("ram", 64 * MiB), 0, 64 * MiB);
  ASSERT_TRUE(memory.fill(16 * MiB + 0x4000, 0xEE, 0x4000));
  load_linux(memory, Vmlinux::parse(file, "vmlinux"), {}, "initrd.img", "", ram);
  EXPECT_EQ(byte_at(16 * MiB + 0x3fff), 0xC3);
  EXPECT_EQ(byte_at(16 * MiB + 0x4000), 0);
  EXPECT_EQ(byte_at(16 * MiB + 0x6fff), 0);
  EXPECT_EQ(byte_at(16 * MiB + 0x7000), 0xEE);  // past .bss: untouched
}

TEST_F(VmlinuxLoad, KeepsTheInitrdBelow2GiB) {
  const std::vector<uint8_t> initrd(0x1000, 1);
  const LinuxBootInfo info = load(FakeVmlinux{}, 3 * GiB, initrd);
  EXPECT_EQ(info.initrd.end(), 2 * GiB);  // its last byte at 0x7fffffff
}

TEST_F(VmlinuxLoad, RejectsWhatDoesNotFit) {
  FakeVmlinux k;
  EXPECT_EQ(load_error(k, 16 * MiB),
            "vmlinux: kernel needs RAM up to 17 MiB (0x1007000), but the guest's low RAM ends at "
            "16 MiB; give the guest more memory (--memory)");
  const std::vector<uint8_t> initrd(8 * MiB, 1);
  EXPECT_THAT(load_error(k, 20 * MiB, initrd),
              StartsWith("initrd.img: initrd of 8388608 bytes (8 MiB) does not fit"));
  k.segments[0].paddr = 0x80000;
  k.entry = 0x80000;
  k.segments[1].paddr = 0x80000;
  EXPECT_EQ(load_error(k, 64 * MiB),
            "vmlinux: kernel wants to load at 0x80000, below 1 MiB where the boot structures live");
}

TEST_F(VmlinuxLoad, TakesCommandLinesUpToCommandLineSize) {
  EXPECT_EQ(load_error(FakeVmlinux{}, 64 * MiB, {}, std::string(2047, 'x')), "(no error)");
  EXPECT_EQ(load_error(FakeVmlinux{}, 64 * MiB, {}, std::string(2048, 'x')),
            "--cmdline: 2048 bytes is longer than the 2047 bytes x86_64 Linux accepts "
            "(COMMAND_LINE_SIZE)");
}

}  // namespace x86_64_vmlinux_test
