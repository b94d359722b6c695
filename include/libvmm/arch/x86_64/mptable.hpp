// An Intel MultiProcessor Specification 1.4 table, which tells the guest its CPUs (local APIC
// ids), the IOAPIC and how ISA interrupts reach it. Linux finds it by scanning the last KiB of
// base memory (kMpTableAddr).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "libvmm/core/guest_memory.hpp"

namespace libvmm::x86 {

// Enough for 32 vCPUs inside the KiB at kMpTableAddr.
constexpr uint32_t kMaxMpCpus = 32;
constexpr uint8_t kMpIoapicVersion = 0x11;
constexpr uint32_t kMpIoapicPins = 24;

// The table's structures, laid out as the specification's tables give them.
namespace mp {

constexpr uint8_t kSpecRev14 = 4;
enum EntryType : uint8_t {
  kProcessor = 0,
  kBus = 1,
  kIoapic = 2,
  kIoInterrupt = 3,
  kLocalInterrupt = 4
};
enum InterruptType : uint8_t { kInt = 0, kNmi = 1, kSmi = 2, kExtInt = 3 };
constexpr uint8_t kCpuEnabled = 1 << 0;
constexpr uint8_t kCpuBootProcessor = 1 << 1;
constexpr uint8_t kIoapicEnabled = 1 << 0;
constexpr uint8_t kAllLocalApics = 0xFF;

struct FloatingPointer {
  char signature[4];  // "_MP_"
  uint32_t config_table;
  uint8_t length;  // in 16-byte units
  uint8_t spec_rev;
  uint8_t checksum;
  uint8_t features[5];  // all 0: a configuration table is present, virtual wire mode
} __attribute__((packed));

struct ConfigHeader {
  char signature[4];  // "PCMP"
  uint16_t base_table_length;
  uint8_t spec_rev;
  uint8_t checksum;
  char oem_id[8];
  char product_id[12];
  uint32_t oem_table;
  uint16_t oem_table_size;
  uint16_t entry_count;
  uint32_t local_apic_address;
  uint16_t extended_table_length;
  uint8_t extended_table_checksum;
  uint8_t reserved;
} __attribute__((packed));

struct Processor {
  uint8_t type;
  uint8_t local_apic_id;
  uint8_t local_apic_version;
  uint8_t flags;
  uint32_t signature;
  uint32_t feature_flags;
  uint32_t reserved[2];
} __attribute__((packed));

struct Bus {
  uint8_t type;
  uint8_t bus_id;
  char bus_type[6];
} __attribute__((packed));

struct Ioapic {
  uint8_t type;
  uint8_t id;
  uint8_t version;
  uint8_t flags;
  uint32_t address;
} __attribute__((packed));

// Both I/O and local interrupt assignment entries.
struct Interrupt {
  uint8_t type;
  uint8_t interrupt_type;
  uint16_t flags;  // 0: polarity and trigger mode conform to the bus
  uint8_t source_bus;
  uint8_t source_irq;
  uint8_t dest_apic;
  uint8_t dest_pin;
} __attribute__((packed));

static_assert(sizeof(FloatingPointer) == 16 && sizeof(ConfigHeader) == 44);
static_assert(sizeof(Processor) == 20 && sizeof(Bus) == 8 && sizeof(Ioapic) == 8 &&
              sizeof(Interrupt) == 8);

}  // namespace mp

// A PCI INTx route (the ACPI _PRT's and the MP table's): pin `pin` (0 = INTA .. 3 = INTD) of
// device `device` on bus 0 drives global system interrupt `gsi` (an IOAPIC pin,
// level-triggered, active low).
struct PciIntxRoute {
  uint8_t device = 0;
  uint8_t pin = 0;
  uint32_t gsi = 0;
};

// The floating pointer followed by the configuration table, as placed at `gpa`: one enabled
// processor per vCPU (APIC id = index, 0 is the BSP), an ISA bus, one IOAPIC (id = num_cpus)
// with ISA IRQ i on pin i for all 24 pins (KVM routes GSI i to pin i), ExtINT on LINT0 and NMI
// on LINT1. With `pci_intx` routes (guests without ACPI find PCI interrupts here): PCI bus 0
// (the ISA bus is then bus 1), one entry per route (source IRQ = device << 2 | pin, conforming
// to the bus: level, active low), and no ISA entry on the pins those routes use. Routes that do
// not fit the KiB with many vCPUs are left out and counted in `left_out` (may be null). Throws
// UserError naming --vcpus unless 1 <= num_cpus <= kMaxMpCpus.
std::vector<uint8_t> build_mptable(uint32_t num_cpus, uint64_t gpa,
                                   const std::vector<PciIntxRoute>& pci_intx = {},
                                   size_t* left_out = nullptr);

// Writes build_mptable(num_cpus, kMpTableAddr, pci_intx) at kMpTableAddr; says in a warning
// line when PCI routes were left out.
void write_mptable(const GuestMemory& memory, uint32_t num_cpus,
                   const std::vector<PciIntxRoute>& pci_intx = {});

}  // namespace libvmm::x86
