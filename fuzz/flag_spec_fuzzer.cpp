// The parsers of what users type on the vmm command line: every device kind's flag (--disk,
// --net, --console, --rng) through the device registry, every architecture's machine options
// (--gic, --dtb), character backend specs (--serial), sizes (--memory) and MAC addresses. Each
// must answer bad input with problems that name the flag as the user wrote it, never an
// exception other than UserError, and what one accepts must be usable: a device spec that
// checks out describes itself and becomes a one-VM description that validates and lays out.
//
// Input: a selector byte (which parser), then the flag's value as text.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/machine_option.hpp"
#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/core/device_spec.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/core/vm_config.hpp"
#include "libvmm/system/description.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/net.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

const HostFiles& files = HostFiles::assume_present();

bool located(const std::vector<std::string>& problems, std::string_view where) {
  for (const auto& p : problems) {
    if (!p.starts_with(where) || p.size() <= where.size() + 2) return false;
  }
  return true;
}

// A flag of a device kind: problems located with the flag, or a spec that works.
void device_flag(const VirtioDeviceKind& kind, std::string_view value) {
  const DeviceSpec spec = spec_from_flag(kind, value);
  const auto problems = check_spec(spec, files);
  check(located(problems, kind.flag()));
  for (const auto& [name, v] : spec.attributes) check(!name.empty() || !problems.empty());
  try {
    const DeviceSpec checked = checked_spec_from_flag(kind, value, files);
    check(problems.empty());
    check(!kind.describe(checked, 0, "vm").empty());
    static_cast<void>(kind.claims(checked, files));
    if (kind.element() == "virtio_block") check(!parse_disk_spec(value).path.empty());
    if (kind.element() == "virtio_net") check(!parse_net_spec(value).tap.empty());
  } catch (const UserError& e) {
    // The same first problem; an empty value is shown as '' ("--disk '': missing image path").
    check(!problems.empty() && (value.empty() || problems.front() == e.what()));
    check(std::string_view(e.what()).starts_with(kind.flag()));
    return;
  }
  // What the flags accept, vmm runs: a one-VM description with this device.
  VmConfig config;
  config.kernel = "bzImage";
  config.serial = "none";
  config.devices = {spec, spec};  // two: claims and limits per VM apply
  const SystemDescription d = SystemDescription::from_vm_config(config);
  if (d.problems(files).empty()) check(!d.layout().empty());
}

void machine_option_flag(const Architecture& arch, const MachineOption& option,
                         std::string_view value) {
  const DeviceSpec spec = machine_option_from_flag(option, value);
  const auto problems = check_machine_options(arch, {spec}, files);
  check(located(problems, option.flag()));
  if (problems.empty()) check(!option.describe(spec).empty());
  check(check_machine_options(arch, {spec, spec}, files).size() > problems.size());  // twice
}

void split(std::string_view value, std::string_view positional) {
  std::string error;
  const auto attributes = split_flag_value(value, positional, error);
  if (!error.empty()) return;
  for (size_t i = 0; i < attributes.size(); ++i) {
    for (size_t j = 0; j < i; ++j) check(attributes[i].first != attributes[j].first);
  }
}

void size(std::string_view text) {
  const auto parsed = parse_size(text);
  const bool digits = !text.empty() && text.size() <= 19 &&
                      text.find_first_not_of("0123456789") == std::string_view::npos;
  if (digits) check(parsed == std::stoull(std::string(text)));
  if (parsed) {
    check(parse_size(std::to_string(*parsed)) == parsed);
    check(!format_size(*parsed).empty());
  }
}

void mac(std::string_view text) {
  const auto parsed = parse_mac(text);
  if (!parsed) return;
  const std::string formatted = format_mac(*parsed);
  check(parse_mac(formatted) == parsed && formatted.size() == 17);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size_in_bytes) {
  fuzz::Input in(data, size_in_bytes);
  const uint8_t selector = in.u8();
  const auto rest = in.rest();
  // A command-line argument ends at its first NUL, as argv's strings do.
  std::string_view value(reinterpret_cast<const char*>(rest.data()), rest.size());
  value = value.substr(0, value.find('\0'));

  const auto& kinds = virtio_device_kinds();
  std::vector<std::pair<const Architecture*, const MachineOption*>> options;
  for (const Architecture& arch : architectures()) {
    for (const MachineOption* option : arch.options) options.emplace_back(&arch, option);
  }
  const size_t choice = selector % (kinds.size() + options.size() + 4);
  if (choice < kinds.size()) {
    device_flag(*kinds[choice], value);
    split(value, kinds[choice]->positional());
  } else if (choice < kinds.size() + options.size()) {
    const auto& [arch, option] = options[choice - kinds.size()];
    machine_option_flag(*arch, *option, value);
    // The same option on every other architecture: refused by name, never accepted.
    for (const Architecture& other : architectures()) {
      if (&other == arch || find_machine_option(other, option->element()) != nullptr) continue;
      check(
          !check_machine_options(other, {machine_option_from_flag(*option, value)}, files).empty());
    }
  } else {
    switch (choice - kinds.size() - options.size()) {
      case 0: {
        const std::string why = check_char_backend_spec(value);
        const bool known = value == "stdio" || value == "pty" || value == "none" ||
                           ((value.starts_with("file:") || value.starts_with("socket:")) &&
                            value.find(':') + 1 < value.size());
        check(why.empty() == known);
        break;
      }
      case 1:
        size(value);
        break;
      case 2:
        mac(value);
        break;
      case 3:
        split(value, selector & 0x80 ? "path" : "");
        break;
    }
  }
  return 0;
}
