// Which host files a jail holds, and how: pure planning from a description (no host access).
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "libvmm/arch/machine_option.hpp"
#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/jail/jail.hpp"
#include "libvmm/virtio/device_kind.hpp"

namespace libvmm {
namespace {

// "f.system:6: <kernel>" for an item of a description file, "--kernel" for a flag.
std::string item_where(const VirtualMachineSpec& vm, std::string_view item) {
  const std::string loc = vm.location_of(item).str();
  if (loc.empty() || loc.starts_with("--")) {
    std::string flag = "--";
    flag += item;
    return flag;
  }
  return fmt::format("{}: <{}>", loc, item);
}

bool is_inside(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto p = path.begin();
  for (auto d = dir.begin(); d != dir.end(); ++d, ++p) {
    if (d->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *d) return false;
  }
  return true;
}

// A read and a read-write use of one file merge into read-write; any other pair is refused.
bool merge_use(HostPath::Use& into, HostPath::Use other) {
  using Use = HostPath::Use;
  if (into == other) return true;
  const auto rw = [](Use u) { return u == Use::read || u == Use::read_write; };
  if (rw(into) && rw(other)) {
    into = Use::read_write;
    return true;
  }
  return false;
}

class Planner {
 public:
  explicit Planner(std::filesystem::path cwd) : cwd_(std::move(cwd)) {}

  void add(HostPath host, const std::string& where) {
    if (host.use == HostPath::Use::pty) {
      throw UserError(fmt::format(
          "{}: pty: not in a jail (its /dev/pts/N would exist only inside it; use socket:PATH)",
          where));
    }
    if (host.path.empty()) return;
    const std::filesystem::path path = (cwd_ / host.path).lexically_normal();
    const std::string shown = path.string();
    if (path == "/" || path.filename().empty()) {
      throw UserError(fmt::format("{}: {}: not a file the jail can hold", where, shown));
    }
    if (is_inside(path, "/proc")) {
      throw UserError(fmt::format("{}: {}: /proc is the jail's own", where, shown));
    }
    if (host.use == HostPath::Use::device && !is_inside(path, "/dev")) {
      throw UserError(
          fmt::format("{}: {}: the jail makes device nodes only under /dev", where, shown));
    }
    if (host.use == HostPath::Use::socket && is_inside(path, "/dev")) {
      throw UserError(fmt::format(
          "{}: {}: a socket in the jail cannot be under /dev (the jail's /dev is its own, "
          "read-only; e.g. /run/vm/{})",
          where, shown, path.filename().string()));
    }
    if (host.use == HostPath::Use::socket && path.parent_path() == "/") {
      throw UserError(
          fmt::format("{}: {}: a socket in the jail needs a directory of its own (e.g. /run/vm/{})",
                      where, shown, path.filename().string()));
    }
    if (!host.tap.empty() && std::find(taps_.begin(), taps_.end(), host.tap) == taps_.end()) {
      taps_.push_back(host.tap);
    }
    auto [it, inserted] = files_.try_emplace(path, JailFile{path, host.use, where});
    if (!inserted && !merge_use(it->second.use, host.use)) {
      throw UserError(fmt::format("{}: {} is also used by {} ({}), not as {}", where, shown,
                                  it->second.where, to_string(it->second.use),
                                  to_string(host.use)));
    }
  }

  JailPlan finish() {
    JailPlan plan;
    plan.cwd = cwd_;
    plan.taps = taps_;
    for (auto& [path, file] : files_) plan.files.push_back(file);
    // A file cannot also be a directory holding another (nor a socket's directory a file).
    for (size_t i = 0; i + 1 < plan.files.size(); ++i) {
      for (size_t j = i + 1; j < plan.files.size(); ++j) {
        const JailFile& outer = plan.files[i];
        const JailFile& inner = plan.files[j];
        if (is_inside(inner.path, outer.path) ||
            (inner.use == HostPath::Use::socket && inner.path.parent_path() == outer.path)) {
          throw UserError(fmt::format("{}: {} is inside {} ({}), a file", inner.where,
                                      inner.path.string(), outer.path.string(), outer.where));
        }
      }
    }
    return plan;
  }

