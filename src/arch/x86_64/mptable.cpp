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

namespace libvmm::x86 {
namespace {

constexpr uint8_t kIsaBusId = 0;
constexpr uint8_t kLocalApicVersion = 0x14;               // an integrated local APIC
constexpr uint32_t kCpuSignature = 0x600;                 // family 6; informational only
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

Entries build_entries(uint32_t num_cpus) {
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
  e.add(mp::Bus{mp::kBus, kIsaBusId, {'I', 'S', 'A', ' ', ' ', ' '}});
  const auto ioapic_id = static_cast<uint8_t>(num_cpus);
  e.add(mp::Ioapic{mp::kIoapic, ioapic_id, kMpIoapicVersion, mp::kIoapicEnabled,
                   static_cast<uint32_t>(kIoapicAddr)});
  for (uint32_t pin = 0; pin < kMpIoapicPins; ++pin) {
    const auto p = static_cast<uint8_t>(pin);
    e.add(mp::Interrupt{mp::kIoInterrupt, mp::kInt, 0, kIsaBusId, p, ioapic_id, p});
  }
  e.add(mp::Interrupt{mp::kLocalInterrupt, mp::kExtInt, 0, kIsaBusId, 0, mp::kAllLocalApics, 0});
  e.add(mp::Interrupt{mp::kLocalInterrupt, mp::kNmi, 0, kIsaBusId, 0, mp::kAllLocalApics, 1});
  return e;
}

}  // namespace

std::vector<uint8_t> build_mptable(uint32_t num_cpus, uint64_t gpa) {
  if (num_cpus == 0 || num_cpus > kMaxMpCpus) {
    throw UserError(fmt::format("--vcpus: {} is out of range; an x86 guest can have 1 to {}",
                                num_cpus, kMaxMpCpus));
  }
  const Entries entries = build_entries(num_cpus);
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

void write_mptable(const GuestMemory& memory, uint32_t num_cpus) {
  const std::vector<uint8_t> table = build_mptable(num_cpus, kMpTableAddr);
  if (table.size() > kMpTableAreaSize) {
    throw std::logic_error("x86 boot: the MP table outgrew its KiB");
  }
  write_guest(memory, kMpTableAddr, table, "MP table");
}

}  // namespace libvmm::x86
