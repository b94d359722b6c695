// virtio_console in the device registry: <virtio_console backend="stdio"/>, --console BACKEND.
#include <fmt/format.h>

#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/virtio/console.hpp"
#include "libvmm/virtio/device_kind.hpp"

namespace libvmm {
namespace {

class ConsoleKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "virtio_console"; }
  std::string_view flag() const override { return "--console"; }
  std::string_view help() const override {
    return "virtIO console (hvc0) backend: stdio, file:PATH, socket:PATH, pty or none";
  }
  std::string_view positional() const override { return "backend"; }
  std::vector<AttributeRule> attributes() const override {
    return {{"backend", true, false, "backend"}};
  }
  // One port without MULTIPORT: a second console would be a second device nobody asked for.
  size_t max_per_vm() const override { return 1; }

  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    if (std::string why = check_char_backend_spec(spec.value_or("backend", "")); !why.empty()) {
      problems.push_back(std::move(why));
    }
  }

  std::vector<Claim> claims(const DeviceSpec& spec, const HostFiles&) const override {
    if (spec.value_or("backend", "") == "stdio") return {{"stdio", "virtio_console"}};
    return {};
  }

  std::vector<HostPath> host_paths(const DeviceSpec& spec) const override {
    if (auto path = char_backend_host_path(spec.value_or("backend", ""))) return {*path};
    return {};
  }

  std::string describe(const DeviceSpec& spec, size_t index, std::string_view) const override {
    return fmt::format("virtio-console hvc{} -> {}", index, spec.value_or("backend", ""));
  }

  std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                       const DeviceContext& context) const override {
    // Backend errors read "--console stdio: ..." for the flag, "file:line: <virtio_console>
    // stdio: ..." for a description.
    const std::string label =
        spec.where.starts_with(flag()) || spec.where.empty() ? std::string(flag()) : spec.where;
    return std::make_shared<VirtioConsole>(open_char_backend(spec.value_or("backend", ""), label,
                                                             context.on_quit, context.on_shutdown));
  }

  void start(VirtioDevice& device, EventLoop& loop) const override {
    static_cast<VirtioConsole&>(device).start(loop);
  }
};

}  // namespace

const VirtioDeviceKind& virtio_console_kind() {
  static const ConsoleKind kind;
  return kind;
}

}  // namespace libvmm
