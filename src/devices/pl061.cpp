#include "libvmm/devices/pl061.hpp"

#include <cstring>

#include "libvmm/devices/register_read.hpp"
#include "primecell.hpp"

namespace libvmm {
namespace {

// Register offsets (PL061 technical reference manual, DDI 0190).
constexpr uint64_t kDataEnd = 0x400;  // GPIODATA: 0x000-0x3FC, address bits [9:2] the mask
constexpr uint64_t kDir = 0x400;
constexpr uint64_t kIs = 0x404;
constexpr uint64_t kIbe = 0x408;
constexpr uint64_t kIev = 0x40C;
constexpr uint64_t kIe = 0x410;
constexpr uint64_t kRis = 0x414;
constexpr uint64_t kMis = 0x418;
constexpr uint64_t kIc = 0x41C;
constexpr uint64_t kAfsel = 0x420;

}  // namespace

Pl061::Pl061(std::shared_ptr<IrqLine> irq) : irq_(std::move(irq)) {}

uint32_t Pl061::read_register(uint64_t offset) {
  if (offset < kDataEnd) {
    const uint8_t mask = static_cast<uint8_t>(offset >> 2);
    const uint8_t levels = static_cast<uint8_t>((data_ & dir_) | (inputs_ & ~dir_));
    seen_ |= static_cast<uint8_t>(mask & ~dir_);
    return levels & mask;
  }
  switch (offset) {
    case kDir:
      return dir_;
    case kIs:
      return is_;
    case kIbe:
      return ibe_;
    case kIev:
      return iev_;
    case kIe:
      return ie_;
    case kRis:
      return ris_;
    case kMis:
      return ris_ & ie_;
    case kAfsel:
      return afsel_;
    default:
      break;
  }
  if (primecell::is_id_register(offset)) return primecell::id_register(offset, 0x061, 0);
  return 0;
}

void Pl061::write_register(uint64_t offset, uint32_t value) {
  const auto byte = static_cast<uint8_t>(value);
  const uint8_t old_levels = static_cast<uint8_t>((data_ & dir_) | (inputs_ & ~dir_));
  if (offset < kDataEnd) {
    const uint8_t mask = static_cast<uint8_t>(offset >> 2);
    data_ = static_cast<uint8_t>((data_ & ~mask) | (byte & mask));
    update_levels(old_levels);
    return;
  }
  switch (offset) {
    case kDir:
      dir_ = byte;
      update_levels(old_levels);
      break;
    case kIs:
      is_ = byte;
      update_levels(old_levels);
      break;
    case kIbe:
      ibe_ = byte;
      break;
    case kIev:
      iev_ = byte;
      update_levels(old_levels);
      break;
    case kIe:
      ie_ = byte;
      break;
    case kIc:
      ris_ = static_cast<uint8_t>(ris_ & ~(byte & ~is_));  // level interrupts stay while held
      break;
    case kAfsel:
      afsel_ = byte;
      break;
    default:
      break;
  }
  update_irq();
}

void Pl061::update_levels(uint8_t old_levels) {
  const uint8_t levels = static_cast<uint8_t>((data_ & dir_) | (inputs_ & ~dir_));
  const uint8_t changed = old_levels ^ levels;
  const uint8_t rising = changed & levels;
  const uint8_t falling = changed & old_levels;
  // Edge-sensitive lines latch an edge they listen for; level-sensitive ones follow the level.
  const uint8_t edges = static_cast<uint8_t>(
      ~is_ & ((ibe_ & changed) | (~ibe_ & ((iev_ & rising) | (~iev_ & falling)))));
  const uint8_t active_levels = static_cast<uint8_t>(is_ & ~(levels ^ iev_));
  ris_ = static_cast<uint8_t>((ris_ & ~is_) | edges | active_levels);
  update_irq();
}

void Pl061::update_irq() {
  const bool level = (ris_ & ie_) != 0;
  if (level == irq_level_) return;
  irq_level_ = level;
  irq_->set_level(level);
}

void Pl061::set_input(unsigned line, bool high) {
  if (line >= kLines) return;
  std::lock_guard lock(mutex_);
  const uint8_t old_levels = static_cast<uint8_t>((data_ & dir_) | (inputs_ & ~dir_));
  const auto bit = static_cast<uint8_t>(1u << line);
  inputs_ = high ? static_cast<uint8_t>(inputs_ | bit) : static_cast<uint8_t>(inputs_ & ~bit);
  seen_ = static_cast<uint8_t>(seen_ & ~bit);
  update_levels(old_levels);
}

bool Pl061::input_seen(unsigned line) {
  if (line >= kLines) return false;
  std::lock_guard lock(mutex_);
  return (seen_ >> line & 1) != 0;
}

bool Pl061::interrupt_enabled(unsigned line) {
  if (line >= kLines) return false;
  std::lock_guard lock(mutex_);
  return (ie_ >> line & 1) != 0;
}

void Pl061::read(uint64_t offset, std::span<uint8_t> data) {
  read_32bit_register(offset, data, [this](uint64_t aligned) {
    std::lock_guard lock(mutex_);
    return read_register(aligned);
  });
}

void Pl061::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty() || data.size() > 4 || (offset & 3) != 0) return;
  uint32_t value = 0;
  for (size_t i = 0; i < data.size(); ++i) value |= uint32_t{data[i]} << (8 * i);
  std::lock_guard lock(mutex_);
  write_register(offset, value);
}

}  // namespace libvmm
