// A VMM of one's own, on libvmm's system API (include/libvmm/system/):
//
//   custom_vmm FILE.system        loads a description, adjusts it in code, runs it
//   custom_vmm BZIMAGE [CMDLINE]  builds the same kind of system entirely in code
//
// The system: guest RAM, COM1 on the terminal, a 4 KiB page shared by the guest (at
// guest-physical 0xc0000000) and this program, and guest IRQ 20 raised through an eventfd this
// program owns (KVM irqfd: the interrupt goes from this program straight to KVM). While the
// guest runs, a thread of this program answers whatever the guest writes to the shared page
// and rings IRQ 20 every 100 ms.
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "libvmm/core/log.hpp"
#include "libvmm/system/system.hpp"

using namespace libvmm;

namespace {

constexpr uint64_t kSharedGpa = 0xc0000000;
constexpr uint32_t kDoorbellIrq = 20;

MemoryRegionSpec region(std::string name, uint64_t size) {
  MemoryRegionSpec r;
  r.name = std::move(name);
  r.size = size;
  return r;
}

MapSpec map(std::string region, std::string perms) {
  MapSpec m;
  m.region = std::move(region);
  m.perms = std::move(perms);
  return m;
}

SystemDescription build_in_code(const std::string& kernel, const std::string& cmdline) {
  SystemDescription d;
  d.regions.push_back(region("guest_ram", 32 * MiB));
  d.regions.push_back(region("shared", 4 * KiB));
  d.regions.back().phys_addr = kSharedGpa;

  ProtectionDomainSpec vmm;
  vmm.name = "vmm";
  vmm.maps.push_back(map("shared", "rw"));
  vmm.maps.back().setvar_vaddr = "shared_vaddr";

  VirtualMachineSpec vm;
  vm.config.name = "guest";
  vm.config.kernel = kernel;
  vm.config.cmdline = cmdline;
  vm.config.serial = "stdio";
  vm.maps.push_back(map("guest_ram", "rwx"));
  vm.maps.back().vaddr = 0;
  vm.maps.push_back(map("shared", "rw"));  // at the region's phys_addr
  IrqSpec doorbell;
  doorbell.irq = kDoorbellIrq;
  doorbell.name = "doorbell";
  vm.irqs.push_back(doorbell);
  vmm.vms.push_back(std::move(vm));
  d.domains.push_back(std::move(vmm));
  return d;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: custom_vmm FILE.system | custom_vmm BZIMAGE [CMDLINE]\n");
    return 2;
  }
  const std::string arg = argv[1];
  SystemDescription description = arg.ends_with(".system")
                                      ? SystemDescription::load(arg)
                                      : build_in_code(arg, argc > 2 ? argv[2] : "console=ttyS0");
  // Adjusting in code: every VM gets this program's eventfd for <irq eventfd="doorbell">.
  UniqueFd doorbell(::eventfd(0, EFD_CLOEXEC));
  description.bind_eventfd("doorbell", doorbell.get());

  System system(std::move(description));
  const std::span<uint8_t> shared = system.vmm_mapping("shared_vaddr");

  // A jthread: asked to stop and joined however this scope ends (run() throws for a bad
  // kernel image, say), where a std::thread still joinable would abort the program.
  std::jthread helper([&](std::stop_token stop) {
    bool answered = false;
    while (!stop.stop_requested()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(doorbell.get(), &one, sizeof one);
      // The guest writes a NUL-terminated text at the start of the page; we answer at 0x100.
      // The guest may change the page at any time: copy out a bounded snapshot first.
      if (answered || shared.size() < 0x200 || shared[0] == 0) continue;
      char text[64] = {};
      std::memcpy(text, shared.data(), sizeof text - 1);
      std::printf("custom_vmm: the guest wrote \"%s\"\n", text);
      std::fflush(stdout);
      const char answer[] = "HELLO-FROM-CUSTOM-VMM";
      std::memcpy(shared.data() + 0x100, answer, sizeof answer);
      answered = true;
    }
  });
  const RunResult result = system.run();
  helper.request_stop();
  helper.join();
  std::fprintf(stderr, "custom_vmm: guest stopped: %s\n", result.detail.c_str());
  return result.exit_status();
} catch (const DescriptionError& e) {
  for (const auto& p : e.problems()) std::fprintf(stderr, "custom_vmm: %s\n", p.c_str());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "custom_vmm: %s\n", e.what());
  return 1;
}
