// The AArch64 board, laid out like QEMU's `virt`: its addresses and interrupt numbers, shared
// by the board description (board.cpp, every host) and the KVM machine (machine.cpp, arm64
// hosts). Internal to the library.
#pragma once

#include <cstdint>

namespace libvmm::aarch64 {

constexpr uint64_t kRamBase = 0x4000'0000;
constexpr uint64_t kGicDistBase = 0x0800'0000;
constexpr uint64_t kGicDistSize = 0x1'0000;
constexpr uint64_t kGicCpuBase = 0x0801'0000;       // v2 CPU interface
constexpr uint64_t kGicVcpuPhysBase = 0x0804'0000;  // QEMU virt's GICv2 virtual CPU interface
constexpr uint64_t kGicItsBase = 0x0808'0000;       // the v3 ITS (MSIs), where QEMU virt has it
constexpr uint64_t kGicItsSize = 0x2'0000;          // KVM_VGIC_V3_ITS_SIZE: control + translater
constexpr uint64_t kGicRedistBase = 0x080A'0000;    // v3 redistributors, one frame pair per vCPU
constexpr uint64_t kGicRedistEnd = 0x0900'0000;
constexpr uint64_t kRedistFrameSize = 2 * 0x1'0000;  // KVM_VGIC_V3_REDIST_SIZE: RD_base + SGI_base
constexpr uint64_t kUartBase = 0x0900'0000;
constexpr uint32_t kUartIntid = 33;          // SPI 1
constexpr uint64_t kRtcBase = 0x0901'0000;   // the PL031, where QEMU virt has it
constexpr uint64_t kGpioBase = 0x0903'0000;  // the PL061 (the power key), where QEMU virt has it
constexpr uint32_t kGpioIntid = 34;          // SPI 2
constexpr unsigned kPowerKeyLine = 3;        // its line the power key is on (as QEMU virt)
constexpr uint64_t kVirtioBase = 0x0A00'0000;
constexpr uint32_t kFirstDeviceIntid = 48;  // SPIs 16..47 for virtIO devices
constexpr uint32_t kDeviceIntidCount = 32;
// The PCI host bridge (pci-host-ecam-generic), in QEMU virt's PCIe windows: 32-bit BARs below
// the ECAM, bus 0's ECAM (1 MiB) where QEMU virt's begins, 64-bit BARs at 512 GiB (QEMU virt's
// high window), far above any RAM this board is given.
constexpr uint64_t kPciMmioBase = 0x1000'0000;
constexpr uint64_t kPciMmioSize = 0x2eff'0000;
constexpr uint64_t kPciEcamBase = 0x3f00'0000;
constexpr uint64_t kPciEcamSize = 0x10'0000;
constexpr uint64_t kPciMmio64Base = 0x80'0000'0000;
constexpr uint64_t kPciMmio64Size = 0x10'0000'0000;  // 64 GiB

}  // namespace libvmm::aarch64
