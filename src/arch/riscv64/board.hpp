// The RISC-V board, laid out like QEMU's `virt`: its addresses and interrupt numbers, shared by
// the board description (board.cpp, every host) and the device tree. Internal to the library.
#pragma once

#include <cstdint>

namespace libvmm::riscv64 {

constexpr uint64_t kRamBase = 0x8000'0000;
// The interrupt controller's window: the PLIC (emulated by vmm) or KVM's APLIC, at the same
// address (a VM has one or the other).
constexpr uint64_t kIrqchipBase = 0x0c00'0000;
constexpr uint64_t kIrqchipWindow = 0x0400'0000;  // the PLIC's whole register space
constexpr uint64_t kAplicSize = 0x4000;           // KVM_DEV_RISCV_APLIC_SIZE (no IDCs: MSIs)
constexpr uint64_t kUartBase = 0x1000'0000;       // ns16550a, 1-byte registers
constexpr uint64_t kUartSize = 0x100;
constexpr uint32_t kUartIrq = 10;  // QEMU virt's
constexpr uint64_t kVirtioBase = 0x1000'1000;
// IMSIC supervisor-level interrupt files (AIA), one 4 KiB page per hart (KVM_DEV_RISCV_IMSIC_SIZE).
constexpr uint64_t kImsicBase = 0x2800'0000;
constexpr uint64_t kImsicPageSize = 0x1000;
constexpr uint32_t kMaxVcpus = 64;
// Interrupt sources 1..63 (0 means "none" to both PLIC and APLIC); devices take 32..63.
constexpr uint32_t kIrqSources = 64;
constexpr uint32_t kFirstDeviceIrq = 32;
constexpr uint32_t kDeviceIrqCount = 32;
// The PCI host bridge (pci-host-ecam-generic), in QEMU virt's PCIe windows: bus 0's ECAM (1 MiB)
// where QEMU virt's begins, 32-bit BARs in its 1 GiB window below RAM, 64-bit BARs at 512 GiB,
// far above any RAM this board is given and inside what every G-stage mode (Sv39x4: 2 TiB)
// translates.
constexpr uint64_t kPciEcamBase = 0x3000'0000;
constexpr uint64_t kPciEcamSize = 0x10'0000;
constexpr uint64_t kPciMmioBase = 0x4000'0000;
constexpr uint64_t kPciMmioSize = 0x4000'0000;
constexpr uint64_t kPciMmio64Base = 0x80'0000'0000;
constexpr uint64_t kPciMmio64Size = 0x10'0000'0000;  // 64 GiB

}  // namespace libvmm::riscv64
