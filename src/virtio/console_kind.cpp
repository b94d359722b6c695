// virtio_console in the device registry: <virtio_console backend="stdio"/>, --console BACKEND,
// with named ports: port1="org.qemu.guest_agent.0=socket:qga.sock", --console stdio,port1=...
#include <fmt/format.h>

#include <array>
#include <functional>
#include <optional>
#include <set>

#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/virtio/console.hpp"
#include "libvmm/virtio/device_kind.hpp"

namespace libvmm {
namespace {

// port1 .. port8: the console's named ports, in the guest's order (ports 1, 2, ...).
constexpr std::array<std::string_view, VirtioConsole::kMaxNamedPorts> kPortAttributes{
    "port1", "port2", "port3", "port4", "port5", "port6", "port7", "port8"};

struct PortSpec {
  std::string_view attribute;
  std::string_view name;
  std::string_view backend;
  bool split = true;  // the value had its '='
};

// The named ports a spec asks for, each "NAME=BACKEND"; a value without '=' has an empty name.
std::vector<PortSpec> port_specs(const DeviceSpec& spec) {
  std::vector<PortSpec> ports;
  for (std::string_view attribute : kPortAttributes) {
    const auto value = spec.get(attribute);
    if (!value) continue;
    const size_t eq = value->find('=');
    if (eq == std::string_view::npos) {
      ports.push_back({attribute, {}, *value, false});
    } else {
      ports.push_back({attribute, value->substr(0, eq), value->substr(eq + 1)});
    }
  }
  return ports;
}

// The console a checked spec asks for, every backend opened; `label` names it in errors.
std::unique_ptr<VirtioConsole> open_console_spec(const DeviceSpec& spec, const std::string& label,
                                                 const std::function<void()>& on_quit,
                                                 const std::function<void()>& on_shutdown) {
  std::vector<VirtioConsole::NamedPort> ports;
  for (const PortSpec& port : port_specs(spec)) {
    ports.push_back({std::string(port.name),
                     open_char_backend(port.backend, fmt::format("{} {}", label, port.attribute),
                                       on_quit, on_shutdown)});
  }
  return std::make_unique<VirtioConsole>(
      open_char_backend(spec.value_or("backend", ""), label, on_quit, on_shutdown),
      VirtioConsole::kDefaultPendingLimit, std::move(ports));
}

class ConsoleKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "virtio_console"; }
  std::string_view flag() const override { return "--console"; }
  std::string_view help() const override {
    return "virtIO console (hvc0) backend: stdio, file:PATH, socket:PATH, pty or none; "
           "port1=NAME=BACKEND .. port8=...: named ports, the guest's /dev/virtio-ports/NAME";
  }
  std::string_view positional() const override { return "backend"; }
  std::vector<AttributeRule> attributes() const override {
    std::vector<AttributeRule> rules{{"backend", true, false, "backend"}};
    for (std::string_view attribute : kPortAttributes) {
      rules.push_back({attribute, false, false, "port1..port8=NAME=BACKEND"});
    }
    return rules;
  }
  // One device: more channels are its named ports (MULTIPORT), not more devices.
  size_t max_per_vm() const override { return 1; }

  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    if (std::string why = check_char_backend_spec(spec.value_or("backend", "")); !why.empty()) {
      problems.push_back(std::move(why));
    }
    std::set<std::string_view> names;
    for (const PortSpec& port : port_specs(spec)) {
      if (!port.split) {
        problems.push_back(fmt::format("{} '{}': expected {}=NAME=BACKEND", port.attribute,
                                       port.backend, port.attribute));
      } else if (std::string why = VirtioConsole::port_name_problem(port.name); !why.empty()) {
        problems.push_back(
            fmt::format("{}: {} (expected {}=NAME=BACKEND)", port.attribute, why, port.attribute));
      } else if (!names.insert(port.name).second) {
        problems.push_back(
            fmt::format("{}: port name '{}' is given twice", port.attribute, port.name));
      } else if (std::string bad = check_char_backend_spec(port.backend); !bad.empty()) {
        problems.push_back(fmt::format("{} {}: {}", port.attribute, port.name, bad));
      }
    }
  }

  std::vector<Claim> claims(const DeviceSpec& spec, const HostFiles&) const override {
    std::vector<Claim> claims;
    if (spec.value_or("backend", "") == "stdio") claims.push_back({"stdio", "virtio_console"});
    for (const PortSpec& port : port_specs(spec)) {
      if (port.backend == "stdio") {
        claims.push_back({"stdio", fmt::format("virtio_console port {}", port.name)});
      }
    }
    return claims;
  }

  std::vector<HostPath> host_paths(const DeviceSpec& spec) const override {
    std::vector<HostPath> paths;
    if (auto path = char_backend_host_path(spec.value_or("backend", ""))) paths.push_back(*path);
    for (const PortSpec& port : port_specs(spec)) {
      if (auto path = char_backend_host_path(port.backend)) paths.push_back(*path);
    }
    return paths;
  }

  std::string describe(const DeviceSpec& spec, size_t index, std::string_view) const override {
    std::string line =
        fmt::format("virtio-console hvc{} -> {}", index, spec.value_or("backend", ""));
    for (const PortSpec& port : port_specs(spec)) {
      line += fmt::format(", port {} -> {}", port.name, port.backend);
    }
    return line;
  }

  std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                       const DeviceContext& context) const override {
    // Backend errors read "--console stdio: ..." for the flag, "file:line: <virtio_console>
    // stdio: ..." for a description.
    const std::string label =
        spec.where.starts_with(flag()) || spec.where.empty() ? std::string(flag()) : spec.where;
    return open_console_spec(spec, label, context.on_quit, context.on_shutdown);
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

std::unique_ptr<VirtioConsole> open_console(std::string_view value, std::string_view flag,
                                            std::function<void()> on_quit) {
  const VirtioDeviceKind& kind = virtio_console_kind();
  const DeviceSpec spec = checked_spec_from_flag(kind, value, HostFiles::real());
  return open_console_spec(spec, std::string(flag), on_quit, {});
}

}  // namespace libvmm
