// The x86_64 PC-like machine: RAM around the 3-4 GiB MMIO hole, KVM's in-kernel PIC, IOAPIC and
// PIT, a 16550A UART on COM1, an i8042 for the reset line, a CMOS clock, and Linux booted
// through the 64-bit boot protocol with an MP table describing the vCPUs and minimal ACPI
// tables for power-off.
#include "../machine.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include "libvmm/arch/x86_64/acpi.hpp"
#include "libvmm/arch/x86_64/boot_layout.hpp"
#include "libvmm/arch/x86_64/bzimage.hpp"
#include "libvmm/arch/x86_64/cpuid.hpp"
#include "libvmm/arch/x86_64/kvm_x86.hpp"
#include "libvmm/arch/x86_64/linux_loader.hpp"
#include "libvmm/arch/x86_64/long_mode.hpp"
#include "libvmm/arch/x86_64/mptable.hpp"
#include "libvmm/arch/x86_64/vmlinux.hpp"
#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/core/bus.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/file.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/vm_config.hpp"
#include "libvmm/devices/cmos_rtc.hpp"
#include "libvmm/devices/i8042.hpp"
#include "libvmm/devices/port_sink.hpp"
#include "libvmm/devices/uart16550.hpp"
#include "libvmm/pci/host_bridge.hpp"
#include "options.hpp"
#include "vcpu_setup.hpp"

namespace libvmm {

const Board& x86_64_board();

namespace {

// CPUID offers the TSC-deadline timer wherever KVM's in-kernel local APIC emulates it
// (KVM_CAP_TSC_DEADLINE_TIMER; KVM_GET_SUPPORTED_CPUID leaves the bit out before Linux 6.14), as
// x86 CPUs and QEMU's `-cpu host` do: the guest then skips its APIC-timer calibration against
// the PIT (~0.1-0.3 s of boot). It was held back twice for rare guest triple faults in the
// emulated KVM host; those are the emulated host's own: bench/irq-stress.sh provokes them with
// and without the timer, under QEMU as well (docs/PERFORMANCE.md, "The emulated host under
// interrupt load").
constexpr bool kOfferTscDeadlineTimer = true;

// --halt guest: HLT, and PAUSE where KVM can, without VM exits (before the vCPUs exist).
void keep_halt_in_guest(KvmVm& kvm, const x86::HaltOption& halt, uint32_t vcpus) {
  const uint32_t can = x86::exits_kvm_can_disable(kvm);
  if ((can & KVM_X86_DISABLE_EXITS_HLT) == 0) {
    throw UserError(fmt::format(
        "{}: this host's KVM cannot leave HLT to the guest (no KVM_CAP_X86_DISABLE_EXITS)",
        halt.label));
  }
  const uint32_t exits = KVM_X86_DISABLE_EXITS_HLT | (can & KVM_X86_DISABLE_EXITS_PAUSE);
  x86::disable_exits(kvm, exits);
  const bool pause = (exits & KVM_X86_DISABLE_EXITS_PAUSE) != 0;
  log::debug("{}: {} in the guest, without VM exits", halt.label,
             pause ? "HLT and PAUSE stay" : "HLT stays");
  const long host_cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (host_cpus > 0 && vcpus >= static_cast<unsigned long>(host_cpus)) {
    log::warn(
        "{}: {} vCPU{} on a host with {} CPUs: an idle vCPU keeps its host CPU busy, and the "
        "VMM's own threads get less CPU than they need",
        halt.label, vcpus, vcpus == 1 ? "" : "s", host_cpus);
  }
}

class X86Machine : public Machine {
 public:
  const Board& board() const override { return x86_64_board(); }

  void create_interrupt_controller(MachineContext& vm) override {
    KvmVm& kvm = vm.kvm;
    kvm.kvm().require_extension(KVM_CAP_IRQCHIP,
                                "KVM_CAP_IRQCHIP (in-kernel interrupt controller)");
    x86::set_tss_addr(kvm, x86::kTssAddr);
    x86::set_identity_map_addr(kvm, x86::kIdentityMapAddr);
    kvm.create_irqchip();  // PIC + IOAPIC + per-vCPU local APICs, GSI i -> pin i
    x86::create_pit2(kvm);
    if (const auto halt = x86::halt_option(vm.config); halt && halt->in_guest) {
      keep_halt_in_guest(kvm, *halt, vm.config.vcpus);
    }
  }

