// A complete VMM in about 60 lines, built from libvmm's blocks rather than libvmm::Vm: guest
// RAM, KVM's interrupt controller, a UART on stdio, a reset device, a bzImage loader, one vCPU.
// Usage: minimal_vmm BZIMAGE [CMDLINE]     (the guest's serial console is stdin/stdout)
#include <atomic>
#include <cstdio>

#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/bzimage.hpp"
#include "libvmm/arch/x86_64/kvm_x86.hpp"
#include "libvmm/arch/x86_64/linux_loader.hpp"
#include "libvmm/arch/x86_64/long_mode.hpp"
#include "libvmm/backends/stdio_backend.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/fault_report.hpp"
#include "libvmm/core/file.hpp"
#include "libvmm/core/kvm_irq.hpp"
#include "libvmm/core/vcpu_runner.hpp"
#include "libvmm/devices/i8042.hpp"
#include "libvmm/devices/uart16550.hpp"

using namespace libvmm;

int main(int argc, char** argv) try {
  if (argc < 2) return std::fprintf(stderr, "usage: minimal_vmm BZIMAGE [CMDLINE]\n"), 2;
  Kvm kvm;
  KvmVm vm = kvm.create_vm();
  x86::set_tss_addr(vm, 0xfffbd000);
  vm.create_irqchip();

  // 64 MiB of RAM at guest-physical 0, known to KVM and to the VMM's own accessors.
  GuestMemory memory;
  const GuestMapping& ram = memory.map(0, MemoryRegion::create("ram", 64 * MiB), 0, 64 * MiB);
  vm.set_user_memory_region(0, ram.gpa, ram.size, ram.host(), false);

  // Devices on the port-I/O bus: COM1 on the terminal, and the i8042 whose reset ends us.
  EventLoop loop;
  Bus pio("port I/O"), mmio("MMIO");
  auto uart = std::make_shared<Uart16550>(
      "com1", std::make_shared<StdioBackend>([&] { loop.stop(); }),
      std::make_shared<KvmIrqLine>(vm, Uart16550::kCom1Irq, Uart16550::kCom1Irq));
  pio.attach(Uart16550::kCom1Port, Uart16550::kRegisterCount, uart);
  uart->start(loop);
  I8042::attach(pio, std::make_shared<I8042>([&] { loop.stop(); }));

  // The guest: kernel, command line and zero page, then page tables for the 64-bit entry.
  const auto image = read_file(argv[1], "BZIMAGE");
  const auto kernel = x86::BzImage::parse(image, argv[1]);
  const auto boot = x86::load_linux(memory, kernel, {}, "", argc > 2 ? argv[2] : "console=ttyS0",
                                    x86::x86_ram_layout(64 * MiB));
  x86::write_long_mode_tables(memory);

  // One vCPU starting at the kernel's 64-bit entry with RSI pointing at the zero page.
  auto vcpu = vm.create_vcpu(0);
  x86::set_cpuid(*vcpu, x86::supported_cpuid(kvm));
  x86::set_sregs(*vcpu, x86::long_mode_sregs(x86::get_sregs(*vcpu)));
  x86::set_regs(*vcpu, x86::long_mode_regs(boot.entry, boot.zero_page));

  FaultReporter faults(memory, mmio, {});  // reports, does not stop the guest
  // Why the vCPU stopped (set on its thread): an error is this program's failure too.
  std::atomic<bool> failed{false};
  VcpuRunner runner(std::move(vcpu),
                    {&mmio, &pio, &faults,
                     [&](StopReason reason, std::string why) {
                       if (reason == StopReason::error || reason == StopReason::fault) {
                         std::fprintf(stderr, "minimal_vmm: the vCPU stopped: %s\n", why.c_str());
                         failed = true;
                       }
                       loop.stop();
                     },
                     [](KvmVcpu& v) { return x86::get_regs(v).rip; }, nullptr});
  runner.start();
  loop.run();  // until the guest resets, the vCPU stops, or Ctrl-A x
  runner.stop();
  runner.join();
  return failed ? 1 : 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "minimal_vmm: %s\n", e.what());
  return 1;
}
