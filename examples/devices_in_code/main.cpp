// A VMM on libvmm::Vm whose virtIO devices are objects this program makes, not flags or a
// description: a disk on an image file as a PCI function, and an entropy source on the board's
// default transport (virtio-pci on x86_64, virtio-mmio on AArch64 and RISC-V). Each is placed
// after the configuration's own devices, by the same rule.
// Usage: devices_in_code KERNEL INITRD DISK [CMDLINE]   (the serial console is stdin/stdout)
#include <cstdio>
#include <memory>

#include "libvmm/core/error.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/rng.hpp"
#include "libvmm/vm.hpp"

using namespace libvmm;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: devices_in_code KERNEL INITRD DISK [CMDLINE]\n");
    return kExitUserError;
  }
  return exit_status_of([&] {
    VmConfig config;
    config.kernel = argv[1];
    config.initrd = argv[2];
    config.cmdline = argc > 4 ? argv[4] : "console=ttyS0";
    Vm vm(config);

    BlockConfig disk;
    disk.path = argv[3];
    // Its I/O thread starts now: it waits for the VM's vCPUs, and loads the VM's seccomp filter.
    BlockThreading threading;
    threading.on_thread_start = vm.io_thread_start_hook();
    vm.add_virtio_device(std::make_shared<VirtioBlock>(disk, threading), Vm::Transport::pci);
    vm.add_virtio_device(std::make_shared<VirtioRng>(), Vm::Transport::board_default);
    for (const PlacedDevice& d : vm.devices()) {
      std::fprintf(stderr, "devices_in_code: %s at %#llx (%s)\n", d.name.c_str(),
                   static_cast<unsigned long long>(d.base),
                   d.irq != 0 ? "virtio-mmio" : "virtio-pci, BAR 0");
    }
    return vm.run().exit_status();
  });
}
