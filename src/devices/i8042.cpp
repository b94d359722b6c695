#include "libvmm/devices/i8042.hpp"

#include <algorithm>

namespace libvmm {
namespace {

constexpr uint64_t kCommandOffset = I8042::kCommandPort - I8042::kDataPort;

// One port of a device whose offsets span several ports, attached on its own so that the
// ports between stay free for other devices.
class PortWindow : public BusDevice {
 public:
  PortWindow(std::shared_ptr<BusDevice> device, uint64_t offset)
      : device_(std::move(device)), offset_(offset) {}
  std::string name() const override { return device_->name(); }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    device_->read(offset_ + offset, data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    device_->write(offset_ + offset, data);
  }

 private:
  std::shared_ptr<BusDevice> device_;
  uint64_t offset_;
};

}  // namespace

I8042::I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}

void I8042::attach(Bus& pio_bus, const std::shared_ptr<I8042>& device) {
  pio_bus.attach(kDataPort, 1, std::make_shared<PortWindow>(device, 0));
  pio_bus.attach(kCommandPort, 1, std::make_shared<PortWindow>(device, kCommandOffset));
}

// Data reads 0 (nothing from a keyboard); status reads 0 (output empty, input buffer empty).
void I8042::read(uint64_t /*offset*/, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset == kCommandOffset && !data.empty() && data[0] == kPulseResetCommand && on_reset_) {
    on_reset_();
  }
  // Every other command and data byte is accepted and ignored.
}

}  // namespace libvmm
