// The machine's ACPI tables: an RSDP, an XSDT, a FADT (with its FACS) describing a PM1a event
// and control block in port I/O, a MADT for the vCPUs and the IOAPIC (Linux ignores the MP table
// once it has ACPI tables), and a DSDT written with the AML writer (aml.hpp): the S5 (soft-off)
// sleep state and, in \_SB, one node per device the machine describes (COM1 as PNP0501, each
// virtio-mmio device as LNRO0005, which Linux's virtio_mmio driver matches, and the PCI host bridge
// as PNP0A08 with its ECAM in an MCFG table). Writing
// SLP_TYP=S5 with SLP_EN to PM1a_CNT is how Linux powers off a PC; AcpiPmDevice turns that into
// a stop request. The FADT's reset register points at the i8042's reset command, so ACPI
// reboots take the same path as keyboard-controller ones.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "libvmm/arch/x86_64/aml.hpp"
#include "libvmm/arch/x86_64/mptable.hpp"  // PciIntxRoute
#include "libvmm/core/bus.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/pci/host_bridge.hpp"

namespace libvmm::x86 {

constexpr uint64_t kAcpiTablesAddr = 0xE0000;      // Linux scans [0xE0000, 0x100000) for the RSDP
constexpr uint64_t kAcpiTablesAreaSize = 0x10000;  // reserved in the e820 map, as is all of it
constexpr uint16_t kAcpiPmBasePort = 0x600;        // PM1a_EVT_BLK (4 bytes), then PM1a_CNT_BLK (2)
constexpr uint16_t kAcpiPmPortCount = 6;
constexpr uint8_t kAcpiSciIrq = 9;
constexpr uint8_t kAcpiS5SleepType = 5;  // the value the DSDT's \_S5 gives SLP_TYP

// One ECAM area in the MCFG table (PCI Firmware Specification 3.2, section 4.1.2): the
// configuration space of buses [bus_start, bus_end] of segment 0, 1 MiB per bus from `base`.
struct McfgEntry {
  uint64_t base = 0;
  uint8_t bus_start = 0;
  uint8_t bus_end = 0;
};

// The tables for `num_cpus` vCPUs, laid out for guest-physical address `base` (RSDP first), with
// `devices` (AML terms, usually Device nodes) in the DSDT's \_SB scope and, when `ecam` is
// given, an MCFG table for it (the PCI host bridge's node is then among `devices`, see
// pci_host_bridge_nodes). Throws std::length_error if they do not fit in kAcpiTablesAreaSize.
std::vector<uint8_t> build_acpi_tables(uint64_t base, uint32_t num_cpus,
                                       const std::vector<aml::Bytes>& devices = {},
                                       std::optional<McfgEntry> ecam = std::nullopt);
void write_acpi_tables(const GuestMemory& memory, uint32_t num_cpus,
                       const std::vector<aml::Bytes>& devices = {},
                       std::optional<McfgEntry> ecam = std::nullopt);

// The DSDT alone (header, checksum and AML body), as build_acpi_tables() writes it.
std::vector<uint8_t> build_dsdt(const std::vector<aml::Bytes>& devices);

// Whether a kernel command line turns ACPI off ("acpi=off" as a word; the last "acpi=" wins):
// the machine then describes virtio-mmio devices with virtio_mmio.device= parameters instead.
bool cmdline_disables_acpi(std::string_view cmdline);

// DSDT nodes for the machine's devices.
// A 16550A at I/O `port` (8 registers) on ISA interrupt `irq`: PNP0501, _UID `uid`.
aml::Bytes serial_port_node(std::string_view name, uint32_t uid, uint16_t port, uint32_t irq);
// Virtio-mmio device `index` (node VRnn, _UID index): LNRO0005 with its register window and its
// edge-triggered, active-high interrupt.
aml::Bytes virtio_mmio_node(uint32_t index, uint64_t base, uint64_t size, uint32_t irq);

// The DSDT nodes for a PCI host bridge with one bus (bus 0): PCI0, a PCI Express root bridge
// (PNP0A08, compatible PNP0A03) whose _CRS gives bus 0, the 0xCF8 configuration ports, its I/O,
// 32-bit and (when the layout has one) 64-bit memory windows, a _PRT from `intx` (none when
// empty) and an _OSC that grants the OS what it asks; and PCIM, a motherboard resource
// (PNP0C02) claiming the ECAM area, as Linux wants before it uses what the MCFG table says.
std::vector<aml::Bytes> pci_host_bridge_nodes(const pci::HostBridgeLayout& layout,
                                              const std::vector<PciIntxRoute>& intx);

// ACPI checksum: the byte that makes `bytes` sum to zero.
uint8_t acpi_checksum(const uint8_t* bytes, size_t len);

// The PM1a event (status/enable) and control registers. Status holds PWRBTN_STS (the fixed
// power button: press_power_button() sets it; the guest clears it by writing 1) and reads 0
// otherwise; enable and control are stored; SCI_EN reads as set (ACPI mode, there is no SMI_CMD
// to switch modes). The SCI (`sci`, may be null) is asserted, level-triggered, while an enabled
// status bit is set.
class AcpiPmDevice : public BusDevice {
 public:
  explicit AcpiPmDevice(std::function<void()> on_power_off, std::shared_ptr<IrqLine> sci = {});
  std::string name() const override { return "acpi-pm"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;
  // The user pressed the power button (thread-safe): PWRBTN_STS and the SCI. False, changing
  // nothing, while the guest has not enabled the event (PWRBTN_EN): no driver listens.
  bool press_power_button();

 private:
  void update_sci();  // with mutex_ held

  std::function<void()> on_power_off_;
  std::shared_ptr<IrqLine> sci_;
  std::mutex mutex_;
  uint8_t registers_[kAcpiPmPortCount] = {};
  uint16_t status_ = 0;
  bool sci_asserted_ = false;
};

}  // namespace libvmm::x86
