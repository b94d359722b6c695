// Minimal ACPI for power-off: an RSDP, an XSDT, a FADT (with its FACS) describing a PM1a event
// and control block in port I/O, a DSDT that only names the S5 (soft-off) sleep state, and a
// MADT for the vCPUs and the IOAPIC (Linux ignores the MP table once it has ACPI tables). Writing
// SLP_TYP=S5 with SLP_EN to PM1a_CNT is how Linux powers off a PC; AcpiPmDevice turns that into
// a stop request. The FADT's reset register points at the i8042's reset command, so ACPI
// reboots take the same path as keyboard-controller ones.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/guest_memory.hpp"

namespace libvmm::x86 {

constexpr uint64_t kAcpiTablesAddr = 0xE0000;  // Linux scans [0xE0000, 0x100000) for the RSDP
constexpr uint64_t kAcpiTablesAreaSize = 0x1000;
constexpr uint16_t kAcpiPmBasePort = 0x600;  // PM1a_EVT_BLK (4 bytes), then PM1a_CNT_BLK (2)
constexpr uint16_t kAcpiPmPortCount = 6;
constexpr uint8_t kAcpiSciIrq = 9;
constexpr uint8_t kAcpiS5SleepType = 5;  // the value the DSDT's \_S5 gives SLP_TYP

// The tables for `num_cpus` vCPUs, laid out for guest-physical address `base` (RSDP first).
std::vector<uint8_t> build_acpi_tables(uint64_t base, uint32_t num_cpus);
void write_acpi_tables(const GuestMemory& memory, uint32_t num_cpus);

// ACPI checksum: the byte that makes `bytes` sum to zero.
uint8_t acpi_checksum(const uint8_t* bytes, size_t len);

// The PM1a event (status/enable) and control registers. Status reads 0 (no events); enable and
// control are stored; SCI_EN reads as set (ACPI mode, there is no SMI_CMD to switch modes).
class AcpiPmDevice : public BusDevice {
 public:
  explicit AcpiPmDevice(std::function<void()> on_power_off);
  std::string name() const override { return "acpi-pm"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::function<void()> on_power_off_;
  std::mutex mutex_;
  uint8_t registers_[kAcpiPmPortCount] = {};
};

}  // namespace libvmm::x86
