// Address-range dispatch of guest MMIO and port-I/O accesses to devices.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace libvmm {

// A device register block. Offsets are relative to where it is attached on the bus.
// Called from vCPU threads (several at once with SMP): implementations lock their own state.
class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual std::string name() const = 0;
  // `data.size()` is 1, 2, 4 or 8. Reads must fill all of `data`.
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
 public:
  struct Entry {
    uint64_t base = 0;
    uint64_t size = 0;
    std::shared_ptr<BusDevice> device;
    uint64_t end() const { return base + size; }
  };

  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Throws UserError naming both devices if the range overlaps another device's.
  void attach(uint64_t base, uint64_t size, std::shared_ptr<BusDevice> device);

  // The entry whose range contains [addr, addr+len), or nullptr.
  const Entry* find(uint64_t addr, uint64_t len = 1) const;

  // Dispatch. Returns false when no device covers the whole access.
  bool read(uint64_t addr, std::span<uint8_t> data) const;
  bool write(uint64_t addr, std::span<const uint8_t> data) const;

  const std::vector<Entry>& entries() const { return entries_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::vector<Entry> entries_;  // sorted by base
};

}  // namespace libvmm
