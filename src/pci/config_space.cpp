#include "libvmm/pci/config_space.hpp"

#include <fmt/format.h>

#include <bit>
#include <stdexcept>

namespace libvmm::pci {
namespace {

constexpr uint32_t kBarIo = 0x1;
constexpr uint32_t kBarMem64 = 0x4;
constexpr uint32_t kBarPrefetch = 0x8;

bool valid_access(uint32_t offset, size_t size, uint32_t limit, std::string& why) {
  if (size != 1 && size != 2 && size != 4) {
    why = fmt::format("{}-byte access at {:#x}: configuration space takes 1, 2 or 4 bytes", size,
                      offset);
    return false;
  }
  if (offset % size != 0) {
    why = fmt::format("{}-byte access at {:#x} is not naturally aligned", size, offset);
    return false;
  }
  if (offset + size > limit) {
    why = fmt::format("{}-byte access at {:#x} is beyond the {}-byte configuration space", size,
                      offset, limit);
    return false;
  }
  return true;
}

bool is_bar_register(uint32_t offset) {
  return offset >= kBar0 && offset < kBar0 + 4 * kBarCount;
}

}  // namespace

ConfigSpace::ConfigSpace(const Identity& id) {
  set_u16(kVendorId, id.vendor_id);
  set_u16(kDeviceId, id.device_id);
  set_u8(kRevision, id.revision);
  set_u8(kClassCode, static_cast<uint8_t>(id.class_code));
  set_u8(kClassCode + 1, static_cast<uint8_t>(id.class_code >> 8));
  set_u8(kClassCode + 2, static_cast<uint8_t>(id.class_code >> 16));
  set_u8(kHeaderType, 0);  // type 0, single function
  set_u16(kSubsystemVendorId, id.subsystem_vendor_id);
  set_u16(kSubsystemId, id.subsystem_id);
  set_writable(
      kCommand, 2,
      kCommandIo | kCommandMemory | kCommandBusMaster | kCommandSerr | kCommandIntxDisable);
  set_writable(kInterruptLine, 1, 0xff);
  set_writable(0x0c, 1, 0xff);  // cache line size: read/write, no effect
  set_writable(0x0d, 1, 0xff);  // latency timer
}

void ConfigSpace::add_bar(unsigned index, const BarInfo& bar) {
  const unsigned span = bar.kind == BarKind::mem64 ? 2 : 1;
  if (index + span > kBarCount) throw std::invalid_argument("PCI BAR index out of range");
  for (unsigned i = index; i < index + span; ++i) {
    if (bars_[i].size != 0 || upper_half_[i]) throw std::invalid_argument("PCI BAR declared twice");
  }
  const uint64_t minimum = bar.kind == BarKind::io ? 4 : 16;
  if (!std::has_single_bit(bar.size) || bar.size < minimum ||
      (bar.kind != BarKind::mem64 && bar.size > (1ull << 31)) ||
      (bar.kind == BarKind::io && bar.size > 256)) {
    throw std::invalid_argument(fmt::format("PCI BAR {}: bad size {:#x}", index, bar.size));
  }
  bars_[index] = bar;
  if (span == 2) upper_half_[index + 1] = true;
}

void ConfigSpace::set_bar_address(unsigned index, uint64_t address) {
  const BarInfo& b = bars_.at(index);
  if (b.size == 0) throw std::invalid_argument("PCI BAR not implemented");
  uint64_t a = address & ~(b.size - 1);
  if (b.kind != BarKind::mem64) a &= 0xffffffffull;
  addresses_[index] = a;
}

uint64_t ConfigSpace::bar_address(unsigned index) const {
  return addresses_.at(index);
}

uint32_t ConfigSpace::bar_register(unsigned reg) const {
  if (upper_half_[reg]) return static_cast<uint32_t>(addresses_[reg - 1] >> 32);
  const BarInfo& b = bars_[reg];
  if (b.size == 0) return 0;
  uint32_t flags = 0;
  if (b.kind == BarKind::io) flags = kBarIo;
  if (b.kind == BarKind::mem64) flags |= kBarMem64;
  if (b.prefetchable && b.kind != BarKind::io) flags |= kBarPrefetch;
  return static_cast<uint32_t>(addresses_[reg]) | flags;
}

void ConfigSpace::write_bar_register(unsigned reg, uint32_t value) {
  if (upper_half_[reg]) {
    const BarInfo& b = bars_[reg - 1];
    uint64_t a = (addresses_[reg - 1] & 0xffffffffull) | uint64_t{value} << 32;
    addresses_[reg - 1] = a & ~(b.size - 1);
    return;
  }
  const BarInfo& b = bars_[reg];
  if (b.size == 0) return;  // not implemented: reads 0, so sizing finds nothing
  const uint64_t low_mask = (b.kind == BarKind::io ? 0xffffull : 0xffffffffull) & ~(b.size - 1);
  addresses_[reg] = (addresses_[reg] & ~0xffffffffull) | (value & low_mask);
}

uint16_t ConfigSpace::u16(uint32_t offset) const {
  return static_cast<uint16_t>(bytes_.at(offset) | bytes_.at(offset + 1) << 8);
}

uint32_t ConfigSpace::u32(uint32_t offset) const {
  return u16(offset) | static_cast<uint32_t>(u16(offset + 2)) << 16;
}

void ConfigSpace::set_u8(uint32_t offset, uint8_t value) {
  bytes_.at(offset) = value;
  initial_.at(offset) = value;
}
void ConfigSpace::set_u16(uint32_t offset, uint16_t value) {
  set_u8(offset, static_cast<uint8_t>(value));
  set_u8(offset + 1, static_cast<uint8_t>(value >> 8));
}
void ConfigSpace::set_u32(uint32_t offset, uint32_t value) {
  set_u16(offset, static_cast<uint16_t>(value));
  set_u16(offset + 2, static_cast<uint16_t>(value >> 16));
}

void ConfigSpace::set_writable(uint32_t offset, uint32_t size, uint32_t mask) {
  for (uint32_t i = 0; i < size; ++i)
    writable_.at(offset + i) = static_cast<uint8_t>(mask >> (8 * i));
}

void ConfigSpace::set_interrupt_pin(uint8_t pin) {
  set_u8(kInterruptPin, pin);
}

void ConfigSpace::set_interrupt_status(bool pending) {
  const uint16_t status = u16(kStatus);
  const uint16_t next = pending ? status | kStatusInterrupt : status & ~kStatusInterrupt;
  bytes_[kStatus] = static_cast<uint8_t>(next);
  bytes_[kStatus + 1] = static_cast<uint8_t>(next >> 8);
}

uint32_t ConfigSpace::add_capability(uint8_t id, uint32_t length) {
  if (length < 2 || next_free_ + length > kConfigSize) {
    throw std::invalid_argument("PCI configuration space: no room for the capability");
  }
  const uint32_t offset = next_free_;
  next_free_ = (offset + length + 3) & ~3u;
  set_u8(offset, id);
  set_u8(offset + 1, 0);
  if (last_capability_ == 0) {
    set_u8(kCapabilityPointer, static_cast<uint8_t>(offset));
    set_u16(kStatus, u16(kStatus) | kStatusCapabilities);
  } else {
    set_u8(last_capability_ + 1, static_cast<uint8_t>(offset));
  }
  last_capability_ = offset;
  return offset;
}

uint32_t ConfigSpace::find_capability(uint8_t id) const {
  uint32_t offset = bytes_[kCapabilityPointer];
  for (int hops = 0; offset != 0 && hops < 64; ++hops) {
    if (bytes_[offset] == id) return offset;
    offset = bytes_[offset + 1];
  }
  return 0;
}

bool ConfigSpace::read(uint32_t offset, std::span<uint8_t> data, std::string& why) const {
  if (!valid_access(offset, data.size(), kExtendedConfigSize, why)) {
    std::fill(data.begin(), data.end(), 0xff);
    return false;
  }
  for (size_t i = 0; i < data.size(); ++i) {
    const uint32_t at = offset + static_cast<uint32_t>(i);
    if (at >= kConfigSize) {
      data[i] = 0;  // no extended capabilities
    } else if (is_bar_register(at)) {
      const uint32_t reg = bar_register((at - kBar0) / 4);
      data[i] = static_cast<uint8_t>(reg >> (8 * ((at - kBar0) % 4)));
    } else {
      data[i] = bytes_[at];
    }
  }
  return true;
}

bool ConfigSpace::write(uint32_t offset, std::span<const uint8_t> data, std::string& why) {
  if (!valid_access(offset, data.size(), kExtendedConfigSize, why)) return false;
  if (offset >= kConfigSize) return true;  // extended space: nothing writable
  if (is_bar_register(offset)) {
    // Merge the written bytes into the register as it reads now, then apply the BAR's mask.
    const unsigned reg = (offset - kBar0) / 4;
    uint32_t value = bar_register(reg);
    const unsigned shift = 8 * ((offset - kBar0) % 4);
    for (size_t i = 0; i < data.size(); ++i) {
      value &= ~(0xffu << (shift + 8 * i));
      value |= static_cast<uint32_t>(data[i]) << (shift + 8 * i);
    }
    write_bar_register(reg, value);
    return true;
  }
  if (offset + data.size() > kExpansionRom && offset < kExpansionRom + 4) return true;  // no ROM
  for (size_t i = 0; i < data.size(); ++i) {
    const uint32_t at = offset + static_cast<uint32_t>(i);
    bytes_[at] = static_cast<uint8_t>((bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]));
  }
  return true;
}

std::array<std::optional<BarMapping>, kBarCount> ConfigSpace::mappings() const {
  std::array<std::optional<BarMapping>, kBarCount> out;
  const uint16_t cmd = command();
  for (unsigned i = 0; i < kBarCount; ++i) {
    const BarInfo& b = bars_[i];
    if (b.size == 0 || upper_half_[i] || addresses_[i] == 0) continue;
    const bool on = b.kind == BarKind::io ? (cmd & kCommandIo) : (cmd & kCommandMemory);
    if (on) out[i] = BarMapping{i, b.kind, addresses_[i], b.size};
  }
  return out;
}

void ConfigSpace::reset() {
  bytes_ = initial_;
  addresses_ = {};
}

}  // namespace libvmm::pci
