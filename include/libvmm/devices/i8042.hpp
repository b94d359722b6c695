// The i8042 keyboard controller, reduced to what a guest without a keyboard needs: an idle
// controller (status 0: no output data, input buffer empty, which Linux's reboot path waits
// for) and the reset line (command 0xFE), through which Linux reboots a PC.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "libvmm/core/bus.hpp"

namespace libvmm {

class I8042 : public BusDevice {
 public:
  static constexpr uint64_t kDataPort = 0x60;
  static constexpr uint64_t kCommandPort = 0x64;  // status on read, command on write
  static constexpr uint8_t kPulseResetCommand = 0xFE;

  // `on_reset` runs on the vCPU thread that wrote the reset command.
  explicit I8042(std::function<void()> on_reset);

  // Attaches `device` at kDataPort and kCommandPort, one byte each, leaving 0x61-0x63 free
  // (0x61 is system control port B, which KVM's in-kernel PIT handles).
  static void attach(Bus& pio_bus, const std::shared_ptr<I8042>& device);

  // Offsets are relative to kDataPort: 0 is the data port, 4 the status/command port.
  std::string name() const override { return "i8042"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const std::function<void()> on_reset_;
};

}  // namespace libvmm
