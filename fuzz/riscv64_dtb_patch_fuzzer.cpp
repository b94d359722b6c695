// The riscv64 user-DTB patcher (--dtb) on hostile device trees: patch_fdt() with one or two
// harts, AIA or the PLIC, virtio-mmio devices, bootargs and an initrd chosen by the input. It
// checks the user's /cpus and interrupt controller itself, so it walks more of the tree than the
// arm64 patcher. A tree it refuses gets a UserError naming the file; a tree it accepts comes
// back as a valid flattened tree (fdt_check_full) within kDtbMaxSize, with KVM's
// timebase-frequency in /cpus, the machine's bootargs in /chosen, a memory node, and every
// device's node.
//
// Input: a selector byte (the machine), then the user's DTB.
#include <libfdt.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/riscv64/fdt.hpp"
#include "libvmm/arch/virtio_mmio_fdt.hpp"
#include "libvmm/core/error.hpp"
#include "patched_dtb_checks.hpp"

using namespace libvmm;
using namespace libvmm::riscv64;
using fuzz::check;

namespace {

FdtMachine machine(uint8_t selector) {
  FdtMachine m;
  m.memory = {{0x8000'0000, 256 * MiB}};
  if (selector & 1) m.memory.push_back({0x1'0000'0000, 1 * GiB});
  m.cpus = 1 + ((selector >> 1) & 1);
  const bool plic = selector & 4;
  m.irqchip.kind = plic ? IrqchipKind::plic : IrqchipKind::aia;
  m.irqchip.base = 0x0c00'0000;
  m.irqchip.size = plic ? 0x400'0000 : 0x4000;
  m.irqchip.imsic_base = 0x2800'0000;
  m.irqchip.imsic_stride = 0x1000;
  for (unsigned i = 0; i < ((selector >> 3) & 3); ++i) {
    auto device = std::make_shared<VirtioMmioFdt>();
    device->base = 0x1000'1000 + i * 0x1000;
    device->irq = 32 + i;
    m.devices.push_back(device);
  }
  if (selector & 0x20) m.bootargs = "console=ttyS0 root=/dev/vda";
  if (selector & 0x40) m.initrd = GpaRange{0x8800'0000, 0x1234};
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const FdtMachine m = machine(in.u8());
  const auto user = in.rest();
  try {
    const std::vector<uint8_t> blob = patch_fdt(user, m, "fuzz.dtb");
    fuzz::check_patched_tree(blob, kDtbMaxSize, m.bootargs, m.devices);
    int len = 0;
    const auto* timebase = static_cast<const fdt32_t*>(fdt_getprop(
        blob.data(), fdt_path_offset(blob.data(), "/cpus"), "timebase-frequency", &len));
    check(timebase != nullptr && len == 4 && fdt32_to_cpu(*timebase) == m.timebase_hz);
  } catch (const UserError& e) {
    check(std::string(e.what()).starts_with("fuzz.dtb: "));
  }
  return 0;
}
