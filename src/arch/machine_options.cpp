// The architectures and their machines' options (arch/machine_option.hpp). Adding an
// architecture: its folder under src/arch/, and one line here.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "libvmm/arch/machine_option.hpp"
#include "machine.hpp"

namespace libvmm {

// Each defined beside its machine (src/arch/<arch>/options.cpp), built for every host.
const std::vector<const MachineOption*>& x86_64_machine_options();
const std::vector<const MachineOption*>& aarch64_machine_options();
const std::vector<const MachineOption*>& riscv64_machine_options();

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> list = {
      {"x86_64", "x86_64", "x86_64 bzImage or vmlinux", "COM1, ttyS0", x86_64_machine_options()},
      {"aarch64", "AArch64", "arm64 Image", "PL011, ttyAMA0", aarch64_machine_options()},
      {"riscv64", "RISC-V", "riscv64 Image", "16550A, ttyS0", riscv64_machine_options()},
  };
  return list;
}

const Architecture* find_architecture(std::string_view name) {
  for (const Architecture& arch : architectures()) {
    if (arch.name == name) return &arch;
  }
  return nullptr;
}

const Architecture& host_architecture() {
  static const Architecture* host = [] {
    const std::string name = make_host_machine()->name();
    const Architecture* arch = find_architecture(name);
    if (arch == nullptr) {
      throw std::logic_error("the machine '" + name + "' is not in the list of architectures");
    }
    return arch;
  }();
  return *host;
}

const MachineOption* find_machine_option(const Architecture& arch, std::string_view element) {
  for (const MachineOption* option : arch.options) {
    if (option->element() == element) return option;
  }
  return nullptr;
}

const MachineOption* find_machine_option(std::string_view element) {
  return find_machine_option(host_architecture(), element);
}

const MachineOption* find_any_machine_option(std::string_view element) {
  if (const MachineOption* own = find_machine_option(element)) return own;
  for (const Architecture& arch : architectures()) {
    if (const MachineOption* other = find_machine_option(arch, element)) return other;
  }
  return nullptr;
}

DeviceSpec machine_option_from_flag(const MachineOption& option, std::string_view value) {
  DeviceSpec spec;
  spec.kind = option.element();
  spec.where = fmt::format("{} {}", option.flag(), value);
  spec.attributes.emplace_back(std::string(option.positional()), std::string(value));
  return spec;
}

std::string machine_option_label(const MachineOption& option, const DeviceSpec& spec) {
  if (!spec.where.empty()) return spec.where;
  return fmt::format("{} {}", option.flag(), spec.value_or(option.positional(), ""));
}

std::string pci_intx_reason(const Architecture& arch, const std::vector<DeviceSpec>& specs) {
  for (const MachineOption* option : arch.options) {
    if (const DeviceSpec* spec = find_option_spec(specs, option->element())) {
      if (std::string why = option->pci_intx_reason(*spec); !why.empty()) return why;
    }
  }
  return {};
}

const DeviceSpec* find_option_spec(const std::vector<DeviceSpec>& specs, std::string_view element) {
  for (const DeviceSpec& spec : specs) {
    if (spec.kind == element) return &spec;
  }
  return nullptr;
}

namespace {

// Why `kind`, which `arch` does not offer, is refused: the architectures that have it
// ("only AArch64 and RISC-V machines boot with a device tree").
std::string not_offered(const Architecture& arch, std::string_view kind) {
  const MachineOption* option = nullptr;
  std::vector<std::string_view> titles;
  for (const Architecture& other : architectures()) {
    if (const MachineOption* own = find_machine_option(other, kind)) {
      if (option == nullptr) option = own;
      titles.push_back(other.title);
    }
  }
  if (option == nullptr) return fmt::format("unknown machine option '{}'", kind);
  std::string who;
  for (size_t i = 0; i < titles.size(); ++i) {
    if (i > 0) who += i + 1 == titles.size() ? " and " : ", ";
    who += titles[i];
  }
  return fmt::format("only {} machines {}; this vmm runs {} guests", who, option->purpose(),
                     arch.name);
}

std::string expected_attributes(const MachineOption& option) {
  std::string out;
  for (const AttributeRule& a : option.attributes()) {
    if (!out.empty()) out += ", ";
    out += a.name;
  }
  return out;
}

}  // namespace

std::vector<std::string> check_machine_options(const Architecture& arch,
                                               const std::vector<DeviceSpec>& specs,
                                               const HostFiles& files) {
  std::vector<std::string> problems;
  std::map<std::string, const DeviceSpec*> seen;
  for (const DeviceSpec& spec : specs) {
    if (!spec.malformed.empty()) {
      problems.push_back(spec.located(spec.malformed));
      continue;
    }
    const MachineOption* option = find_machine_option(arch, spec.kind);
    if (option == nullptr) {
      problems.push_back(spec.located(not_offered(arch, spec.kind)));
      continue;
    }
    if (auto [it, fresh] = seen.emplace(spec.kind, &spec); !fresh) {
      const std::string first = it->second->where;
      problems.push_back(spec.located(
          first.empty() ? "given twice" : fmt::format("given twice (first: {})", first)));
      continue;
    }
    const std::vector<AttributeRule> rules = option->attributes();
    bool shape_ok = true;
    for (const auto& attribute : spec.attributes) {
      const std::string& name = attribute.first;  // not a structured binding: clang 14 lambdas
      if (std::none_of(rules.begin(), rules.end(),
                       [&](const AttributeRule& r) { return r.name == name; })) {
        problems.push_back(spec.located(fmt::format("unknown attribute '{}' (expected {})", name,
                                                    expected_attributes(*option))));
        shape_ok = false;
      }
    }
    for (const AttributeRule& r : rules) {
      if (r.required && !spec.get(r.name)) {
        problems.push_back(spec.located(fmt::format("missing {}", r.name)));
        shape_ok = false;
      }
    }
    if (!shape_ok) continue;
    std::vector<std::string> own;
    option->check(spec, files, own);
    for (const auto& p : own) problems.push_back(spec.located(p));
  }
  return problems;
}

std::vector<std::string> check_machine_options(const std::vector<DeviceSpec>& specs,
                                               const HostFiles& files) {
  return check_machine_options(host_architecture(), specs, files);
}

}  // namespace libvmm