 private:
  std::filesystem::path cwd_;
  std::map<std::filesystem::path, JailFile> files_;
  std::vector<std::string> taps_;
};

}  // namespace

JailPlan plan_jail(const SystemDescription& description, const std::filesystem::path& cwd) {
  Planner planner(cwd);
  for (const MemoryRegionSpec& r : description.regions) {
    const std::string where = fmt::format("{}: memory region '{}'", r.where.str(), r.name);
    if (r.backing == MemoryRegionSpec::Backing::host_file) {
      planner.add({r.path, HostPath::Use::create, {}}, where);
    } else if (r.backing == MemoryRegionSpec::Backing::shm) {
      // shm_open("/x") is /dev/shm/x.
      std::string name = r.path;
      name.erase(0, name.find_first_not_of('/'));
      if (!name.empty()) planner.add({"/dev/shm/" + name, HostPath::Use::create, {}}, where);
    }
  }
  for (const VirtualMachineSpec* vm : description.vms()) {
    const VmConfig& c = vm->config;
    planner.add({c.kernel, HostPath::Use::read, {}}, item_where(*vm, "kernel"));
    planner.add({c.initrd, HostPath::Use::read, {}}, item_where(*vm, "initrd"));
    if (auto serial = char_backend_host_path(c.serial)) {
      planner.add(*serial, item_where(*vm, "serial"));
    }
    planner.add({c.kvm_device, HostPath::Use::device, {}}, "the KVM device");
    for (const DeviceSpec& option : c.machine_options) {
      const MachineOption* kind = find_any_machine_option(option.kind);
      if (kind == nullptr) continue;  // validation refuses it
      for (const AttributeRule& rule : kind->attributes()) {
        if (!rule.is_path) continue;
        if (auto value = option.get(rule.name)) {
          planner.add({std::string(*value), HostPath::Use::read, {}}, option.where);
        }
      }
    }
    for (const DeviceSpec& spec : c.devices) {
      const VirtioDeviceKind* kind = find_virtio_device_kind(spec.kind);
      if (kind == nullptr) continue;  // validation refuses it
      for (HostPath& path : kind->host_paths(spec)) planner.add(std::move(path), spec.where);
    }
    // A passed-through device: the VFIO container and its IOMMU group's node (the group found
    // in sysfs before the jail, which has none: resolve_vfio_devices).
    if (!vm->vfio.empty()) {
      throw std::logic_error("plan_jail: resolve_vfio_devices(description, true) first");
    }
    for (const VfioDeviceConfig& v : c.vfio) {
      if (!v.iommu_group) {
        throw std::logic_error("plan_jail: resolve_vfio_devices(description, true) first");
      }
      planner.add({"/dev/vfio/vfio", HostPath::Use::device, {}}, v.label);
      planner.add({fmt::format("/dev/vfio/{}", *v.iommu_group), HostPath::Use::device, {}},
                  v.label);
    }
    for (const IrqSpec& irq : vm->irqs) {
      const std::string where = fmt::format("{}: IRQ {}", irq.where.str(), irq.irq);
      if (irq.source == IrqSpec::Source::fifo) {
        planner.add({irq.path, HostPath::Use::fifo, {}}, where);
      } else if (irq.source == IrqSpec::Source::socket) {
        planner.add({irq.path, HostPath::Use::socket, {}}, where);
      }
    }
  }
  return planner.finish();
}

JailPlan plan_jail(const std::vector<std::pair<HostPath, std::string>>& paths,
                   const std::filesystem::path& cwd) {
  Planner planner(cwd);
  for (const auto& [path, where] : paths) planner.add(path, where);
  return planner.finish();
}

JailOptions jail_options_from_flags(const std::string& dir, int64_t uid, int64_t gid,
                                    const std::string& netns, std::string_view who) {
  constexpr int64_t kMaxId = 0xfffffffe;  // (uid_t)-1 means "unchanged" to the kernel
  if (uid < 0) {
    throw UserError(fmt::format(
        "--jail: needs --jail-uid N (and --jail-gid N, default the same): the user {} runs as",
        who));
  }
  if (uid > kMaxId) throw UserError(fmt::format("--jail-uid {}: not a user id", uid));
  if (gid < -1 || gid > kMaxId) throw UserError(fmt::format("--jail-gid {}: not a group id", gid));
  JailOptions options;
  std::error_code ec;
  options.dir = std::filesystem::absolute(dir, ec).lexically_normal();
  if (!options.dir.empty() && options.dir != "/" && !options.dir.has_filename()) {
    options.dir = options.dir.parent_path();  // "DIR/": no trailing separator
  }
  options.uid = static_cast<uid_t>(uid);
  options.gid = static_cast<gid_t>(gid < 0 ? uid : gid);
  options.who = who;
  if (netns == "new") {
    options.network = JailOptions::Network::none;
  } else if (!netns.empty()) {
    options.network = JailOptions::Network::named;
    options.netns = netns;
  }
  return options;
}

std::string JailPlan::describe() const {
  std::string out = "jail files (at the same paths inside):\n";
  for (const JailFile& f : files) {
    out += fmt::format("  {:<10} {}  ({})\n", to_string(f.use), f.path.string(), f.where);
  }
  for (const std::string& tap : taps) out += fmt::format("  tap        {}\n", tap);
  out += fmt::format("  cwd        {}\n", cwd.string());
  return out;
}

}  // namespace libvmm
