// virtio_rng in the device registry: <virtio_rng/>, --rng. Entropy from the host's getrandom.
#include <fmt/format.h>

#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/rng.hpp"

namespace libvmm {
namespace {

class RngKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "virtio_rng"; }
  std::string_view flag() const override { return "--rng"; }
  std::string_view help() const override {
    return "virtIO entropy device (hwrng) fed from the host's getrandom";
  }
  bool flag_value_optional() const override { return true; }
  std::vector<AttributeRule> attributes() const override { return {}; }
  // The guest reads one hwrng at a time; a second device adds nothing.
  size_t max_per_vm() const override { return 1; }
  void check(const DeviceSpec&, const HostFiles&, std::vector<std::string>&) const override {}
  std::string describe(const DeviceSpec&, size_t, std::string_view) const override {
    return "virtio-rng (host getrandom)";
  }
  std::shared_ptr<VirtioDevice> create(const DeviceSpec&, const DeviceContext&) const override {
    return std::make_shared<VirtioRng>();
  }
};

}  // namespace

const VirtioDeviceKind& virtio_rng_kind() {
  static const RngKind kind;
  return kind;
}

}  // namespace libvmm
