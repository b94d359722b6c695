// The user-DTB patcher (--dtb, <dtb>) on hostile device trees: patch_fdt() with a machine of
// one or two vCPUs, GICv2 or v3, virtio-mmio devices, bootargs and an initrd chosen by the
// input. A tree it refuses gets a UserError naming the file; a tree it accepts comes back as
// a valid flattened tree (fdt_check_full) within the arm64 limit of 2 MiB, with the machine's
// bootargs in /chosen, a memory node, and every device's node.
//
// Input: a selector byte (the machine), then the user's DTB.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/aarch64/fdt.hpp"
#include "libvmm/arch/virtio_mmio_fdt.hpp"
#include "libvmm/core/error.hpp"
#include "patched_dtb_checks.hpp"

using namespace libvmm;
using namespace libvmm::aarch64;
using fuzz::check;

namespace {

FdtMachine machine(uint8_t selector) {
  FdtMachine m;
  m.memory = {{0x4000'0000, 256 * MiB}};
  if (selector & 1) m.memory.push_back({0x1'0000'0000, 1 * GiB});
  m.cpus = 1 + ((selector >> 1) & 1);
  const bool v2 = selector & 4;
  m.gic = {v2 ? GicVersion::v2 : GicVersion::v3, 0x0800'0000, 0x1'0000,
           v2 ? 0x0801'0000ull : 0x080a'0000ull, v2 ? 0x1'0000ull : 0x4'0000ull};
  for (unsigned i = 0; i < ((selector >> 3) & 3); ++i) {
    auto device = std::make_shared<VirtioMmioFdt>();
    device->base = 0x0a00'0000 + i * 0x200;
    device->irq = 48 + i;
    m.devices.push_back(device);
  }
  if (selector & 0x20) m.bootargs = "console=ttyAMA0 root=/dev/vda";
  if (selector & 0x40) m.initrd = GpaRange{0x4800'0000, 0x1234};
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const FdtMachine m = machine(in.u8());
  const auto user = in.rest();
  try {
    fuzz::check_patched_tree(patch_fdt(user, m, "fuzz.dtb"), kDtbMaxSize, m.bootargs, m.devices);
  } catch (const UserError& e) {
    check(std::string(e.what()).starts_with("fuzz.dtb: "));
  }
  return 0;
}
