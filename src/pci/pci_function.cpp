#include "libvmm/pci/pci_function.hpp"

#include <fmt/format.h>

#include "libvmm/core/log.hpp"

namespace libvmm::pci {

void PciFunction::guest_error(const std::string& message) {
  guest_errors_.warn(name(), message);
}

void PciFunction::config_read(uint32_t offset, std::span<uint8_t> data) {
  if (intercept_config_read(offset, data)) return;
  std::string why;
  bool ok;
  {
    std::lock_guard lock(config_mutex_);
    config_reading(offset, static_cast<uint32_t>(data.size()));
    ok = config_.read(offset, data, why);
  }
  if (!ok) guest_error("configuration read: " + why + "; read as all-ones");
}

void PciFunction::config_write(uint32_t offset, std::span<const uint8_t> data) {
  if (intercept_config_write(offset, data)) return;
  std::string why;
  bool ok;
  {
    std::lock_guard lock(config_mutex_);
    ok = config_.write(offset, data, why);
    if (ok) config_written(offset, static_cast<uint32_t>(data.size()));
  }
  if (!ok) return guest_error("configuration write: " + why + "; ignored");
  config_write_done(offset, static_cast<uint32_t>(data.size()));
}

std::array<std::optional<BarMapping>, kBarCount> PciFunction::mappings() const {
  std::lock_guard lock(config_mutex_);
  return config_.mappings();
}

void PciFunction::assign_bar(unsigned bar, uint64_t address) {
  std::lock_guard lock(config_mutex_);
  config_.set_bar_address(bar, address);
}

void PciFunction::reset_config() {
  std::lock_guard lock(config_mutex_);
  config_.reset();
}

}  // namespace libvmm::pci
