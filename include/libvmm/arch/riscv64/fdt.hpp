// The device tree a riscv64 guest boots with, generated with libfdt, or a user's DTB patched
// with the parts the VMM decides. The machine describes its own nodes (memory, cpus with their
// ISA and local interrupt controllers, chosen); the interrupt controller (a PLIC, or AIA's
// APLIC and IMSICs), the 16550A and the virtio-mmio devices (arch/virtio_mmio_fdt.hpp) describe
// theirs (core/fdt.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/arch/riscv64/image.hpp"
#include "libvmm/core/fdt.hpp"

namespace libvmm::riscv64 {

// The hart-local interrupt a platform controller raises in supervisor mode (mcause 9).
constexpr uint32_t kSupervisorExternalIrq = 9;

enum class IrqchipKind : uint8_t {
  aia,   // KVM's in-kernel APLIC (MSI mode) with one IMSIC supervisor file per hart
  plic,  // a PLIC emulated by vmm, one supervisor context per hart
};

struct IrqchipDescription {
  IrqchipKind kind = IrqchipKind::aia;
  uint64_t base = 0;  // the PLIC's or the APLIC's registers
  uint64_t size = 0;
  uint32_t sources = 64;      // interrupt numbers 1 .. sources-1 (0 means none)
  uint64_t imsic_base = 0;    // AIA: hart 0's supervisor interrupt file
  uint64_t imsic_stride = 0;  // AIA: bytes between harts' files
  uint32_t imsic_ids = 255;   // AIA: the highest interrupt identity of a file (63 .. 2047)
};

// The interrupt controller in a device tree: its node(s) (phandle "irqchip" for the one devices
// name, "imsic" for AIA's MSI controller), the root's interrupt-parent, and the binding device
// interrupts are written in: PLIC <source>, APLIC <source trigger>.
class IrqchipFdt final : public FdtNodeSource, public FdtInterruptBinding {
 public:
  IrqchipFdt(const IrqchipDescription& chip, uint32_t cpus) : chip_(chip), cpus_(cpus) {}

  void describe_fdt(FdtWriter& fdt) const override;
  std::vector<uint32_t> interrupt_cells(uint32_t number, FdtTrigger trigger,
                                        std::string_view what) const override;
  std::string_view number_name() const override { return "interrupt source"; }
  // The controller a PCI host bridge's interrupt-map names for its INTx pins.
  std::string_view phandle_label() const override { return "irqchip"; }

 private:
  IrqchipDescription chip_;
  uint32_t cpus_;
};

// The 16550A UART (compatible ns16550a, 1-byte registers) and /chosen/stdout-path.
struct Uart16550Fdt final : FdtNodeSource {
  Uart16550Fdt(uint64_t base_gpa, uint32_t irq_number) : base(base_gpa), irq(irq_number) {}
  void describe_fdt(FdtWriter& fdt) const override;

  uint64_t base = 0;
  uint64_t size = 0x100;
  uint32_t irq = 0;
  uint32_t clock_hz = 3'686'400;
};

struct FdtMachine {
  std::vector<GpaRange> memory;  // one /memory@... node each
  uint32_t cpus = 1;
  // Every hart's riscv,isa (riscv_isa_string() of what KVM reports) and mmu-type.
  std::string isa = "rv64imafdc";
  std::string mmu_type = "riscv,sv48";
  uint64_t timebase_hz = 10'000'000;  // /cpus timebase-frequency, as KVM reports it
  IrqchipDescription irqchip;
  // The board's own devices (the 16550A, which also sets stdout-path) and the devices vmm
  // places (virtio-mmio transports), in that order after the interrupt controller.
  std::vector<std::shared_ptr<const FdtNodeSource>> board;
  std::vector<std::shared_ptr<const FdtNodeSource>> devices;
  std::string bootargs;
  std::optional<GpaRange> initrd;  // linux,initrd-start/end; none when unset or size 0
};

// riscv,isa from KVM's view of a vCPU: `letters` is KVM_REG_RISCV_CONFIG's isa (bit n = letter
// 'a' + n), `extensions` the multi-letter ones it enables ("zicsr", "sstc"), in their order:
// "rv64imafdc_zicsr_sstc". Letters in the ISA manual's canonical order.
std::string riscv_isa_string(uint64_t letters, const std::vector<std::string>& extensions);
// mmu-type for KVM_REG_RISCV_CONFIG's satp_mode (8: sv39, 9: sv48, 10: sv57); nullopt for bare.
std::optional<std::string> mmu_type_of_satp_mode(uint64_t satp_mode);

// Builds the whole tree: root (#address-cells/#size-cells 2), chosen, memory, cpus (riscv,isa,
// mmu-type, a riscv,cpu-intc each, timebase-frequency), then the interrupt controller's, the
// board's and the devices' own nodes. Throws UserError on a bad description (no memory, no
// harts, interrupts outside the controller's sources or shared, shared addresses), and
// std::invalid_argument on a malformed ISA string (a VMM bug).
std::vector<uint8_t> build_fdt(const FdtMachine& machine);

// Patches a user's DTB (--dtb): replaces every memory node with `machine.memory`, sets /chosen
// bootargs (when non-empty) and initrd bounds (removes stale ones), sets /cpus
// timebase-frequency to KVM's, and adds the devices' nodes (replacing nodes of the same name).
// Everything else is kept, including the harts and the board's devices. The tree must have
// /cpus and, when devices are added, the VM's interrupt controller (the kind and address
// `machine.irqchip` says). Throws UserError "PATH: reason" for a DTB that is not valid, lacks
// those, or outgrows kDtbMaxSize.
std::vector<uint8_t> patch_fdt(std::span<const uint8_t> user_dtb, const FdtMachine& machine,
                               const std::string& path);

}  // namespace libvmm::riscv64
