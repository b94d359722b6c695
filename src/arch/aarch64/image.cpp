#include "libvmm/arch/aarch64/image.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <stdexcept>

#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"

namespace libvmm::aarch64 {
namespace {

// booting.rst's header, all fields little endian.
constexpr size_t kTextOffsetAt = 0x08;
constexpr size_t kImageSizeAt = 0x10;
constexpr size_t kFlagsAt = 0x18;
constexpr size_t kMagicAt = 0x38;

constexpr uint64_t kFlagBigEndian = 1u << 0;
constexpr uint64_t kFlagPageSizeShift = 1;
constexpr uint64_t kFlagPageSizeMask = 3u << kFlagPageSizeShift;
constexpr uint64_t kFlagPlaceAnywhere = 1u << 3;
// image_size above this is taken for a corrupt header.
constexpr uint64_t kMaxImageSize = uint64_t{4} << 30;

uint64_t align_up(uint64_t value, uint64_t align) {
  return (value + align - 1) & ~(align - 1);
}
uint64_t align_down(uint64_t value, uint64_t align) {
  return value & ~(align - 1);
}

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return a + b < a ? UINT64_MAX : a + b;
}

uint64_t le64(std::span<const uint8_t> bytes, size_t at) {
  uint64_t value = 0;
  for (size_t i = 0; i < 8; ++i) value |= uint64_t{bytes[at + i]} << (8 * i);
  return value;
}
uint32_t le32(std::span<const uint8_t> bytes, size_t at) {
  return static_cast<uint32_t>(le64(bytes, at) & 0xffffffffu);
}

bool has_bytes(std::span<const uint8_t> data, size_t at, std::initializer_list<uint8_t> magic) {
  return data.size() >= at + magic.size() &&
         std::equal(magic.begin(), magic.end(), data.begin() + at);
}

// Names the usual wrong files instead of just "bad magic".
void reject_known_formats(std::span<const uint8_t> file, const std::string& path) {
  if (file.empty()) reject_input(path, "is empty, not an arm64 Image");
  if (has_bytes(file, 0, {0x1f, 0x8b})) {
    reject_input(path, "is gzip-compressed, not an arm64 Image: gunzip it (Image.gz -> Image)");
  }
  if (has_bytes(file, 0, {'M', 'Z'}) && has_bytes(file, 4, {'z', 'i', 'm', 'g'})) {
    reject_input(path,
                 "is an EFI zboot image (compressed vmlinuz.efi), not an arm64 Image: "
                 "pass arch/arm64/boot/Image");
  }
  if (has_bytes(file, 0, {0x7f, 'E', 'L', 'F'})) {
    reject_input(path,
                 "is an ELF file (a vmlinux?), not an arm64 Image: pass arch/arm64/boot/Image");
  }
  if (has_bytes(file, 0x202, {'H', 'd', 'r', 'S'})) {
    reject_input(path, "is an x86 bzImage, not an arm64 Image");
  }
  if (file.size() < kImageHeaderSize) {
    reject_input(
        path, fmt::format("is too small to be an arm64 Image ({} bytes; truncated?)", file.size()));
  }
}

}  // namespace

ArmImage parse_arm64_image(std::span<const uint8_t> file, const std::string& path) {
  reject_known_formats(file, path);
  if (le32(file, kMagicAt) != kImageMagic) {
    reject_input(path, "not an arm64 Image (no \"ARM\\x64\" magic at offset 0x38)");
  }
  ArmImage image;
  image.path = path;
  image.bytes = file;
  const uint64_t header_size = le64(file, kImageSizeAt);
  if (header_size == 0) {
    // Before 3.17 image_size was 0, flags were reserved and text_offset was 0x80000 in the
    // kernel's (unknown) endianness. The bss size is unknown: keep the rest of the 2 MiB
    // block free; the initrd and dtb go to the top of RAM, far from it.
    image.legacy = true;
    image.text_offset = kLegacyTextOffset;
    image.image_size = align_up(file.size(), kImageBaseAlign);
    return image;
  }
  // A kernel with its bss is tens of MiB: a size in the GiBs is a corrupt header, not a
  // guest that wants more RAM (which is what plan_arm64_boot() would say).
  if (header_size > kMaxImageSize) {
    reject_input(path, fmt::format("image_size {:#x} is over {} (corrupt header?)", header_size,
                                   format_size(kMaxImageSize)));
  }
  const uint64_t flags = le64(file, kFlagsAt);
  if ((flags & kFlagBigEndian) != 0) {
    reject_input(path, "is a big-endian kernel; only little-endian arm64 guests are supported");
  }
  image.text_offset = le64(file, kTextOffsetAt);
  if (image.text_offset >= kImageBaseAlign || image.text_offset % 8 != 0) {
    // Every kernel has had text_offset 0x80000, 0 (5.8+) or a random 4 KiB multiple < 2 MiB.
    reject_input(path, fmt::format("text_offset {:#x} is not an 8-byte aligned offset below 2 MiB "
                                   "(corrupt header?)",
                                   image.text_offset));
  }
  // image_size covers the bss too; a file longer than it (e.g. an appended signature) is
  // still copied whole.
  image.image_size = std::max<uint64_t>(header_size, file.size());
  image.page_size = static_cast<ArmPageSize>((flags & kFlagPageSizeMask) >> kFlagPageSizeShift);
  image.place_anywhere = (flags & kFlagPlaceAnywhere) != 0;
  return image;
}

