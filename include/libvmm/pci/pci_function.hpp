// A PCI function as the host bridge sees it: its configuration space (guest accesses checked
// and serialised here) and the register blocks its BARs decode. Devices (virtio-pci, VFIO)
// derive from it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "libvmm/core/log.hpp"
#include "libvmm/pci/config_space.hpp"

namespace libvmm::pci {

class PciFunction {
 public:
  virtual ~PciFunction() = default;
  PciFunction(const PciFunction&) = delete;
  PciFunction& operator=(const PciFunction&) = delete;

  virtual std::string name() const = 0;

  // Guest configuration accesses (any vCPU thread). Malformed ones read all-ones, write
  // nothing, and are logged (rate-limited).
  void config_read(uint32_t offset, std::span<uint8_t> data);
  void config_write(uint32_t offset, std::span<const uint8_t> data);
  // Where the BARs decode now.
  std::array<std::optional<BarMapping>, kBarCount> mappings() const;

  // A guest access at `offset` into BAR `bar` (which decodes there); `data.size()` is 1, 2, 4
  // or 8. Reads fill all of `data`.
  virtual void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) = 0;
  // The host bridge moved BAR `bar` (old and new place; nullopt: not decoding). Called from the
  // vCPU thread that wrote the configuration space, after the move, without the bridge's lock.
  virtual void bar_moved(unsigned bar, std::optional<BarMapping> old,
                         std::optional<BarMapping> now) {
    static_cast<void>(bar);
    static_cast<void>(old);
    static_cast<void>(now);
  }

  // Firmware's part before the guest runs: a BAR's address (the host bridge's allocator).
  void assign_bar(unsigned bar, uint64_t address);
  const BarInfo& bar_info(unsigned bar) const { return config_.bar(bar); }

 protected:
  explicit PciFunction(const Identity& identity) : config_(identity) {}
  // The guest wrote [offset, offset + size) of the configuration space (lock held): e.g. an
  // MSI-X Message Control.
  virtual void config_written(uint32_t offset, uint32_t size) {
    static_cast<void>(offset);
    static_cast<void>(size);
  }
  // Then, once the lock is released: what the write sets in motion that needs the function's
  // own locks (which come before the configuration space's).
  virtual void config_write_done(uint32_t offset, uint32_t size) {
    static_cast<void>(offset);
    static_cast<void>(size);
  }
  // The guest is about to read [offset, offset + size) (lock held): registers whose value is
  // the function's state (e.g. MSI pending bits) are brought up to date here.
  virtual void config_reading(uint32_t offset, uint32_t size) {
    static_cast<void>(offset);
    static_cast<void>(size);
  }
  // A guest access to a register that is a window onto the function's state rather than bytes
  // of the configuration space (virtio-pci's VIRTIO_PCI_CAP_PCI_CFG data, which reads and
  // writes a BAR): the function serves it and returns true. Called before the configuration
  // space sees the access, without the lock, so that the function may take its own locks.
  virtual bool intercept_config_read(uint32_t offset, std::span<uint8_t> data) {
    static_cast<void>(offset);
    static_cast<void>(data);
    return false;
  }
  virtual bool intercept_config_write(uint32_t offset, std::span<const uint8_t> data) {
    static_cast<void>(offset);
    static_cast<void>(data);
    return false;
  }
  void guest_error(const std::string& message);  // rate-limited log line naming the function
  // Resets the configuration space to power-on (the caller holds no lock).
  void reset_config();

  ConfigSpace config_;  // set up by the constructor of the derived class, then under mutex
  mutable std::mutex config_mutex_;

 private:
  log::RateLimited guest_errors_{"guest errors", 32};
};

}  // namespace libvmm::pci
