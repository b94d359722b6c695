#include "device_status.hpp"

#define VIRTIO_RING_NO_LEGACY

#include <fmt/format.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {
namespace {

// Feature bits 28..40 describe the transport and rings; the transport decides those.
constexpr uint64_t kTransportFeatureMask =
    (feature_bit(VIRTIO_TRANSPORT_F_END) - 1) & ~(feature_bit(VIRTIO_TRANSPORT_F_START) - 1);
constexpr uint64_t kTransportFeatures = feature_bit(VIRTIO_F_VERSION_1) |
                                        feature_bit(VIRTIO_RING_F_INDIRECT_DESC) |
                                        feature_bit(VIRTIO_RING_F_EVENT_IDX);

// The bits set in `features`, for a message: "17", "11 or 12".
std::string bit_list(uint64_t features) {
  std::string list;
  for (unsigned bit = 0; bit < 64; ++bit) {
    if (!(features & feature_bit(bit))) continue;
    list += fmt::format("{}{}", list.empty() ? "" : " or ", bit);
  }
  return list;
}

const FeatureRequirement* first_unmet(uint64_t features,
                                      std::span<const FeatureRequirement> requirements) {
  for (const FeatureRequirement& r : requirements) {
    if ((features & feature_bit(r.feature)) && !(features & r.needs_any)) return &r;
  }
  return nullptr;
}

}  // namespace

uint64_t offered_features(VirtioDevice& device) {
  ExternalQueues* external = device.external_queues();
  const uint64_t transport =
      external != nullptr ? external->transport_features() : kTransportFeatures;
  const uint64_t own = without_unmet_requirements(device.device_features() & ~kTransportFeatureMask,
                                                  device.feature_requirements());
  return own | (kTransportFeatures & transport);
}

uint64_t without_unmet_requirements(uint64_t features,
                                    std::span<const FeatureRequirement> requirements) {
  // Dropping a feature may leave another without what it needs (ECN needs TSO4, which needs
  // CSUM): each pass drops at least one bit, so this ends within 64 passes.
  while (const FeatureRequirement* unmet = first_unmet(features, requirements)) {
    features &= ~feature_bit(unmet->feature);
  }
  return features;
}

bool features_acceptable(uint64_t accepted, bool accepted_beyond_64, uint64_t offered,
                         std::span<const FeatureRequirement> requirements, std::string& why) {
  const FeatureRequirement* unmet = first_unmet(accepted, requirements);
  if (accepted_beyond_64) {
    why = "the driver accepted feature bits above 63, which the device does not offer";
  } else if (accepted & ~offered) {
    why = fmt::format("the driver accepted features {:#x} that the device does not offer",
                      accepted & ~offered);
  } else if (!(accepted & feature_bit(VIRTIO_F_VERSION_1))) {
    why = "the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)";
  } else if (unmet != nullptr) {
    why =
        fmt::format("the driver accepted feature bit {} without feature bit {}, which it requires",
                    unmet->feature, bit_list(unmet->needs_any));
  } else {
    return true;
  }
  return false;
}

StatusWrite write_device_status(uint8_t old, uint32_t value, std::string_view register_name,
                                const std::function<bool(std::string& why)>& features_ok,
                                const std::function<void(const std::string&)>& guest_error) {
  // Only the device sets NEEDS_RESET, and only a reset clears bits (spec §2.1.1).
  auto next = static_cast<uint8_t>((value & 0xff & ~VIRTIO_CONFIG_S_NEEDS_RESET) |
                                   (old & VIRTIO_CONFIG_S_NEEDS_RESET));
  if (old & ~next) {
    guest_error(fmt::format("{} {:#x} clears bits of {:#x} without a reset; kept them",
                            register_name, value, old));
    next |= old;
  }
  const uint8_t added = next & ~old;
  if (added & VIRTIO_CONFIG_S_FEATURES_OK) {
    std::string why;
    if (!features_ok(why)) {
      guest_error("FEATURES_OK refused: " + why);
      // The driver reads the status back and sees the refusal.
      next &= static_cast<uint8_t>(~VIRTIO_CONFIG_S_FEATURES_OK);
    }
  }
  bool activate = false;
  bool tell_needs_reset = false;
  if (added & VIRTIO_CONFIG_S_DRIVER_OK) {
    if (!(next & VIRTIO_CONFIG_S_FEATURES_OK)) {
      guest_error("DRIVER_OK without FEATURES_OK; ignored");
      next &= static_cast<uint8_t>(~VIRTIO_CONFIG_S_DRIVER_OK);
    } else {
      activate = !(next & VIRTIO_CONFIG_S_NEEDS_RESET);
      tell_needs_reset = !activate;
    }
  }
  return {next, activate, tell_needs_reset};
}

bool valid_config_access(uint64_t offset, uint64_t size, uint64_t config_size) {
  return (size == 1 || size == 2 || size == 4 || size == 8) && offset % size == 0 &&
         offset <= config_size && size <= config_size - offset;
}

PausedIo::PausedIo(VirtioDevice& device, bool pause) : device_(pause ? &device : nullptr) {
  if (device_ != nullptr) device_->pause_io();
}

PausedIo::~PausedIo() {
  if (device_ != nullptr) device_->resume_io();
}

}  // namespace libvmm
