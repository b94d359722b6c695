// The riscv64 Image loader on hostile files and any RAM layout: parse_riscv64_image(), then
// plan_riscv64_boot() for a RAM range, initrd and device tree size from the input, and, on a
// small real guest, load_riscv64(). A file it refuses gets a UserError naming it; a plan it
// refuses a UserError naming --memory; a plan it makes keeps the rules: the kernel at a 2 MiB
// aligned base + text_offset (itself 2 MiB aligned) inside RAM, the dtb 8-byte aligned, the
// initrd 4 KiB aligned, all three apart and inside RAM.
//
// Input: a selector (real guest or any layout), RAM base and size, initrd size, dtb size,
// file size (in bytes beyond the header), then the file's first bytes (the rest are zeroes).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/riscv64/image.hpp"
#include "libvmm/core/error.hpp"

using namespace libvmm;
using namespace libvmm::riscv64;
using fuzz::check;

namespace {

constexpr uint64_t kGuestBase = 2 * GiB;
constexpr uint64_t kGuestSize = 16 * MiB;

uint64_t u64(fuzz::Input& in) {
  const uint64_t low = in.u32();
  return low | uint64_t{in.u32()} << 32;
}

bool inside(const GpaRange& r, uint64_t base, uint64_t end) {
  return r.gpa >= base && r.gpa <= end && r.size <= end - r.gpa;
}

bool apart(const GpaRange& a, const GpaRange& b) {
  return a.size == 0 || b.size == 0 || a.end() <= b.gpa || b.end() <= a.gpa;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const GuestMemory memory = [] {
    GuestMemory m;
    m.map(kGuestBase, MemoryRegion::create("ram", kGuestSize), 0, kGuestSize);
    return m;
  }();
  fuzz::Input in(data, size);
  const uint8_t selector = in.u8();
  const bool real = selector & 1;
  uint64_t base = u64(in);
  uint64_t ram_size = u64(in);
  if (selector & 2) base &= ~(kKernelAlign - 1) & 0xffff'ffff'ffffull;  // realistic ones too
  if (selector & 4) ram_size %= 64 * GiB;
  if (real) base = kGuestBase, ram_size = kGuestSize;
  const uint64_t initrd_size = selector & 8 ? u64(in) : in.u32() % (1 * MiB);
  const uint64_t dtb_size = 1 + in.u32() % kDtbMaxSize;
  std::vector<uint8_t> file(kImageHeaderSize + in.u32() % (64 * KiB), 0);
  const auto head = in.rest();
  std::copy_n(head.begin(), std::min(head.size(), file.size()), file.begin());

  try {
    const RiscvImage image = parse_riscv64_image(file, "fuzz.Image");
    check(image.bytes.data() == file.data() && image.bytes.size() == file.size());
    check(image.text_offset % kKernelAlign == 0 && image.image_size >= file.size());
    if (base + ram_size < base) return 0;  // a RAM range that wraps is a VMM bug, not input
    const RiscvBootPlan plan = plan_riscv64_boot(image, base, ram_size, initrd_size, dtb_size);
    const uint64_t end = base + ram_size;
    check(plan.kernel.gpa % kKernelAlign == 0 && plan.entry_gpa == plan.kernel.gpa);
    check(plan.kernel.size == image.image_size);
    check(inside(plan.kernel, base, end) && inside(plan.dtb, base, end));
    check(plan.dtb.gpa % kDtbAlign == 0 && plan.dtb.size >= dtb_size);
    check(plan.initrd.size == initrd_size);
    if (initrd_size != 0)
      check(inside(plan.initrd, base, end) && plan.initrd.gpa % kInitrdAlign == 0);
    check(apart(plan.kernel, plan.dtb) && apart(plan.kernel, plan.initrd) &&
          apart(plan.initrd, plan.dtb));
    if (!real) return 0;
    const std::vector<uint8_t> initrd(initrd_size, 0x11), dtb(dtb_size, 0xdd);
    const RiscvBootInfo info = load_riscv64(memory, image, plan, initrd, dtb);
    check(info.entry_gpa == plan.entry_gpa && info.dtb_gpa == plan.dtb.gpa);
    check(memory.read_obj<uint8_t>(info.dtb_gpa) == 0xdd);
    check(initrd.empty() || memory.read_obj<uint8_t>(info.initrd.end() - 1) == 0x11);
    check(memory.read_obj<uint8_t>(info.kernel.gpa + 0x38) == file[0x38]);
  } catch (const UserError& e) {
    const std::string what = e.what();
    check(what.starts_with("fuzz.Image: ") || what.starts_with("--memory: "));
  }
  return 0;
}
