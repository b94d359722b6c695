// The virtIO device registry: everything the rest of libvmm needs to know about a kind of
// virtIO device, declared by the device in one place (its *_kind.cpp) and listed once in
// src/virtio/device_kinds.cpp. The `.system` parser, the `vmm` flags, validation, the
// resource planner, `vmm check` and Vm all work from this table, so adding a device is its
// own files plus one line there (docs/ARCHITECTURE.md).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/device_spec.hpp"

namespace libvmm {

class EventLoop;
class GuestMemory;
class VirtioDevice;

// One attribute of a device's `.system` element (and option of its flag).
struct AttributeRule {
  std::string_view name;
  bool required = false;
  bool is_path = false;               // a host path: ${VAR} expanded, relative to the .system file
  std::string_view flag_syntax = {};  // how the flag spells it, e.g. "serial=ID"; "" = name=VALUE
  // A value starting with this prefix is a host path after it, resolved like is_path's
  // (backend="wav:out.wav" with path_after "wav:").
  std::string_view path_after = {};
};

// What a device gets from the VM it is created on.
struct DeviceContext {
  GuestMemory& memory;
  EventLoop& loop;
  std::string_view vm_name;
  size_t index = 0;               // among the VM's devices of this kind: vda = 0, vdb = 1, ...
  std::function<void()> on_quit;  // a console's Ctrl-A x
  // Runs first on every host I/O thread a device starts (IoThread: virtio-blk's "blk-io<N>"),
  // before it serves the guest: per-thread setup such as a seccomp filter for I/O threads;
  // false: the thread must not serve (IoThread).
  // Its token: the thread is being stopped (give up waiting).
  std::function<bool(std::stop_token)> on_io_thread_start;
  std::function<void()> on_shutdown;  // a console's Ctrl-A s
  uint32_t vcpus = 1;                 // the VM's vCPUs (virtio-blk: a queue per vCPU by default)
};

class VirtioDeviceKind {
 public:
  virtual ~VirtioDeviceKind() = default;

  virtual std::string_view element() const = 0;  // the .system element: "virtio_block"
  virtual std::string_view flag() const = 0;     // the vmm flag: "--disk"
  virtual std::string_view help() const = 0;     // the flag's --help text
  // The attribute a bare first item of the flag's value sets (--disk PATH): "" for none.
  virtual std::string_view positional() const { return {}; }
  // Whether the flag may be given without a value (--rng).
  virtual bool flag_value_optional() const { return false; }
  virtual std::vector<AttributeRule> attributes() const = 0;
  // At most this many per VM (a second virtio console would need multiport).
  virtual size_t max_per_vm() const { return SIZE_MAX; }

  // Problems with a spec's values, each a phrase without location ("serial 'x' is longer
  // than 20 characters"); unknown and missing attributes are checked before (check_spec()).
  virtual void check(const DeviceSpec& spec, const HostFiles& files,
                     std::vector<std::string>& problems) const = 0;
  // Host resources the device needs for itself ("stdio", "image <dev:ino>"), so that two
  // devices asking for one are refused; how users name it for that message.
  struct Claim {
    std::string resource;
    std::string what;
  };
  virtual std::vector<Claim> claims(const DeviceSpec& /*spec*/, const HostFiles& /*files*/) const {
    return {};
  }
  // The host files and devices the device opens (a sandbox provides exactly these): by default
  // each attribute marked is_path, read-only.
  virtual std::vector<HostPath> host_paths(const DeviceSpec& spec) const;
  // Opens, in the process that builds a jail (as root, before it), what the device cannot open
  // inside one (the alsa sound backend: ALSA picks its files from its own configuration); the
  // jail's process inherits it and create() uses it. Returns the descriptors it opened (the
  // jail keeps them open). Throws UserError like create().
  virtual std::vector<int> open_before_jail(const DeviceSpec& /*spec*/) const { return {}; }
  // One line for `vmm check`: "virtio-blk vda disk.img (read-only)".
  virtual std::string describe(const DeviceSpec& spec, size_t index,
                               std::string_view vm_name) const = 0;
  // Creates the device (throws UserError, located with spec.where, for what the host
  // refuses); start() runs once it is attached to its transport.
  virtual std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                               const DeviceContext& context) const = 0;
  virtual void start(VirtioDevice& /*device*/, EventLoop& /*loop*/) const {}
  // Whether another process serves the device's queues (vhost-user): the VM's RAM must then
  // be memory that process can map (a file descriptor), not anonymous memory.
  virtual bool needs_shared_ram() const { return false; }
};

// Whether any of these devices needs the VM's RAM shareable (needs_shared_ram()).
bool devices_need_shared_ram(const std::vector<DeviceSpec>& specs);
// The attributes of a kind's element and flag: its own, then those every virtIO device has
// (`transport="pci"|"mmio"`: which transport connects it to the guest).
std::vector<AttributeRule> device_attributes(const VirtioDeviceKind& kind);
// Whether a device is a PCI function: transport=pci, or no transport= on a machine whose
// default is PCI (`pci_by_default`: MemoryMap::virtio_pci_by_default). Else virtio-mmio.
bool uses_pci_transport(const DeviceSpec& spec, bool pci_by_default);

// Every registered kind, in the order devices of different kinds are placed and probed.
const std::vector<const VirtioDeviceKind*>& virtio_device_kinds();
const VirtioDeviceKind* find_virtio_device_kind(std::string_view element);

// The checks every spec gets: a registered kind, known attributes, required ones present,
// then the kind's own check(). Each problem is located with spec.where.
std::vector<std::string> check_spec(const DeviceSpec& spec, const HostFiles& files);
// A spec from a flag's value: `--disk d.img,readonly` is spec_from_flag(kind, "d.img,readonly").
DeviceSpec spec_from_flag(const VirtioDeviceKind& kind, std::string_view value);
// The same, checked: throws UserError with the first problem ("--disk '': missing image path").
DeviceSpec checked_spec_from_flag(const VirtioDeviceKind& kind, std::string_view value,
                                  const HostFiles& files);

// The devices' specs, grouped by kind in registry order (the order of placement and probing:
// every disk before the console, ...), each with its index among devices of its kind.
struct OrderedSpec {
  const DeviceSpec* spec;
  const VirtioDeviceKind* kind;
  size_t index;
};
std::vector<OrderedSpec> in_device_order(const std::vector<DeviceSpec>& specs);

}  // namespace libvmm
