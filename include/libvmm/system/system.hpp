// A running system: the memory regions and virtual machines of a SystemDescription. Regions are
// created once and shared by every map of them (in the VMM and in each guest), so a region
// mapped into two guests, or into a guest and this process, is the same memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/system/description.hpp"
#include "libvmm/vm.hpp"

namespace libvmm {

// The description's <vfio> devices move into their VMs' config.vfio (each address checked for
// its form: a UserError naming the line); System does this itself. With `check_host`, each
// entry's host side is checked at once (pci::check_vfio_device, which reads sysfs) and its
// IOMMU group kept, for VMs that will run where there is no sysfs: vmm does this as root before
// it builds a --jail.
void resolve_vfio_devices(SystemDescription& description, bool check_host);

// Bytes of memory the VMs with passed-through devices pin for their DMA: all they map (RAM
// and regions); 0 without VFIO.
uint64_t vfio_pinned_bytes(const SystemDescription& description);

class System {
 public:
  // Validates the description (DescriptionError listing every problem), creates its regions
  // and event sources and builds every VM. Throws UserError for what this host or this
  // version cannot do (no huge pages, VFIO, an unbound eventfd, ...), naming file and line.
  explicit System(SystemDescription description);
  ~System();
  System(const System&) = delete;
  System& operator=(const System&) = delete;

  // Runs every VM until all have stopped: a lone VM on the calling thread; several each on a
  // thread of its own, the calling thread serving control_loop() meanwhile. A guest reset or
  // power-off ends that VM only; a quit, fault or error stops them all. Returns the first
  // failure (exit_status() != 0) if any, else how the first VM ended; rethrows the first
  // exception a VM's run threw, once every VM has stopped.
  RunResult run();
  // Where a program serves what concerns every VM (its stop signals, a shutdown timer): the
  // lone VM's event loop, or with several the loop run() runs on the calling thread (which has
  // no seccomp filter: it serves no guest device). Set up before run().
  EventLoop& control_loop();
  // Called on run()'s calling thread once control_loop() has stopped, ahead of the teardown:
  // a lone VM's before its vCPUs are joined; with several once every VM's run() has returned
  // (the control loop serves until then), before their threads are joined. Set it before
  // run(); see Vm::set_loop_end_handler.
  void set_loop_end_handler(std::function<void()> handler);
  // Thread-safe: stops every VM.
  void request_stop(StopReason reason, const std::string& detail);

  const SystemDescription& description() const;
  std::vector<Vm*> vms();
  Vm& vm(std::string_view name);  // throws std::out_of_range for an unknown name
  // A memory region by name (nullptr if none): host() is this process's mapping of it.
  std::shared_ptr<MemoryRegion> region(std::string_view name) const;
  // The VMM's view of a region it maps, by the map's setvar_vaddr (the manual's
  // guest_ram_vaddr); empty if no VMM map has that name.
  std::span<uint8_t> vmm_mapping(std::string_view setvar_vaddr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace libvmm
