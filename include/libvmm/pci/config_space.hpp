// The configuration space of a PCI function with a type-0 header (PCI Local Bus 3.0 §6.1-6.2,
// PCIe 4.0 §7.5): identity registers, the command register, up to six BARs that the guest
// sizes and reprograms, interrupt line and pin, and a capability list. Pure data, no locking:
// its owner (PciFunction) serialises accesses.
//
// Every guest access is checked: 1, 2 or 4 bytes, naturally aligned, below kSize (ECAM offers
// 4 KiB per function: the extended space beyond 256 bytes reads 0, i.e. no extended
// capabilities, and ignores writes). A malformed access reads all-ones and writes nothing,
// like a master abort, and the caller is told so.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace libvmm::pci {

constexpr uint32_t kConfigSize = 256;           // conventional configuration space
constexpr uint32_t kExtendedConfigSize = 4096;  // what ECAM decodes per function
constexpr unsigned kBarCount = 6;

// Command register bits (PCI 3.0 §6.2.2).
constexpr uint16_t kCommandIo = 1u << 0;
constexpr uint16_t kCommandMemory = 1u << 1;
constexpr uint16_t kCommandBusMaster = 1u << 2;
constexpr uint16_t kCommandSerr = 1u << 8;
constexpr uint16_t kCommandIntxDisable = 1u << 10;
// Status register bits.
constexpr uint16_t kStatusInterrupt = 1u << 3;
constexpr uint16_t kStatusCapabilities = 1u << 4;

// Register offsets of the type-0 header.
constexpr uint32_t kVendorId = 0x00;
constexpr uint32_t kDeviceId = 0x02;
constexpr uint32_t kCommand = 0x04;
constexpr uint32_t kStatus = 0x06;
constexpr uint32_t kRevision = 0x08;
constexpr uint32_t kClassCode = 0x09;  // 3 bytes: programming interface, subclass, class
constexpr uint32_t kHeaderType = 0x0e;
constexpr uint32_t kBar0 = 0x10;
constexpr uint32_t kSubsystemVendorId = 0x2c;
constexpr uint32_t kSubsystemId = 0x2e;
constexpr uint32_t kExpansionRom = 0x30;
constexpr uint32_t kCapabilityPointer = 0x34;
constexpr uint32_t kInterruptLine = 0x3c;
constexpr uint32_t kInterruptPin = 0x3d;
constexpr uint32_t kFirstCapability = 0x40;

// Capability IDs used here.
constexpr uint8_t kCapMsi = 0x05;
constexpr uint8_t kCapVendor = 0x09;
constexpr uint8_t kCapMsix = 0x11;

struct Identity {
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // class << 16 | subclass << 8 | programming interface
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
};

enum class BarKind { mem32, mem64, io };

struct BarInfo {
  BarKind kind = BarKind::mem32;
  uint64_t size = 0;  // 0: the BAR is not implemented
  bool prefetchable = false;
};

// Where a BAR decodes: its kind, address and size, when the command register enables its
// space and an address has been given.
struct BarMapping {
  unsigned index = 0;
  BarKind kind = BarKind::mem32;
  uint64_t address = 0;
  uint64_t size = 0;
  bool operator==(const BarMapping&) const = default;
};

class ConfigSpace {
 public:
  explicit ConfigSpace(const Identity& identity);

  // Declares BAR `index` (a 64-bit BAR also takes index + 1). `size` is a power of two, at least
  // 16 for memory and 4 for I/O. Throws std::invalid_argument on a bad declaration (a
  // programming error, never guest input).
  void add_bar(unsigned index, const BarInfo& bar);
  const BarInfo& bar(unsigned index) const { return bars_.at(index); }
  // Sets a BAR's address as firmware would before the guest runs (low bits ignored).
  void set_bar_address(unsigned index, uint64_t address);
  uint64_t bar_address(unsigned index) const;

  // Appends a capability of `length` bytes (including its ID and next pointer) to the list and
  // returns its offset; the body is zero and read-only until set_*() / set_writable() say
  // otherwise. Throws std::invalid_argument when the space is full.
  uint32_t add_capability(uint8_t id, uint32_t length);
  // The first capability with `id` (0 when there is none).
  uint32_t find_capability(uint8_t id) const;

  // Device-side access to the bytes: what the guest reads, and which bits it may write.
  void set_u8(uint32_t offset, uint8_t value);
  void set_u16(uint32_t offset, uint16_t value);
  void set_u32(uint32_t offset, uint32_t value);
  uint8_t u8(uint32_t offset) const { return bytes_.at(offset); }
  uint16_t u16(uint32_t offset) const;
  uint32_t u32(uint32_t offset) const;
  void set_writable(uint32_t offset, uint32_t size, uint32_t mask);
  void set_interrupt_pin(uint8_t pin);  // 1 = INTA#; 0: none
  void set_interrupt_status(bool pending);

  uint16_t command() const { return u16(kCommand); }

  // Guest access. `why` gets a phrase for a refused access (then false).
  bool read(uint32_t offset, std::span<uint8_t> data, std::string& why) const;
  bool write(uint32_t offset, std::span<const uint8_t> data, std::string& why);

  // The BARs that decode now (command register enables their space, address not 0).
  std::array<std::optional<BarMapping>, kBarCount> mappings() const;

  // Back to power-on state: command 0, BAR addresses 0, writable registers cleared.
  void reset();

 private:
  void write_bar_register(unsigned reg, uint32_t value);
  uint32_t bar_register(unsigned reg) const;

  std::array<uint8_t, kConfigSize> bytes_{};
  std::array<uint8_t, kConfigSize> writable_{};  // per-bit write masks
  std::array<uint8_t, kConfigSize> initial_{};   // what reset() restores outside the BARs
  std::array<BarInfo, kBarCount> bars_{};
  std::array<bool, kBarCount> upper_half_{};  // the register holds the top of a 64-bit BAR
  std::array<uint64_t, kBarCount> addresses_{};
  uint32_t last_capability_ = 0;
  uint32_t next_free_ = kFirstCapability;
};

}  // namespace libvmm::pci
