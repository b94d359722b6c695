// The `.system` XML parser: pugixml reads the document; this file maps elements and attributes
// onto a SystemDescription, noting every unknown or malformed piece with its line and going on,
// so that one run reports every problem.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <pugixml.hpp>
#include <set>

#include "libvmm/arch/machine_option.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/system/description.hpp"
#include "libvmm/virtio/device_kind.hpp"

namespace libvmm {
namespace {

// What an element may carry: its attributes (required ones marked) and child elements.
struct ElementRule {
  std::vector<std::string_view> required;
  std::vector<std::string_view> optional;
  std::vector<std::string_view> children;
  bool text = false;  // takes text content (<cmdline>)
};

// The fixed elements; each registered device kind adds its own (virtio/device_kind.hpp), and
// each architecture's machine options theirs (arch/machine_option.hpp): every architecture's,
// so that another architecture's option is read, then refused by name by the validator.
std::map<std::string_view, ElementRule> make_rules() {
  std::map<std::string_view, ElementRule> table = {
      {"system", {{}, {}, {"memory_region", "protection_domain", "channel"}}},
      {"memory_region", {{"name", "size"}, {"page_size", "phys_addr", "path", "shm"}, {}}},
      // Microkit's scheduling attributes are accepted so its descriptions read unchanged; on
      // Linux only cpu has an effect (docs/SYSTEM_FORMAT.md, "Coming from libvmm / Microkit").
      {"protection_domain",
       {{"name"},
        {"priority", "budget", "period", "passive", "stack_size", "cpu"},
        {"map", "virtual_machine", "program_image", "irq", "ioport"}}},
      {"program_image", {{"path"}, {}, {}}},
      // A protection domain's <irq> is Microkit's (an interrupt delivered to the VMM); the
      // virtual machine's is ours (a host event source raising a guest interrupt).
      {"protection_domain/irq", {{}, {"irq", "id", "pin", "vector", "ioapic", "trigger"}, {}}},
      {"ioport", {{"addr", "size"}, {"id"}, {}}},
      {"channel", {{}, {}, {}}},  // refused as a whole (its <end>s unchecked)
      {"map", {{"mr"}, {"vaddr", "size", "perms", "setvar_vaddr", "setvar_size", "cached"}, {}}},
      {"virtual_machine",
       {{"name"},
        {"id", "priority", "budget", "period", "ram", "strict_faults"},
        {"map", "vcpus", "vcpu", "kernel", "initrd", "cmdline", "serial", "irq", "vfio"}}},
      {"vcpus", {{"count"}, {}, {}}},
      {"vcpu", {{"id"}, {"cpu", "setvar_id"}, {}}},
      {"kernel", {{"path"}, {}, {}}},
      {"initrd", {{"path"}, {}, {}}},
      {"cmdline", {{}, {}, {}, true}},
      {"serial", {{"backend"}, {}, {}}},
      {"irq", {{"irq"}, {"eventfd", "fifo", "socket"}, {}}},
      {"vfio", {{"device"}, {}, {}}},
  };
  for (const VirtioDeviceKind* kind : virtio_device_kinds()) {
    ElementRule rule;
    for (const AttributeRule& a : device_attributes(*kind)) {
      (a.required ? rule.required : rule.optional).push_back(a.name);
    }
    table.emplace(kind->element(), std::move(rule));
    table["virtual_machine"].children.push_back(kind->element());
  }
  for (const Architecture& arch : architectures()) {
    for (const MachineOption* named : arch.options) {
      if (table.contains(named->element())) continue;  // offered by several architectures
      const MachineOption* option = find_any_machine_option(named->element());
      ElementRule rule;
      for (const AttributeRule& a : option->attributes()) {
        (a.required ? rule.required : rule.optional).push_back(a.name);
      }
      table.emplace(option->element(), std::move(rule));
      table["virtual_machine"].children.push_back(option->element());
    }
  }
  return table;
}

const std::map<std::string_view, ElementRule>& rules() {
  static const std::map<std::string_view, ElementRule> table = make_rules();
  return table;
}

class Parser {
 public:
  Parser(std::string_view xml, const std::string& file, std::vector<std::string>& problems)
      : xml_(xml), file_(file), problems_(problems) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < xml.size(); ++i) {
      if (xml[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  SystemDescription parse() {
    SystemDescription d;
    d.file = file_;
    pugi::xml_document doc;
    const pugi::xml_parse_result result = doc.load_buffer(
        xml_.data(), xml_.size(), pugi::parse_default | pugi::parse_ws_pcdata_single);
    if (!result) {
      problem(line_of(static_cast<size_t>(std::max<ptrdiff_t>(result.offset, 0))),
              fmt::format("not well-formed XML: {}", result.description()));
      return d;
    }
    pugi::xml_node root = doc.document_element();
    if (!root || std::string_view(root.name()) != "system") {
      problem(root ? at(root) : 1,
              fmt::format("the root element must be <system>, not <{}>", root ? root.name() : ""));
      return d;
    }
    // pugixml takes more than one top-level element, and drops text after the root, without
    // a word; XML does not, and what came after </system> would have been left out unseen.
    pugi::xml_node next = root.next_sibling();
    while (next && next.type() != pugi::node_element) next = next.next_sibling();
    if (next) {
      problem(at(next),
              fmt::format("<{}> after </system>: a description has one root element", next.name()));
    } else if (const std::optional<size_t> text = text_outside_root()) {
      problem(line_of(*text), "text outside <system>");
    }
    check_shape(root);
    for (pugi::xml_node n : root.children()) {
      if (n.type() != pugi::node_element) continue;
      const std::string_view name = n.name();
      if (name == "memory_region") d.regions.push_back(region(n));
      if (name == "protection_domain") d.domains.push_back(domain(n));
      if (name == "channel") {
        problem(at(n),
                "<channel>: seL4 notifications between protection domains have no place on KVM, "
                "where the one vmm process is the VMM and its device backends are the drivers "
                "(<serial>, <virtio_block>, <virtio_net>, <virtio_console>; or vhost-user device "
                "processes); remove it (a host program interrupts a guest through a virtual "
                "machine's <irq irq=\"N\" fifo=\"PATH\"/>, socket or eventfd)");
      }
    }
    return d;
  }

 private:
  // Where the file has text outside the root element (pugixml drops it from a document; a
  // fragment keeps it, and leaves comments and processing instructions out as they should be).
  std::optional<size_t> text_outside_root() const {
    pugi::xml_document fragment;
    if (!fragment.load_buffer(xml_.data(), xml_.size(),
                              pugi::parse_default | pugi::parse_fragment)) {
      return std::nullopt;
    }
    for (pugi::xml_node n : fragment.children()) {
      if (n.type() != pugi::node_pcdata && n.type() != pugi::node_cdata) continue;
      const size_t text = std::string_view(n.value()).find_first_not_of(" \t\r\n");
      if (text != std::string_view::npos) {
        return static_cast<size_t>(std::max<ptrdiff_t>(n.offset_debug(), 0)) + text;
      }
    }
    return std::nullopt;
  }

  uint32_t line_of(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    return static_cast<uint32_t>(it - line_starts_.begin());
  }
  uint32_t at(pugi::xml_node n) const {
    return line_of(static_cast<size_t>(std::max<ptrdiff_t>(n.offset_debug(), 0)));
  }
  SourceLocation where(pugi::xml_node n) const { return {file_, at(n)}; }

  void problem(uint32_t line, const std::string& what) {
    problems_.push_back(fmt::format("{}:{}: {}", file_, line, what));
  }

  // The rule for `n`: "parent/name" when the element means something else there, else "name".
  static const ElementRule* rule_of(pugi::xml_node n) {
    const std::string qualified = std::string(n.parent().name()) + "/" + n.name();
    if (auto it = rules().find(qualified); it != rules().end()) return &it->second;
    if (auto it = rules().find(n.name()); it != rules().end()) return &it->second;
    return nullptr;
  }

  // Unknown attributes and children, missing required attributes, stray text.
  void check_shape(pugi::xml_node n) {
    const ElementRule* found = rule_of(n);
    if (found == nullptr) return;                         // reported by the parent
    if (std::string_view(n.name()) == "channel") return;  // refused whole by the parser
    const ElementRule& rule = *found;
    auto listed = [](const std::vector<std::string_view>& list, std::string_view s) {
      return std::find(list.begin(), list.end(), s) != list.end();
    };
    std::vector<std::string_view> seen;
    for (pugi::xml_attribute a : n.attributes()) {
      if (!listed(rule.required, a.name()) && !listed(rule.optional, a.name())) {
        problem(at(n), fmt::format("unknown attribute '{}' on <{}>", a.name(), n.name()));
      } else if (listed(seen, a.name())) {
        // Not well-formed XML, which pugixml takes; the first value would have won unseen.
        problem(at(n), fmt::format("attribute '{}' given twice on <{}>", a.name(), n.name()));
      }
      seen.push_back(a.name());
    }
    for (std::string_view required : rule.required) {
      if (!n.attribute(std::string(required).c_str())) {
        problem(at(n), fmt::format("<{}> needs the attribute '{}'", n.name(), required));
      }
    }
    for (pugi::xml_node c : n.children()) {
      if (c.type() == pugi::node_pcdata || c.type() == pugi::node_cdata) {
        if (!rule.text &&
            std::string_view(c.value()).find_first_not_of(" \t\r\n") != std::string_view::npos) {
          problem(at(n), fmt::format("<{}> takes no text", n.name()));
        }
        continue;
      }
      if (c.type() != pugi::node_element) continue;
      if (!listed(rule.children, c.name())) {
        problem(at(c), rules().contains(c.name())
                           ? fmt::format("<{}> does not belong in <{}>", c.name(), n.name())
                           : fmt::format("unknown element <{}> in <{}>", c.name(), n.name()));
        continue;
      }
      check_shape(c);
    }
  }

  std::string text(pugi::xml_node n, const char* attr) { return n.attribute(attr).value(); }

  // A host path: ${VAR} is replaced by the environment variable, and a relative path is taken
  // relative to the description file's folder, so a description can travel with its images.
  std::string path(pugi::xml_node n, const char* attr) { return path(n, attr, text(n, attr)); }
  // The same for `raw`, a host path that is part of attribute `attr`'s value.
  std::string path(pugi::xml_node n, const char* attr, const std::string& raw) {
    std::string out;
    for (size_t i = 0; i < raw.size();) {
      if (raw.compare(i, 2, "${") != 0) {
        out += raw[i++];
        continue;
      }
      const size_t close = raw.find('}', i);
      if (close == std::string::npos) {
        problem(at(n), fmt::format("<{}> {}=\"{}\": unterminated ${{", n.name(), attr, raw));
        return raw;
      }
      const std::string var = raw.substr(i + 2, close - i - 2);
      const char* value = std::getenv(var.c_str());
      if (value == nullptr) {
        problem(at(n), fmt::format("<{}> {}=\"{}\": the environment variable {} is not set",
                                   n.name(), attr, raw, var));
        return raw;
      }
      out += value;
      i = close + 1;
    }
    if (out.empty()) return out;
    std::filesystem::path p(out);
    if (p.is_relative() && !file_.empty()) p = std::filesystem::path(file_).parent_path() / p;
    return p.string();
  }

  std::optional<uint64_t> number(pugi::xml_node n, const char* attr) {
    pugi::xml_attribute a = n.attribute(attr);
    if (!a) return std::nullopt;
    if (auto v = parse_size(a.value())) return v;
    problem(at(n), fmt::format("<{}> {}=\"{}\" is not a number or size (e.g. 4096, 0x10_000_000, "
                               "256M)",
                               n.name(), attr, a.value()));
    return std::nullopt;
  }

  // Numbers that are counts or IDs: no size suffixes, and they fit in 32 bits.
  std::optional<uint32_t> small_number(pugi::xml_node n, const char* attr) {
    pugi::xml_attribute a = n.attribute(attr);
    if (!a) return std::nullopt;
    const auto v = parse_number(a.value());
    if (!v || *v > UINT32_MAX) {
      problem(at(n), fmt::format("<{}> {}=\"{}\" is not a number from 0 to {}", n.name(), attr,
                                 a.value(), UINT32_MAX));
      return std::nullopt;
    }
    return static_cast<uint32_t>(*v);
  }

  bool boolean(pugi::xml_node n, const char* attr) {
    const std::string_view v = n.attribute(attr).value();
    if (v.empty() || v == "false") return false;
    if (v == "true") return true;
    problem(at(n), fmt::format("<{}> {}=\"{}\" must be true or false", n.name(), attr, v));
    return false;
  }

  MemoryRegionSpec region(pugi::xml_node n) {
    MemoryRegionSpec r;
    r.where = where(n);
    r.name = text(n, "name");
    r.size = number(n, "size").value_or(0);
    if (n.attribute("size") && r.size == 0 && parse_size(n.attribute("size").value())) {
      problem(at(n), fmt::format("memory region '{}': size must be greater than zero", r.name));
    }
    if (auto p = number(n, "page_size")) r.page_size = *p;
    r.phys_addr = number(n, "phys_addr");
    if (n.attribute("path") && n.attribute("shm")) {
      problem(at(n), "<memory_region> takes either path or shm, not both");
    }
    if (n.attribute("path")) {
      r.backing = MemoryRegionSpec::Backing::host_file;
      r.path = path(n, "path");
    } else if (n.attribute("shm")) {
      r.backing = MemoryRegionSpec::Backing::shm;
      r.path = text(n, "shm");
    }
    return r;
  }

  MapSpec map(pugi::xml_node n) {
    const size_t reported = problems_.size();
    MapSpec m;
    m.where = where(n);
    m.region = text(n, "mr");
    if (n.attribute("mr") && m.region.empty())
      problem(at(n), "<map> mr=\"\" names no memory region");
    m.vaddr = number(n, "vaddr");
    m.size = number(n, "size");
    if (n.attribute("perms")) m.perms = text(n, "perms");
    m.setvar_vaddr = text(n, "setvar_vaddr");
    m.malformed = problems_.size() != reported;
    return m;
  }

  ProtectionDomainSpec domain(pugi::xml_node n) {
    ProtectionDomainSpec pd;
    pd.where = where(n);
    pd.name = text(n, "name");
    pd.cpu = small_number(n, "cpu");
    for (const char* attr : {"priority", "budget", "period", "stack_size"}) {
      (void)number(n, attr);  // Microkit-only: checked as numbers, no effect
    }
    (void)boolean(n, "passive");
    for (pugi::xml_node c : n.children()) {
      const std::string_view name = c.name();
      if (name == "map") pd.maps.push_back(map(c));
      if (name == "virtual_machine") pd.vms.push_back(vm(c));
      if (name == "program_image") pd.program_image = text(c, "path");
      if (name == "irq") {
        pd.irqs.push_back({small_number(c, "irq"), small_number(c, "pin"), where(c)});
        if (!c.attribute("irq") && !c.attribute("pin")) {
          problem(at(c),
                  "<irq> in a protection domain needs irq=\"N\" (AArch64) or pin=\"N\" "
                  "(x86_64)");
        }
      }
      if (name == "ioport") {
        const size_t reported = problems_.size();
        IoportSpec port{number(c, "addr").value_or(0), number(c, "size").value_or(0), where(c)};
        port.malformed = problems_.size() != reported;
        pd.ioports.push_back(std::move(port));
      }
    }
    if (!pd.program_image.empty() && pd.vms.empty()) problem(at(n), component_refusal(pd));
    return pd;
  }

  // A protection domain with a program of its own and no virtual machine is an seL4 component
  // (an sDDF driver or virtualiser, a timer driver): on KVM, vmm's device backends (or
  // vhost-user device processes) do its job. The refusal names the one that does.
  static std::string component_refusal(const ProtectionDomainSpec& pd) {
    std::string key = pd.name + " " + pd.program_image;
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto has = [&key](std::initializer_list<const char*> words) {
      return std::any_of(words.begin(), words.end(),
                         [&key](const char* w) { return key.find(w) != std::string::npos; });
    };
    std::string instead;
    if (has({"serial", "uart", "console"})) {
      instead =
          "the VM's serial port is vmm's (<serial backend=\"stdio\"/>, --serial; or "
          "<virtio_console>)";
    } else if (has({"blk", "block", "disk", "storage", "mmc", "sd"})) {
      instead =
          "the VM's disks are vmm's <virtio_block path=\"IMAGE\"/> (--disk), or a "
          "vhost-user block device process";
    } else if (has({"net", "eth", "copy", "arp", "router", "firewall", "lwip"})) {
      instead =
          "the VM's network is vmm's <virtio_net tap=\"NAME\"/> (--net), or a vhost-user "
          "network device process";
    } else if (has({"timer", "clock", "rtc"})) {
      instead = "the guest's timers are KVM's (no timer driver is needed)";
    } else {
      instead =
          "a guest's devices are vmm's device backends (<serial>, <virtio_block>, "
          "<virtio_net>, <virtio_console>) or vhost-user device processes";
    }
    return fmt::format(
        "protection domain '{}' (program_image {}) is an seL4 component with no "
        "virtual machine; on KVM {}: remove it",
        pd.name, pd.program_image, instead);
  }

  IrqSpec irq(pugi::xml_node n) {
    IrqSpec q;
    q.where = where(n);
    const std::optional<uint32_t> number = small_number(n, "irq");
    q.irq = number.value_or(0);
    q.malformed = !number;  // missing (the shape check said so) or not a number
    int sources = 0;
    if (n.attribute("eventfd")) {
      q.source = IrqSpec::Source::eventfd;
      q.name = text(n, "eventfd");
      ++sources;
    }
    if (n.attribute("fifo")) {
      q.source = IrqSpec::Source::fifo;
      q.path = path(n, "fifo");
      ++sources;
    }
    if (n.attribute("socket")) {
      q.source = IrqSpec::Source::socket;
      q.path = path(n, "socket");
      ++sources;
    }
    if (sources != 1) {
      problem(at(n),
              "<irq> needs exactly one event source: eventfd=\"NAME\", fifo=\"PATH\" or "
              "socket=\"PATH\"");
    }
    return q;
  }

  // A device's or machine option's element as a spec: its known attributes (paths resolved).
  DeviceSpec element_spec(pugi::xml_node n, std::string_view kind,
                          const std::vector<AttributeRule>& rules) {
    DeviceSpec spec;
    spec.kind = kind;
    spec.where = fmt::format("{}:{}: <{}>", file_, at(n), n.name());
    for (const AttributeRule& a : rules) {
      const std::string attr(a.name);
      if (!n.attribute(attr.c_str())) continue;
      std::string value = a.is_path ? path(n, attr.c_str()) : text(n, attr.c_str());
      if (!a.path_after.empty() && value.starts_with(a.path_after)) {
        std::string after = path(n, attr.c_str(), value.substr(a.path_after.size()));
        value = std::string(a.path_after);
        value.append(after);
      }
      spec.attributes.emplace_back(attr, std::move(value));
    }
    return spec;
  }

  VirtualMachineSpec vm(pugi::xml_node n) {
    VirtualMachineSpec v;
    v.where = where(n);
    v.config.name = text(n, "name");
    v.config.serial = "none";  // COM1 is connected only when the file says so
    v.id = small_number(n, "id").value_or(0);
    if (n.attribute("ram")) v.ram_region = text(n, "ram");
    v.config.strict_faults = boolean(n, "strict_faults");
    for (const char* attr : {"priority", "budget", "period"}) (void)number(n, attr);
    std::map<uint32_t, uint32_t> vcpu_ids;      // <vcpu id> -> line
    std::map<std::string, uint32_t> once_seen;  // elements a VM has once -> line
    uint32_t vcpu_count = 0;                    // <vcpu> elements
    for (pugi::xml_node c : n.children()) {
      const std::string_view name = c.name();
      auto note = [&](std::string what) {
        v.element_locations.emplace_back(std::move(what), where(c));
      };
      // An element a VM has at most once: a second one is refused, not taken in its place.
      auto once = [&](const std::string& what) {
        const auto [first, fresh] = once_seen.emplace(what, at(c));
        if (!fresh) {
          problem(at(c), fmt::format("<{}> given twice in this VM (first at line {})", what,
                                     first->second));
        }
        note(what);
      };
      if (name == "map") {
        v.maps.push_back(map(c));
      } else if (name == "vcpu") {
        if (vcpu_count++ == 0) note("vcpus");
        const std::optional<uint32_t> id = small_number(c, "id");
        if (id && !vcpu_ids.emplace(*id, at(c)).second) {
          problem(at(c), fmt::format("<vcpu id=\"{}\">: duplicate vCPU id", *id));
        }
        if (auto cpu = small_number(c, "cpu"); id && cpu) v.config.vcpu_host_cpus[*id] = *cpu;
        (void)small_number(c, "setvar_id");  // Microkit-only
      } else if (name == "vcpus") {
        once("vcpus");
        v.config.vcpus = small_number(c, "count").value_or(1);
      } else if (name == "kernel") {
        once("kernel");
        v.config.kernel = path(c, "path");
      } else if (name == "initrd") {
        once("initrd");
        v.config.initrd = path(c, "path");
      } else if (name == "cmdline") {
        once("cmdline");
        // All its text: a comment or a CDATA section splits it into several nodes.
        v.config.cmdline.clear();
        for (const pugi::xml_node part : c.children()) {
          if (part.type() == pugi::node_pcdata || part.type() == pugi::node_cdata) {
            v.config.cmdline += part.value();
          }
        }
      } else if (name == "serial") {
        once("serial");
        v.config.serial = text(c, "backend");
      } else if (const VirtioDeviceKind* kind = find_virtio_device_kind(name)) {
        v.config.devices.push_back(element_spec(c, kind->element(), device_attributes(*kind)));
      } else if (const MachineOption* option = find_any_machine_option(name)) {
        v.config.machine_options.push_back(
            element_spec(c, option->element(), option->attributes()));
      } else if (name == "irq") {
        v.irqs.push_back(irq(c));
      } else if (name == "vfio") {
        v.vfio.push_back({text(c, "device"), where(c)});
      }
    }
    // Microkit's <vcpu id="N"/> elements: vCPUs 0..N-1, one element each.
    if (vcpu_count > 0) {
      const uint32_t count = vcpu_count;
      if (n.child("vcpus")) {
        problem(at(n.child("vcpus")),
                "<vcpus> and <vcpu> elements together: give either <vcpus count=\"N\"/> or one "
                "<vcpu id=\"...\"/> per vCPU");
      }
      for (const auto& [id, line] : vcpu_ids) {
        if (id >= count) {
          problem(line, fmt::format("<vcpu id=\"{}\">: with {} <vcpu> element{} the ids are 0 to "
                                    "{} (one per vCPU)",
                                    id, count, count == 1 ? "" : "s", count - 1));
        }
      }
      v.config.vcpus = count;
    }
    return v;
  }

  std::string_view xml_;
  const std::string& file_;
  std::vector<std::string>& problems_;
  std::vector<size_t> line_starts_;
};

}  // namespace

SystemDescription SystemDescription::parse(std::string_view xml, const std::string& file,
                                           std::vector<std::string>& problems) {
  return Parser(xml, file, problems).parse();
}

}  // namespace libvmm
