// The x86_64 machine's options: <halt in="host|guest"/> / --halt host|guest. Pure code, built for
// every host so that others refuse it by name.
#include "options.hpp"

#include <fmt/format.h>

#include "libvmm/arch/machine_option.hpp"

namespace libvmm {

const std::vector<const MachineOption*>& x86_64_machine_options();

namespace {

// true: in the guest; false: exits to the host; nullopt: neither word.
std::optional<bool> parse_halt(std::string_view text) {
  if (text == "guest") return true;
  if (text == "host") return false;
  return std::nullopt;
}

// Where an idle vCPU waits. By default its HLT exits and KVM puts the vCPU thread to sleep, so
// the host CPU serves others meanwhile; each halt and wake-up is a VM exit. With a host CPU of
// its own per vCPU (the usual setup for latency-bound guests) HLT can stay in the guest: the
// CPU idles in guest mode and an interrupt reaches the guest without a halt exit. PAUSE too,
// whose exits exist to yield an overcommitted host CPU. MWAIT is not offered in CPUID here, so
// it is not among them.
class HaltOptionKind final : public MachineOption {
 public:
  std::string_view element() const override { return "halt"; }
  std::string_view flag() const override { return "--halt"; }
  std::string_view flag_value() const override { return "host|guest"; }
  std::string_view help() const override {
    return "Where an idle vCPU waits: host (HLT exits to KVM, which frees its host CPU; the "
           "default) or guest (HLT and PAUSE stay in the guest, without VM exits; its host CPU "
           "stays busy: for vCPUs with host CPUs of their own)";
  }
  std::string_view positional() const override { return "in"; }
  std::vector<AttributeRule> attributes() const override { return {{"in", true, false, "WHERE"}}; }
  std::string_view purpose() const override { return "can keep a vCPU's HLT in the guest"; }

  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    const std::string where = spec.value_or("in", "");
    if (parse_halt(where)) return;
    // The flag's message already shows the value ("--halt X: ..."); an element's names it.
    problems.push_back(spec.where.starts_with("--")
                           ? std::string("expected host or guest")
                           : fmt::format("in=\"{}\": expected host or guest", where));
  }

  std::string describe(const DeviceSpec& spec) const override {
    return parse_halt(spec.value_or("in", "")).value_or(false)
               ? "in the guest (HLT and PAUSE without VM exits)"
               : "in the host (HLT exits to KVM)";
  }
};

const HaltOptionKind& halt_kind() {
  static const HaltOptionKind kind;
  return kind;
}

}  // namespace

const std::vector<const MachineOption*>& x86_64_machine_options() {
  static const std::vector<const MachineOption*> options = {&halt_kind()};
  return options;
}

namespace x86 {

std::optional<HaltOption> halt_option(const VmConfig& config) {
  const DeviceSpec* spec = find_option_spec(config.machine_options, halt_kind().element());
  if (spec == nullptr) return std::nullopt;
  const auto in_guest = parse_halt(spec->value_or("in", ""));
  if (!in_guest) return std::nullopt;  // refused by validation
  return HaltOption{*in_guest, machine_option_label(halt_kind(), *spec)};
}

}  // namespace x86
}  // namespace libvmm
