// Options a machine offers beyond what every VM has (AArch64: the GIC version, a user's device
// tree), declared by the architecture the way virtIO device kinds declare theirs
// (virtio/device_kind.hpp): a `.system` element with attributes (<gic version="3"/>), a `vmm`
// flag (--gic v3), checks, and a line for `vmm check`. A VmConfig carries them as DeviceSpecs
// (VmConfig::machine_options, kind = the element); the parser, the flags, validation and the
// layout work from the table below, and the machine reads its own when it creates the VM.
//
// Each architecture lists its options in src/arch/<arch>/options.cpp, and src/arch/
// machine_options.cpp lists the architectures: every host knows every architecture's option
// names, so that another architecture's option is refused in one clear line ("--gic v3: only
// AArch64 machines have a GIC; this vmm runs x86_64 guests").
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/device_spec.hpp"
#include "libvmm/virtio/device_kind.hpp"  // AttributeRule

namespace libvmm {

class MachineOption {
 public:
  virtual ~MachineOption() = default;

  virtual std::string_view element() const = 0;  // the .system element: "gic"
  // The vmm flag ("--gic"; "" for none), the syntax of its value ("v2|v3") and its --help text.
  // The flag's value, as is, sets the attribute positional() names.
  virtual std::string_view flag() const { return {}; }
  virtual std::string_view flag_value() const { return "VALUE"; }
  virtual std::string_view help() const = 0;
  virtual std::string_view positional() const = 0;
  virtual std::vector<AttributeRule> attributes() const = 0;
  // What machines of this architecture do with it, for the refusal on other architectures
  // ("only AArch64 machines have a GIC"): "have a GIC".
  virtual std::string_view purpose() const = 0;

  // Problems with a spec's values, each a phrase without location ("expected v2 or v3");
  // unknown and missing attributes are checked before (check_machine_options()).
  virtual void check(const DeviceSpec& spec, const HostFiles& files,
                     std::vector<std::string>& problems) const = 0;
  // Its value for `vmm check`, printed after the element: "v2" ("  gic      v2").
  virtual std::string describe(const DeviceSpec& spec) const = 0;
  // Why PCI functions interrupt through INTx lines on a machine with this value (it gives them
  // no MSIs), for `vmm check` and its plan: "a GICv2 has no ITS". Empty: they get MSI-X.
  virtual std::string pci_intx_reason(const DeviceSpec& /*spec*/) const { return {}; }
};

// An architecture libvmm knows and the options its machine offers.
struct Architecture {
  std::string_view name;     // as its machine calls itself: "aarch64"
  std::string_view title;    // in messages: "AArch64"
  std::string_view kernel;   // the kernel image its machine boots: "arm64 Image"
  std::string_view console;  // its serial console as users know it: "PL011, ttyAMA0"
  std::vector<const MachineOption*> options;
};

// Every architecture, and the one this library's machine is (the host's).
const std::vector<Architecture>& architectures();
const Architecture& host_architecture();
const Architecture* find_architecture(std::string_view name);

// Why PCI functions get INTx lines only on a machine of `arch` with these options, where an
// option decides it (MachineOption::pci_intx_reason: "a GICv2 has no ITS"); empty where they
// get MSI-X, or where the host decides (vmm asks for MSI-X).
std::string pci_intx_reason(const Architecture& arch, const std::vector<DeviceSpec>& specs);

// The option `element` of `arch` (default: the host's); null when it offers none.
const MachineOption* find_machine_option(std::string_view element);
const MachineOption* find_machine_option(const Architecture& arch, std::string_view element);
// The host's option `element`, or else the first other architecture's: what the parser reads.
const MachineOption* find_any_machine_option(std::string_view element);

// A spec from a flag's value: `--dtb board.dtb` is machine_option_from_flag(dtb, "board.dtb")
// (the value is the positional attribute, commas and all).
DeviceSpec machine_option_from_flag(const MachineOption& option, std::string_view value);

// Every problem with a VM's machine options on `arch` (default: the host's), each located with
// its spec's `where`: another architecture's option, an unknown one, one given twice, unknown or
// missing attributes, then the option's own check().
std::vector<std::string> check_machine_options(const Architecture& arch,
                                               const std::vector<DeviceSpec>& specs,
                                               const HostFiles& files);
std::vector<std::string> check_machine_options(const std::vector<DeviceSpec>& specs,
                                               const HostFiles& files);

// The spec of option `element` among `specs` (a VM's machine_options), or null.
const DeviceSpec* find_option_spec(const std::vector<DeviceSpec>& specs, std::string_view element);

// Where a spec of `option` was written, for the machine's messages: its `where`
// ("f.system:9: <gic>", "--gic v3"), or "--flag VALUE" for a spec built in code.
std::string machine_option_label(const MachineOption& option, const DeviceSpec& spec);

}  // namespace libvmm
