#include "libvmm/arch/x86_64/mptable.hpp"

#include <fmt/format.h>

#include <cstddef>
#include <cstring>
#include <numeric>
#include <span>
#include <stdexcept>

#include "guest_write.hpp"
#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm::x86 {
namespace {

constexpr uint8_t kPciBusId = 0;             // Linux matches PCI entries by PCI bus number
constexpr uint8_t kLocalApicVersion = 0x14;  // an integrated local APIC
constexpr uint32_t kCpuSignature = 0x600;    // family 6; informational only
constexpr uint32_t kCpuFeatures = (1u << 0) | (1u << 9);  // FPU, APIC

template <typename T>
void append(std::vector<uint8_t>& out, const T& value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

// The value that makes `bytes` sum to zero (mod 256).
uint8_t checksum(std::span<const uint8_t> bytes) {
  return static_cast<uint8_t>(-std::accumulate(bytes.begin(), bytes.end(), 0u));
}

// The configuration table's entries, counted as they are added.
struct Entries {
  std::vector<uint8_t> bytes;
  uint16_t count = 0;
  template <typename T>
  void add(const T& entry) {
    append(bytes, entry);
    ++count;
  }
};

// The table's bytes for `entries` (header and floating pointer around them).
size_t table_size(const Entries& entries) {
  return sizeof(mp::FloatingPointer) + sizeof(mp::ConfigHeader) + entries.bytes.size();
}

Entries build_entries(uint32_t num_cpus, const std::vector<PciIntxRoute>& pci_intx,
                      size_t& left_out) {
  Entries e;
  for (uint32_t cpu = 0; cpu < num_cpus; ++cpu) {
    const uint8_t flags = mp::kCpuEnabled | (cpu == 0 ? mp::kCpuBootProcessor : 0);
    e.add(mp::Processor{mp::kProcessor,
                        static_cast<uint8_t>(cpu),
                        kLocalApicVersion,
                        flags,
                        kCpuSignature,
                        kCpuFeatures,
                        {0, 0}});
  }
  const bool pci = !pci_intx.empty();
  const uint8_t isa_bus = pci ? kPciBusId + 1 : 0;
  if (pci) e.add(mp::Bus{mp::kBus, kPciBusId, {'P', 'C', 'I', ' ', ' ', ' '}});
  e.add(mp::Bus{mp::kBus, isa_bus, {'I', 'S', 'A', ' ', ' ', ' '}});
  const auto ioapic_id = static_cast<uint8_t>(num_cpus);
  e.add(mp::Ioapic{mp::kIoapic, ioapic_id, kMpIoapicVersion, mp::kIoapicEnabled,
                   static_cast<uint32_t>(kIoapicAddr)});
  // A pin has one trigger mode: the ISA entry (edge, active high) gives way to PCI routes
  // (level, active low) on the pins they use.
  std::vector<bool> pci_pin(kMpIoapicPins, false);
  for (const PciIntxRoute& r : pci_intx) {
    if (r.gsi >= kMpIoapicPins || r.device >= 32 || r.pin > 3) {
      throw std::invalid_argument("MP table: a PCI interrupt route off the bus or the IOAPIC");
    }
    pci_pin[r.gsi] = true;
  }
  for (uint32_t pin = 0; pin < kMpIoapicPins; ++pin) {
    if (pci_pin[pin]) continue;
    const auto p = static_cast<uint8_t>(pin);
    e.add(mp::Interrupt{mp::kIoInterrupt, mp::kInt, 0, isa_bus, p, ioapic_id, p});
  }
  e.add(mp::Interrupt{mp::kLocalInterrupt, mp::kExtInt, 0, isa_bus, 0, mp::kAllLocalApics, 0});
  e.add(mp::Interrupt{mp::kLocalInterrupt, mp::kNmi, 0, isa_bus, 0, mp::kAllLocalApics, 1});
  left_out = 0;
  for (const PciIntxRoute& r : pci_intx) {
    if (table_size(e) + sizeof(mp::Interrupt) > kMpTableAreaSize) {
      ++left_out;
      continue;
    }
    e.add(mp::Interrupt{mp::kIoInterrupt, mp::kInt, 0, kPciBusId,
                        static_cast<uint8_t>(r.device << 2 | r.pin), ioapic_id,
                        static_cast<uint8_t>(r.gsi)});
  }
  return e;
}

}  // namespace

std::vector<uint8_t> build_mptable(uint32_t num_cpus, uint64_t gpa,
                                   const std::vector<PciIntxRoute>& pci_intx, size_t* left_out) {
  if (num_cpus == 0 || num_cpus > kMaxMpCpus) {
    throw UserError(fmt::format("--vcpus: {} is out of range; an x86 guest can have 1 to {}",
                                num_cpus, kMaxMpCpus));
  }
  size_t routes_left_out = 0;
  const Entries entries = build_entries(num_cpus, pci_intx, routes_left_out);
  if (left_out != nullptr) *left_out = routes_left_out;
  mp::ConfigHeader header{};
  std::memcpy(header.signature, "PCMP", 4);
  header.base_table_length = static_cast<uint16_t>(sizeof(header) + entries.bytes.size());
  header.entry_count = entries.count;
  header.spec_rev = mp::kSpecRev14;
  std::memcpy(header.oem_id, "LIBVMM  ", 8);
  std::memcpy(header.product_id, "KVM GUEST   ", 12);
  header.local_apic_address = static_cast<uint32_t>(kLapicAddr);

  mp::FloatingPointer pointer{};
  std::memcpy(pointer.signature, "_MP_", 4);
  pointer.config_table = static_cast<uint32_t>(gpa + sizeof(pointer));
  pointer.length = sizeof(pointer) / 16;
  pointer.spec_rev = mp::kSpecRev14;

  // The floating pointer, then the configuration table (header, entries): sized once, each part
  // copied to its place.
  std::vector<uint8_t> table(sizeof(pointer) + header.base_table_length);
  std::memcpy(table.data(), &pointer, sizeof(pointer));
  std::memcpy(table.data() + sizeof(pointer), &header, sizeof(header));
  std::memcpy(table.data() + sizeof(pointer) + sizeof(header), entries.bytes.data(),
              entries.bytes.size());
  const auto whole = std::span<uint8_t>(table);
  whole[offsetof(mp::FloatingPointer, checksum)] = checksum(whole.first(sizeof(pointer)));
  whole[sizeof(pointer) + offsetof(mp::ConfigHeader, checksum)] =
      checksum(whole.subspan(sizeof(pointer)));
  return table;
}

void write_mptable(const GuestMemory& memory, uint32_t num_cpus,
                   const std::vector<PciIntxRoute>& pci_intx) {
  size_t left_out = 0;
  const std::vector<uint8_t> table = build_mptable(num_cpus, kMpTableAddr, pci_intx, &left_out);
  if (left_out != 0) {
    log::warn(
        "MP table: no room for {} of {} PCI INTx routes with {} vCPUs; a guest without "
        "ACPI gets no INTx from those devices (ACPI guests read the _PRT)",
        left_out, pci_intx.size(), num_cpus);
  }
  if (table.size() > kMpTableAreaSize) {
    throw std::logic_error("x86 boot: the MP table outgrew its KiB");
  }
  write_guest(memory, kMpTableAddr, table, "MP table");
}

}  // namespace libvmm::x86
