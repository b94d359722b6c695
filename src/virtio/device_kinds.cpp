// The registry of virtIO device kinds. Adding a device: its files, and one line here.
#include <fmt/format.h>

#include <algorithm>

#include "libvmm/core/error.hpp"
#include "libvmm/virtio/device_kind.hpp"

namespace libvmm {

// Each defined beside its device (src/virtio/*_kind.cpp).
const VirtioDeviceKind& virtio_block_kind();
const VirtioDeviceKind& virtio_console_kind();
const VirtioDeviceKind& virtio_net_kind();
const VirtioDeviceKind& virtio_rng_kind();
const VirtioDeviceKind& virtio_sound_kind();
const VirtioDeviceKind& virtio_fs_kind();
const VirtioDeviceKind& vhost_user_kind();

const std::vector<const VirtioDeviceKind*>& virtio_device_kinds() {
  static const std::vector<const VirtioDeviceKind*> kinds = {
      &virtio_block_kind(), &virtio_console_kind(), &virtio_net_kind(), &virtio_rng_kind(),
      &virtio_sound_kind(), &virtio_fs_kind(),      &vhost_user_kind(),
  };
  return kinds;
}

const VirtioDeviceKind* find_virtio_device_kind(std::string_view element) {
  for (const VirtioDeviceKind* kind : virtio_device_kinds()) {
    if (kind->element() == element) return kind;
  }
  return nullptr;
}

std::vector<AttributeRule> device_attributes(const VirtioDeviceKind& kind) {
  std::vector<AttributeRule> rules = kind.attributes();
  rules.push_back({"transport", false, false, "transport=pci|mmio"});
  return rules;
}

bool uses_pci_transport(const DeviceSpec& spec, bool pci_by_default) {
  const auto transport = spec.get("transport");
  return transport ? *transport == "pci" : pci_by_default;
}

namespace {

std::string expected_options(const VirtioDeviceKind& kind) {
  std::string out;
  std::string_view previous;
  for (const AttributeRule& a : device_attributes(kind)) {
    // Attributes of one family share their syntax (port1..port8=...): named once.
    if (a.name == kind.positional() || (!a.flag_syntax.empty() && a.flag_syntax == previous)) {
      continue;
    }
    previous = a.flag_syntax;
    out += out.empty() ? "" : ", ";
    out += a.flag_syntax.empty() ? fmt::format("{}=VALUE", a.name) : std::string(a.flag_syntax);
  }
  return out;
}

}  // namespace

std::vector<HostPath> VirtioDeviceKind::host_paths(const DeviceSpec& spec) const {
  std::vector<HostPath> paths;
  for (const AttributeRule& rule : attributes()) {
    if (!rule.is_path) continue;
    if (auto value = spec.get(rule.name); value && !value->empty()) {
      paths.push_back({std::filesystem::path(*value), HostPath::Use::read, {}});
    }
  }
  return paths;
}

std::vector<std::string> check_spec(const DeviceSpec& spec, const HostFiles& files) {
  std::vector<std::string> problems;
  if (!spec.malformed.empty()) {
    problems.push_back(spec.located(spec.malformed));
    return problems;
  }
  const VirtioDeviceKind* kind = find_virtio_device_kind(spec.kind);
  if (kind == nullptr) {
    problems.push_back(spec.located(fmt::format("unknown device kind '{}'", spec.kind)));
    return problems;
  }
  const std::vector<AttributeRule> rules = device_attributes(*kind);
  bool shape_ok = true;
  for (const auto& attribute : spec.attributes) {
    const std::string& name = attribute.first;
    const bool known = std::any_of(rules.begin(), rules.end(),
                                   [&](const AttributeRule& r) { return r.name == name; });
    if (!known) {
      const std::string expected = expected_options(*kind);
      problems.push_back(spec.located(
          expected.empty() ? fmt::format("unknown option '{}' (it takes none)", name)
                           : fmt::format("unknown option '{}' (expected {})", name, expected)));
      shape_ok = false;
    }
  }
  for (const AttributeRule& r : rules) {
    if (r.required && !spec.get(r.name)) {
      problems.push_back(
          spec.located(fmt::format("missing {}", r.flag_syntax.empty() ? r.name : r.flag_syntax)));
      shape_ok = false;
    }
  }
  if (!shape_ok) return problems;
  if (const auto transport = spec.get("transport");
      transport && *transport != "pci" && *transport != "mmio") {
    problems.push_back(
        spec.located(fmt::format("transport '{}': expected pci or mmio", *transport)));
    return problems;
  }
  std::vector<std::string> own;
  kind->check(spec, files, own);
  for (const auto& p : own) problems.push_back(spec.located(p));
  return problems;
}

DeviceSpec spec_from_flag(const VirtioDeviceKind& kind, std::string_view value) {
  DeviceSpec spec;
  spec.kind = kind.element();
  spec.where = value.empty() ? std::string(kind.flag()) : fmt::format("{} {}", kind.flag(), value);
  spec.attributes = split_flag_value(value, kind.positional(), spec.malformed);
  return spec;
}

DeviceSpec checked_spec_from_flag(const VirtioDeviceKind& kind, std::string_view value,
                                  const HostFiles& files) {
  DeviceSpec spec = spec_from_flag(kind, value);
  if (value.empty()) spec.where = fmt::format("{} ''", kind.flag());
  if (auto problems = check_spec(spec, files); !problems.empty()) {
    throw UserError(problems.front());
  }
  return spec;
}

std::vector<OrderedSpec> in_device_order(const std::vector<DeviceSpec>& specs) {
  std::vector<OrderedSpec> out;
  for (const VirtioDeviceKind* kind : virtio_device_kinds()) {
    size_t index = 0;
    for (const DeviceSpec& spec : specs) {
      if (spec.kind == kind->element()) out.push_back({&spec, kind, index++});
    }
  }
  return out;
}

bool devices_need_shared_ram(const std::vector<DeviceSpec>& specs) {
  for (const DeviceSpec& spec : specs) {
    const VirtioDeviceKind* kind = find_virtio_device_kind(spec.kind);
    if (kind && kind->needs_shared_ram()) return true;
  }
  return false;
}

}  // namespace libvmm