  void add_platform_devices(MachineContext& vm) override {
    std::shared_ptr<CharBackend> serial = open_char_backend(
        vm.config.serial, vm.config.label("serial"),
        [&vm] { vm.request_stop(StopReason::quit, "quit from the console"); },
        [&vm] { vm.request_shutdown(); });
    auto uart = std::make_shared<Uart16550>("com1", serial, vm.irq(Uart16550::kCom1Irq));
    vm.pio.attach(Uart16550::kCom1Port, Uart16550::kRegisterCount, uart);
    uart->start(vm.loop);

    auto i8042 = std::make_shared<I8042>([&vm] {
      vm.request_stop(StopReason::reset,
                      "the guest reset the machine through the i8042 controller");
    });
    I8042::attach(vm.pio, i8042);
    auto rtc = std::make_shared<CmosRtc>(CmosRtc::host_time, vm.irq(CmosRtc::kIrq));
    vm.pio.attach(CmosRtc::kBasePort, CmosRtc::kPortCount, rtc);
    rtc->start(vm.loop);
    // Index registers, whose writes matter only to the next access of their data port, which
    // exits anyway: they wait in KVM's queue. The RTC's (the clock read at boot and at every
    // hwclock) and PCI's CONFIG_ADDRESS, with or without a host bridge on it (a kernel with
    // CONFIG_PCI probes it either way).
    vm.coalesce_writes(CmosRtc::kBasePort, 1);
    vm.coalesce_writes(pci::HostBridge::kLegacyConfigPort, 4);
    vm.pio.attach(PortSink::kPostPort, 1, std::make_shared<PortSink>("post-code"));
    pm_ = std::make_shared<x86::AcpiPmDevice>(
        [&vm] { vm.request_stop(StopReason::power_off, "the guest powered off (ACPI S5)"); },
        vm.irq(x86::kAcpiSciIrq));
    vm.pio.attach(x86::kAcpiPmBasePort, x86::kAcpiPmPortCount, pm_);
  }

  void load_guest(MachineContext& vm) override {
    const VmConfig& c = vm.config;
    // Mapped, not read: a vmlinux is mostly bytes that go straight to guest RAM, or never.
    const MappedFile kernel_file = MappedFile::open(c.kernel, c.label("kernel"));
    // Messages about the images name where they were given: "--kernel PATH: what is wrong", or
    // "file:line: <kernel> PATH: ..." for a system description.
    const std::string kernel_name = c.label("kernel") + " " + c.kernel.string();
    // The initrd too (a distribution's is tens of MiB): copied once, not zero-filled, read, copied.
    const MappedFile initrd_file = MappedFile::open_if_given(c.initrd, c.label("initrd"));
    const std::span<const uint8_t> initrd = initrd_file.bytes();
    const auto ram = x86::x86_ram_layout(c.memory_size);
    // Kernels with ACPI find the virtio-mmio devices in the DSDT; with "acpi=off" (or a kernel
    // built without ACPI, which its user runs with acpi=off) they need the parameters, which
    // a kernel with ACPI would otherwise see as a second copy of each device.
    std::string cmdline = c.cmdline;
    if (x86::cmdline_disables_acpi(cmdline)) {
      for (const auto& param : virtio_cmdline_) {
        if (!cmdline.empty()) cmdline += ' ';
        cmdline += param;
      }
    }
    const size_t appended = cmdline.size() - c.cmdline.size();
    const std::string initrd_name = c.label("initrd") + " " + c.initrd.string();
    // A vmlinux (ELF) boots without the bzImage's decompressor: the faster way in.
    const std::span<const uint8_t> kernel_bytes = kernel_file.bytes();
    if (x86::Vmlinux::looks_like_elf(kernel_bytes)) {
      boot_ = x86::load_linux(vm.memory, x86::Vmlinux::parse(kernel_bytes, kernel_name), initrd,
                              initrd_name, cmdline, ram, appended);
    } else {
      boot_ = x86::load_linux(vm.memory, x86::BzImage::parse(kernel_bytes, kernel_name), initrd,
                              initrd_name, cmdline, ram, appended);
    }
    kernel_file.check_intact();
    initrd_file.check_intact();
    x86::write_mptable(vm.memory, c.vcpus, intx_);
    std::vector<x86::aml::Bytes> devices{
        x86::serial_port_node("COM1", 1, Uart16550::kCom1Port, Uart16550::kCom1Irq)};
    devices.insert(devices.end(), acpi_devices_.begin(), acpi_devices_.end());
    std::optional<x86::McfgEntry> mcfg;
    if (pci_) {
      for (auto& node : x86::pci_host_bridge_nodes(*pci_, intx_)) {
        devices.push_back(std::move(node));
      }
      mcfg = x86::McfgEntry{pci_->ecam.base, 0, 0};
    }
    x86::write_acpi_tables(vm.memory, c.vcpus, devices, mcfg);
    x86::write_long_mode_tables(vm.memory);
    log::debug(
        "kernel at [{:#x}, {:#x}), runs in [{:#x}, {:#x}), initrd at [{:#x}, {:#x}), entry {:#x}",
        boot_.kernel.gpa, boot_.kernel.end(), boot_.kernel_run.gpa, boot_.kernel_run.end(),
        boot_.initrd.gpa, boot_.initrd.end(), boot_.entry);
  }

