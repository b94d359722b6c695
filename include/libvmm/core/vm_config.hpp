// What a virtual machine is made of, as plain data: RAM, vCPUs, images, devices as specs,
// extra maps and interrupt sources. Every layer may read it (the machines read their
// options from it); libvmm::Vm (vm.hpp) builds a machine from it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/device_spec.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/seccomp.hpp"

namespace libvmm {

// A memory region mapped into the guest at `gpa` besides its RAM (shared memory, passthrough
// regions: see include/libvmm/system/). Read-only maps become read-only KVM slots.
struct RegionMap {
  std::shared_ptr<MemoryRegion> region;
  uint64_t gpa = 0;
  uint64_t size = 0;
  bool readonly = false;
};

// A host event source raising guest interrupt `irq`. An eventfd goes straight to KVM (irqfd);
// any other readable descriptor (a FIFO, a datagram socket) is drained by the event loop,
// which then pulses the interrupt through the line's irqfd.
struct IrqSource {
  uint32_t irq = 0;
  int fd = -1;  // not owned: it must outlive the Vm
  bool is_eventfd = false;
};

// A host PCI device passed through with VFIO (pci/vfio.hpp): its address and where it was asked
// for, which starts every message about it ("--vfio 0000:01:00.0").
struct VfioDeviceConfig {
  std::string address;  // 0000:01:00.0
  std::string label;
  // Its IOMMU group, when its host side was checked already (sysfs, read before a jail that has
  // none): the VM then opens /dev/vfio/<group> without reading sysfs.
  std::optional<unsigned> iommu_group;
};

struct VmConfig {
  std::string name = "vm";
  uint64_t memory_size = 256 * MiB;
  // What backs guest RAM (core/guest_memory.hpp): automatic picks the backing that gets huge
  // pages on this host (anonymous memory with transparent huge pages where they are enabled).
  // `ram_shared` demands a file descriptor another process can map (memfd or hugetlb): set it
  // when a device outside this process reads guest RAM (vhost-user). Ignored when `ram` is set.
  RamBacking ram_backing = RamBacking::automatic;
  bool ram_shared = false;
  uint32_t vcpus = 1;
  std::filesystem::path kernel;  // x86_64: a bzImage; aarch64: an arm64 Image
  std::filesystem::path initrd;  // optional
  std::string cmdline;
  std::string serial = "stdio";  // a character backend spec: stdio, file:PATH, none, ...
  // virtIO devices, each a kind from the device registry (virtio/device_kind.hpp) with its
  // attributes: {"virtio_block", {{"path", "d.img"}}}. Devices of one kind keep their order
  // (vda, vdb, ...); kinds are placed in registry order.
  std::vector<DeviceSpec> devices;
  // Host PCI devices passed through (VFIO), on the PCI bus after the virtIO ones.
  std::vector<VfioDeviceConfig> vfio;
  // Host CPUs vCPU threads run on (vCPU index -> host CPU), from a description's
  // <vcpu id="N" cpu="M"/>; a CPU the host lacks is reported and ignored.
  std::map<uint32_t, uint32_t> vcpu_host_cpus;
  bool strict_faults = false;  // stop the VM on the first unhandled guest access
  std::string kvm_device = "/dev/kvm";
  // The per-thread seccomp sandbox (core/seccomp.hpp): vCPU threads and the event loop each
  // load their allow-list before they serve the guest. Off by default for programs that embed
  // the library (their own threads and calls are theirs to list); the vmm program defaults to
  // kill. With it on, the thread that calls Vm::run() keeps the event loop's filter after run()
  // returns.
  SeccompMode seccomp = SeccompMode::off;
  // Set from a system description: guest RAM in a region shared with others (null: a private
  // memfd of memory_size bytes), more maps, and host event sources wired to interrupts.
  std::shared_ptr<MemoryRegion> ram;
  std::vector<RegionMap> maps;
  std::vector<IrqSource> irq_sources;
  // Where an item ("kernel", "initrd", "serial") was given, for messages: set from a system
  // description as "file:line: <kernel>"; absent, the item's flag ("--kernel"). A description
  // also sets "strict" (its attribute that stops a VM on a fault); the VM's fault reports then
  // name it.
  std::map<std::string, std::string, std::less<>> labels;
  std::string label(std::string_view item) const {
    const auto it = labels.find(item);
    if (it != labels.end()) return it->second;
    std::string flag = "--";  // appended, not "--" + string: GCC 12 -O3 -Wrestrict
    flag += item;
    return flag;
  }
  // Options of the machine, each an option its architecture declares (arch/machine_option.hpp)
  // with its attributes: {"gic", {{"version", "3"}}} on AArch64. Read by the machine.
  std::vector<DeviceSpec> machine_options;
};

}  // namespace libvmm
