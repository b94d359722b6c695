// What every virtIO transport does the same way, whatever its registers look like: the
// features it offers, the FEATURES_OK check, and the driver's writes to the device status
// (virtIO 1.2 §2.1, §3.1.1). Internal to the transports (virtio-mmio, virtio-pci).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace libvmm {

class VirtioDevice;
struct FeatureRequirement;

// The features a transport offers for `device`: its device-specific bits, less any whose
// requirements it does not offer (VirtioDevice::feature_requirements()), and the transport bits
// its queues can have (all of ours, or what the process serving them supports).
uint64_t offered_features(VirtioDevice& device);

// `features` less each feature whose requirement is not among them (and what needed those).
uint64_t without_unmet_requirements(uint64_t features,
                                    std::span<const FeatureRequirement> requirements);

// Whether the features a driver accepted can be taken at FEATURES_OK: offered, VERSION_1 among
// them, each with what it requires (virtIO 1.2 §2.2.1); `why` says why not.
bool features_acceptable(uint64_t accepted, bool accepted_beyond_64, uint64_t offered,
                         std::span<const FeatureRequirement> requirements, std::string& why);

struct StatusWrite {
  uint8_t status;  // the status the device now has
  bool activate;   // DRIVER_OK was just set: the device starts serving its queues
  // DRIVER_OK was just set on a device already needing a reset (a queue it could not take):
  // the driver is told as it would be had the need come after (a config change interrupt).
  bool tell_needs_reset = false;
};
// The driver writes `value` (not 0, which is a reset) to a status holding `old`, through the
// register `register_name` ("Status", "device_status"): only the device sets NEEDS_RESET and only
// a reset clears bits; FEATURES_OK is refused unless `features_ok()` agrees; DRIVER_OK needs
// FEATURES_OK. Each refusal goes to `guest_error`.
StatusWrite write_device_status(uint8_t old, uint32_t value, std::string_view register_name,
                                const std::function<bool(std::string& why)>& features_ok,
                                const std::function<void(const std::string&)>& guest_error);

// Whether a driver's access of `size` bytes at `offset` of a device's configuration space of
// `config_size` bytes is one the transport takes: 1, 2, 4 or 8 bytes, naturally aligned, inside.
bool valid_config_access(uint64_t offset, uint64_t size, uint64_t config_size);

// pause_io() / resume_io() around a register write that may change what a device's I/O thread
// depends on (virtio_device.hpp): taken before the transport's lock, released after it.
class PausedIo {
 public:
  PausedIo(VirtioDevice& device, bool pause);
  ~PausedIo();
  PausedIo(const PausedIo&) = delete;
  PausedIo& operator=(const PausedIo&) = delete;

 private:
  VirtioDevice* device_;
};

}  // namespace libvmm
