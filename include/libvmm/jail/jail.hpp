// The jail (vmm --jail DIR): runs a system's VMs in new mount, PID, IPC and UTS namespaces (and
// optionally a network namespace), with DIR as the root directory holding only the files the
// VMs need, as an unprivileged user with no capabilities and no_new_privs. In the spirit of
// Firecracker's jailer; docs/SECURITY.md ("Sandbox: the jail") says what it does and does not.
//
// Two steps: plan_jail() works out from a description which host files go in and how (pure:
// unit-tested), and run_in_jail() builds the jail as root and runs a function inside it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "libvmm/core/device_spec.hpp"
#include "libvmm/system/description.hpp"

namespace libvmm {

struct JailOptions {
  std::filesystem::path dir;  // the jail's root: an existing, empty directory
  uid_t uid = 0;              // the user and group the VMs run as: not root
  gid_t gid = 0;
  enum class Network {
    host,   // the caller's network namespace (TAPs as without a jail)
    named,  // join `netns` (ip netns add NAME: /run/netns/NAME) before anything else
    none,   // a new, empty network namespace (only lo): for VMs without --net
  };
  Network network = Network::host;
  std::string netns;
  // Descriptors opened before the jail for the VMs inside (VirtioDeviceKind::open_before_jail:
  // ALSA PCMs), kept open in it; every other one but stdio is closed.
  std::vector<int> inherit;
  // Bytes of memory the VMs pin for DMA (VFIO; vfio_pinned_bytes): RLIMIT_MEMLOCK is raised to
  // it before the user is dropped to, as a user without CAP_IPC_LOCK pins no more than that.
  uint64_t memlock = 0;
  std::string who = "the VM";  // what runs inside, for messages ("the device": vmm-device)
};

// The options from the command line's --jail DIR, --jail-uid, --jail-gid (-1: the same as the
// uid) and --jail-netns (NAME, "new" or empty: the caller's), checked for their form: one
// UserError naming the flag. `who` says what runs as the user ("the VM").
JailOptions jail_options_from_flags(const std::string& dir, int64_t uid, int64_t gid,
                                    const std::string& netns, std::string_view who);

// One host file (or device) provided in the jail at the same absolute path, so the
// description's paths need no rewriting; relative paths are resolved against the working
// directory, which the jail recreates.
struct JailFile {
  std::filesystem::path path;  // absolute and lexically normal: where it is on the host and inside
  HostPath::Use use = HostPath::Use::read;
  std::string where;  // who asked for it, for messages: "--kernel", "f.system:9: <virtio_block>"
};

struct JailPlan {
  std::vector<JailFile> files;    // sorted by path, one entry per path
  std::vector<std::string> taps;  // TAP interfaces the VMs attach to (each once)
  std::filesystem::path cwd;      // the working directory, recreated inside
  // What `vmm check --jail` prints: one line per file.
  std::string describe() const;
};

// The files the description's VMs use (kernels, initrds, machine options' files, devices' host
// paths from the device registry, serial backends, region files and shm objects, IRQ FIFOs and
// sockets, the KVM device), resolved against `cwd`. Throws UserError, naming the item, for what
// a jail cannot provide: a pty (its /dev/pts/N would exist only inside), a socket in the jail's
// root directory itself, a device node outside /dev, a file under /proc, one path used in two
// incompatible ways.
JailPlan plan_jail(const SystemDescription& description, const std::filesystem::path& cwd);

// The same for a list of host paths, each with who asked for it (vmm-device: its device's
// files and the socket it listens on).
JailPlan plan_jail(const std::vector<std::pair<HostPath, std::string>>& paths,
                   const std::filesystem::path& cwd);

// Checks the options: root, DIR an existing empty directory (not /), uid and gid not 0, a
// named network namespace that exists, no TAP with Network::none. Throws UserError naming the
// flag (--jail, --jail-uid, --jail-gid, --jail-netns).
void check_jail(const JailOptions& options, const JailPlan& plan);

// Builds the jail and runs `body` in it as PID 1 of the new PID namespace; returns the status
// to exit with (body's return value, or 128 + signal). The calling process stays outside: it
// forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the jail, waits for it, then removes what it
// put in DIR and the TAPs it created. Call it single-threaded, after check_jail().
int run_in_jail(const JailOptions& options, const JailPlan& plan, const std::function<int()>& body);

}  // namespace libvmm