namespace {

// Each page size and its ID_AA64MMFR0_EL1 field (Arm ARM D19.2): TGran4 [31:28] and TGran64
// [27:24] read 0xf when the granule is absent, TGran16 [23:20] reads 0.
struct Granule {
  ArmPageSize size;
  const char* name;
  unsigned shift;
  uint64_t absent;
  bool in(uint64_t mmfr0) const { return ((mmfr0 >> shift) & 0xf) != absent; }
};
constexpr Granule kGranules[] = {{ArmPageSize::k4K, "4 KiB", 28, 0xf},
                                 {ArmPageSize::k16K, "16 KiB", 20, 0},
                                 {ArmPageSize::k64K, "64 KiB", 24, 0xf}};

}  // namespace

void check_arm64_page_size(const ArmImage& image, uint64_t id_aa64mmfr0) {
  const Granule* wanted = nullptr;  // none for a kernel that does not say
  for (const Granule& g : kGranules) {
    if (g.size == image.page_size) wanted = &g;
  }
  if (wanted == nullptr || wanted->in(id_aa64mmfr0)) return;
  std::string available;
  for (const Granule& g : kGranules) {
    if (!g.in(id_aa64mmfr0)) continue;
    if (!available.empty()) available += ", ";
    available += g.name;
  }
  reject_input(image.path,
               fmt::format("is a kernel built for {} pages, which this host's CPU cannot translate "
                           "(its page sizes: {}): use a kernel built for one of those",
                           wanted->name, available.empty() ? "none" : available));
}

namespace {

[[noreturn]] void ram_too_small(const ArmImage& image, uint64_t ram_size, uint64_t initrd_size,
                                uint64_t needed) {
  throw_ram_too_small(image.path, image.image_size, ram_size, initrd_size, needed);
}

// The highest 8-byte aligned place below `limit` for `size` bytes that does not cross a
// 2 MiB boundary.
uint64_t place_dtb(uint64_t limit, uint64_t size) {
  const uint64_t gpa = align_down(limit - size, kDtbAlign);
  const uint64_t last_block = align_down(gpa + size - 1, kImageBaseAlign);
  if (align_down(gpa, kImageBaseAlign) == last_block) return gpa;
  return last_block - size;  // end right at the boundary it would have crossed
}

}  // namespace

ArmBootPlan plan_arm64_boot(const ArmImage& image, uint64_t ram_base, uint64_t ram_size,
                            uint64_t initrd_size, uint64_t dtb_max_size) {
  if (dtb_max_size == 0 || dtb_max_size > kDtbMaxSize) {
    throw std::invalid_argument(
        fmt::format("arm64 boot: dtb_max_size {:#x} is not in (0, 2 MiB]", dtb_max_size));
  }
  if (ram_base + ram_size < ram_base) {
    throw std::invalid_argument("arm64 boot: the RAM range wraps around the address space");
  }
  const uint64_t ram_end = ram_base + ram_size;
  const uint64_t dtb_size = align_up(dtb_max_size, kDtbAlign);

  ArmBootPlan plan;
  plan.kernel_base = align_up(ram_base, kImageBaseAlign);
  plan.kernel = {plan.kernel_base + image.text_offset, image.image_size};
  plan.entry_gpa = plan.kernel.gpa;
  // A rough lower bound for the message: kernel, 4 KiB-aligned initrd, one 2 MiB dtb block.
  // Saturating: a corrupt image_size must not wrap around into a small number.
  const uint64_t needed = saturating_add(
      saturating_add(plan.kernel_base - ram_base + image.text_offset, image.image_size),
      saturating_add(initrd_size, 2 * kImageBaseAlign));
  if (plan.kernel_base < ram_base || plan.kernel.gpa > ram_end ||
      image.image_size > ram_end - plan.kernel.gpa) {
    ram_too_small(image, ram_size, initrd_size, needed);
  }

  // The initrd must share a 1 GiB aligned window of at most 32 GiB with the kernel; the dtb
  // goes there too, so both stay close to the kernel on very large guests.
  const uint64_t window_start = align_down(plan.kernel_base, kInitrdWindowAlign);
  const uint64_t window_end = std::min(ram_end, saturating_add(window_start, kInitrdWindowSize));
  if (window_end < plan.kernel.end() || window_end - plan.kernel.end() < dtb_size) {
    ram_too_small(image, ram_size, initrd_size, needed);
  }
  plan.dtb = {place_dtb(window_end, dtb_size), dtb_size};
  if (plan.dtb.gpa < plan.kernel.end()) ram_too_small(image, ram_size, initrd_size, needed);

  const auto initrd =
      place_initrd_below(plan.dtb.gpa, plan.kernel.end(), initrd_size, kInitrdAlign);
  if (!initrd) ram_too_small(image, ram_size, initrd_size, needed);
  plan.initrd = *initrd;
  return plan;
}

ArmBootInfo load_arm64(const GuestMemory& memory, const ArmImage& image, const ArmBootPlan& plan,
                       std::span<const uint8_t> initrd, std::span<const uint8_t> dtb) {
  return load_dtb_boot(memory, "arm64", image.bytes, plan, initrd, dtb);
}

}  // namespace libvmm::aarch64