  void setup_vcpu(MachineContext& vm, KvmVcpu& vcpu) override {
    if (!supported_cpuid_) {
      try {
        supported_cpuid_ = x86::supported_cpuid(vm.kvm.kvm());
      } catch (const SystemError& e) {
        // Some software-assisted KVMs (e.g. PVM) refuse the query; their vCPUs then report
        // the KVM module's default CPUID, which is enough for freestanding guests.
        log::debug("{}; the guest sees this KVM's default CPUID", e.what());
        supported_cpuid_.emplace();
      }
      tsc_deadline_timer_ =
          kOfferTscDeadlineTimer && vm.kvm.kvm().check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    }
    if (!supported_cpuid_->empty()) {
      x86::set_cpuid(vcpu, x86::guest_cpuid(*supported_cpuid_,
                                            {vcpu.index(), vm.config.vcpus, tsc_deadline_timer_}));
    }
    x86::setup_platform_state(vcpu);
    if (vcpu.index() != 0) return;  // APs wait for INIT/SIPI from the guest, in the kernel's LAPIC
    x86::set_sregs(vcpu, x86::long_mode_sregs(x86::get_sregs(vcpu)));
    kvm_regs regs{};
    regs.rflags = 0x2;  // bit 1 is reserved and always set
    regs.rip = boot_.entry;
    regs.rsi = boot_.zero_page;  // the 64-bit boot protocol: RSI points at struct boot_params
    x86::set_regs(vcpu, regs);
  }

  uint64_t instruction_pointer(KvmVcpu& vcpu) const override { return x86::get_regs(vcpu).rip; }
  bool instruction_pointer_past_writes() const override { return true; }
  std::vector<SeccompRule> seccomp_rules(ThreadRole role, const SeccompFds& fds) const override {
    return instruction_pointer_rule(role, fds, KVM_GET_REGS);
  }

  // The ACPI fixed-feature power button (PM1 PWRBTN_STS and the SCI): Linux's ACPI button
  // driver turns it into KEY_POWER, on which systemd-logind (or acpid) powers off. False until
  // the guest enables the event (a guest without that driver never does).
  bool press_power_button() override { return pm_ && pm_->press_power_button(); }

  // Each device is a LNRO0005 node in the DSDT (namespace order is probe order: the first disk
  // is vda), and a `virtio_mmio.device=` parameter for kernels booted without ACPI.
  void describe_virtio_mmio(uint64_t base, uint64_t size, uint32_t irq) override {
    acpi_devices_.push_back(
        x86::virtio_mmio_node(static_cast<uint32_t>(acpi_devices_.size()), base, size, irq));
    virtio_cmdline_.push_back(fmt::format("virtio_mmio.device={}@{:#x}:{}", size, base, irq));
  }

  // KVM's default x86 routes (GSI 0-15 to the IOAPIC and the PICs, 16-23 to the IOAPIC); MSI
  // routes from GSI 24.
  std::optional<GsiRouting> gsi_routing() const override {
    GsiRouting routing;
    const auto chip = [&routing](uint32_t gsi, uint32_t irqchip, uint32_t pin) {
      kvm_irq_routing_entry e{};
      e.gsi = gsi;
      e.type = KVM_IRQ_ROUTING_IRQCHIP;
      e.u.irqchip.irqchip = irqchip;
      e.u.irqchip.pin = pin;
      routing.irqchip_routes.push_back(e);
    };
    for (uint32_t gsi = 0; gsi < x86::kMpIoapicPins; ++gsi) {
      chip(gsi, KVM_IRQCHIP_IOAPIC, gsi);
      if (gsi < 16) chip(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8);
    }
    routing.first_msi_gsi = x86::kMpIoapicPins;
    return routing;
  }

  // The bridge is PCI0 (PNP0A08) in the DSDT with its windows, and its ECAM is in an MCFG
  // table; kernels without ACPI find bus 0 through 0xCF8/0xCFC by themselves.
  void describe_pci(MachineContext& /*vm*/, const pci::HostBridgeLayout& layout) override {
    pci_ = layout;
  }
  // In the bridge's _PRT (IOAPIC pins are GSIs here).
  bool describe_pci_intx(uint8_t device, uint8_t pin, uint32_t irq) override {
    intx_.push_back({device, pin, irq});
    return true;
  }

 private:
  x86::LinuxBootInfo boot_;
  std::shared_ptr<x86::AcpiPmDevice> pm_;
  std::vector<std::string> virtio_cmdline_;   // only for kernels without ACPI
  std::optional<pci::HostBridgeLayout> pci_;  // when the VM has PCI devices
  std::vector<x86::PciIntxRoute> intx_;       // PCI devices' INTx lines, for the _PRT
  std::vector<x86::aml::Bytes> acpi_devices_;
  std::optional<std::vector<kvm_cpuid_entry2>> supported_cpuid_;
  bool tsc_deadline_timer_ = false;  // offered in CPUID.1 (kOfferTscDeadlineTimer, KVM emulates it)
};

}  // namespace

std::unique_ptr<Machine> make_host_machine() {
  return std::make_unique<X86Machine>();
}

}  // namespace libvmm
