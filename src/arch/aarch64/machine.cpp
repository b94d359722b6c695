// The AArch64 machine, laid out like QEMU's `virt` board: the GIC at 0x0800_0000, a PL011 at
// 0x0900_0000, virtio-mmio devices from 0x0A00_0000 and RAM from 0x4000_0000. KVM provides the
// vGIC (v2 or v3), the architected timer and PSCI (CPU_ON starts secondary vCPUs; SYSTEM_OFF and
// SYSTEM_RESET come back as KVM_EXIT_SYSTEM_EVENT). Linux boots from its arm64 `Image` with a
// device tree generated (or a user's patched) at run time.
#include "../machine.hpp"

#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <optional>

#include "board.hpp"
#include "kvm_arm.hpp"
#include "libvmm/arch/aarch64/fdt.hpp"
#include "libvmm/arch/aarch64/image.hpp"
#include "libvmm/arch/aarch64/pl011_fdt.hpp"
#include "libvmm/arch/pci_ecam_fdt.hpp"
#include "libvmm/arch/virtio_mmio_fdt.hpp"
#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/core/bus.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/file.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/core/kvm_device.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/unique_fd.hpp"
#include "libvmm/core/vm_config.hpp"
#include "libvmm/devices/pl011.hpp"
#include "libvmm/devices/pl031.hpp"
#include "libvmm/devices/pl061.hpp"
#include "options.hpp"

namespace libvmm {

const Board& aarch64_board();

namespace {

using aarch64::GicVersion;

using namespace aarch64;  // the board's addresses (board.hpp)

// The vGIC the config asks for (<gic>, --gic), or what the host's KVM offers (a GICv3 host
// usually has no vGICv2).
aarch64::GicOption choose_gic(const VmConfig& config, const KvmVm& vm) {
  if (auto asked = aarch64::gic_option(config)) return *asked;
  if (vm.supports_device(KVM_DEV_TYPE_ARM_VGIC_V3)) {
    return {GicVersion::v3, "this host's vGIC (a GICv3)"};
  }
  if (vm.supports_device(KVM_DEV_TYPE_ARM_VGIC_V2)) {
    return {GicVersion::v2, "this host's vGIC (a GICv2: its KVM offers no vGICv3)"};
  }
  throw UserError("this host's KVM offers no vGIC (neither a GICv3 nor a GICv2)");
}

// KVM's in-kernel vGIC. Addresses are set at once; the GIC is initialized once every vCPU
// exists (KVM sizes the redistributors from them).
class Vgic {
 public:
  Vgic(const KvmVm& vm, const aarch64::GicOption& choice, uint32_t vcpus) {
    const GicVersion version = choice.version;
    const uint32_t type =
        version == GicVersion::v3 ? KVM_DEV_TYPE_ARM_VGIC_V3 : KVM_DEV_TYPE_ARM_VGIC_V2;
    const char* name = version == GicVersion::v3 ? "vGICv3" : "vGICv2";
    if (!vm.supports_device(type)) {
      throw UserError(fmt::format("{}: this host's KVM offers no {} (try {})", choice.label, name,
                                  version == GicVersion::v3 ? "v2" : "v3"));
    }
    if (version == GicVersion::v2 && vcpus > aarch64::kGicV2MaxCpus) {
      // Said before any vCPU or device is made.
      throw UserError(fmt::format("{}: a GICv2 serves at most {} vCPUs, the VM has {}",
                                  choice.label, aarch64::kGicV2MaxCpus, vcpus));
    }
    device_.emplace(vm, type, name);
    description_.version = version;
    description_.dist_base = kGicDistBase;
    description_.dist_size = kGicDistSize;
    if (version == GicVersion::v3) {
      description_.cpu_or_redist_base = kGicRedistBase;
      description_.cpu_or_redist_size = uint64_t{vcpus} * kRedistFrameSize;
      set_address(KVM_VGIC_V3_ADDR_TYPE_DIST, kGicDistBase, "distributor address");
      set_address(KVM_VGIC_V3_ADDR_TYPE_REDIST, kGicRedistBase, "redistributor address");
    } else {
      description_.cpu_or_redist_base = kGicCpuBase;
      description_.cpu_or_redist_size = KVM_VGIC_V2_CPU_SIZE;
      set_address(KVM_VGIC_V2_ADDR_TYPE_DIST, kGicDistBase, "distributor address");
      set_address(KVM_VGIC_V2_ADDR_TYPE_CPU, kGicCpuBase, "CPU interface address");
    }
  }

  // Adds the ITS, which turns PCI functions' MSIs into LPIs (v3 only, where the host's KVM
  // emulates one); before initialize(). False: no ITS, PCI devices get INTx only.
  bool add_its(const KvmVm& vm) {
    if (its_) return true;
    if (description_.version != GicVersion::v3 || !vm.supports_device(KVM_DEV_TYPE_ARM_VGIC_ITS)) {
      return false;
    }
    its_.emplace(vm, KVM_DEV_TYPE_ARM_VGIC_ITS, "vGICv3 ITS");
    uint64_t base = kGicItsBase;
    its_->set_attr(KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_ITS_ADDR_TYPE, &base, "ITS address");
    its_->set_attr(KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, nullptr, "ITS init");
    description_.its_base = kGicItsBase;
    description_.its_size = kGicItsSize;
    return true;
  }
  bool has_its() const { return its_.has_value(); }

  // After the last vCPU is created: no vCPU can be added afterwards.
  void initialize() {
    device_->set_attr(KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, nullptr, "init");
  }

  const aarch64::GicDescription& description() const { return description_; }

 private:
  void set_address(uint64_t type, uint64_t gpa, const char* what) {
    device_->set_attr(KVM_DEV_ARM_VGIC_GRP_ADDR, type, &gpa, what);
  }

  std::optional<KvmDevice> device_;
  std::optional<KvmDevice> its_;
  aarch64::GicDescription description_;
};

constexpr uint64_t reg_pc() {
  return offsetof(kvm_regs, regs.pc);
}
constexpr uint64_t reg_pstate() {
  return offsetof(kvm_regs, regs.pstate);
}
constexpr uint64_t reg_x(unsigned n) {
  return offsetof(kvm_regs, regs.regs) + n * sizeof(uint64_t);
}

// EL1 with SP_EL1, debug, SError, IRQ and FIQ masked (arm64 booting protocol).
constexpr uint64_t kBootPstate = PSR_MODE_EL1h | PSR_D_BIT | PSR_A_BIT | PSR_I_BIT | PSR_F_BIT;

class Aarch64Machine : public Machine {
 public:
  const Board& board() const override { return aarch64_board(); }

  void create_interrupt_controller(MachineContext& vm) override {
    const VmConfig& c = vm.config;
    vgic_.emplace(vm.kvm, choose_gic(c, vm.kvm), c.vcpus);
    // Aborts without a valid syndrome come to us (reported) instead of killing the VM in KVM.
    nisv_to_user_ = vm.kvm.try_enable_cap(KVM_CAP_ARM_NISV_TO_USER);
    log::debug("{}, undecodable aborts {}",
               vgic_->description().version == GicVersion::v3 ? "vGICv3" : "vGICv2",
               nisv_to_user_ ? "reported by vmm" : "handled by KVM (no KVM_CAP_ARM_NISV_TO_USER)");
  }

  void add_platform_devices(MachineContext& vm) override {
    std::shared_ptr<CharBackend> serial = open_char_backend(
        vm.config.serial, vm.config.label("serial"),
        [&vm] { vm.request_stop(StopReason::quit, "quit from the console"); },
        [&vm] { vm.request_shutdown(); });
    auto uart = std::make_shared<Pl011>("pl011", serial, vm.irq(kUartIntid));
    vm.mmio.attach(kUartBase, Pl011::kWindowSize, uart);
    uart->start(vm.loop);
    auto node = std::make_shared<aarch64::Pl011Fdt>(kUartBase, kUartIntid);
    node->size = Pl011::kWindowSize;
    board_nodes_.push_back(std::move(node));

    vm.mmio.attach(kRtcBase, Pl031::kWindowSize, std::make_shared<Pl031>());
    board_nodes_.push_back(std::make_shared<aarch64::Pl031Fdt>(kRtcBase));

    // The power key: a PL061 line, pressed by press_power_button() and released by a timer on
    // the event loop once 100 ms have passed (as QEMU's gpio-key) and the guest has read the
    // line: gpio-keys reads the level after its debounce delay, and a guest slower than the
    // press would see a released key and report nothing. A guest that never reads it gets the
    // key released after kPowerKeyLongestHold.
    gpio_ = std::make_shared<Pl061>(vm.irq(kGpioIntid));
    vm.mmio.attach(kGpioBase, Pl061::kWindowSize, gpio_);
    board_nodes_.push_back(std::make_shared<aarch64::Pl061Fdt>(kGpioBase, kGpioIntid));
    key_release_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!key_release_) throw_errno("timerfd_create");
    vm.loop.add(key_release_.get(), EPOLLIN, [this](uint32_t) {
      uint64_t expirations = 0;
      if (::read(key_release_.get(), &expirations, sizeof expirations) != sizeof expirations) {
        return;
      }
      const std::chrono::steady_clock::time_point pressed{
          std::chrono::steady_clock::duration(key_pressed_at_.load(std::memory_order_relaxed))};
      const bool held_long = std::chrono::steady_clock::now() - pressed >= kPowerKeyLongestHold;
      if (gpio_->input_seen(kPowerKeyLine) || held_long || !arm_key_release()) {
        gpio_->set_input(kPowerKeyLine, false);
      }
    });
  }

  // Presses the power key if the guest listens to its line (gpio-keys enabled its interrupt).
  // On the event loop's thread (vmm's stop signals, Ctrl-A s), which may arm the timer.
  bool press_power_button() override {
    if (!gpio_ || !gpio_->interrupt_enabled(kPowerKeyLine)) return false;
    gpio_->set_input(kPowerKeyLine, true);
    key_pressed_at_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                          std::memory_order_relaxed);
    if (!arm_key_release()) gpio_->set_input(kPowerKeyLine, false);  // at once: a shorter press
    return true;
  }

  // The release timer checks again in 100 ms; false if it could not be armed.
  bool arm_key_release() {
    itimerspec when{};
    when.it_value.tv_nsec = 100'000'000;
    return ::timerfd_settime(key_release_.get(), 0, &when, nullptr) == 0;
  }

  void load_guest(MachineContext& vm) override {
    const VmConfig& c = vm.config;
    // Mapped, not read: the Image's bytes are copied once, into guest RAM.
    const MappedFile kernel_file = MappedFile::open(c.kernel, c.label("kernel"));
    const aarch64::ArmImage image = aarch64::parse_arm64_image(
        kernel_file.bytes(), c.label("kernel") + " " + c.kernel.string());
    // The initrd too (a distribution's is tens of MiB): copied once, not zero-filled, read, copied.
    const MappedFile initrd_file = MappedFile::open_if_given(c.initrd, c.label("initrd"));
    const std::span<const uint8_t> initrd = initrd_file.bytes();
    const aarch64::ArmBootPlan plan =
        aarch64::plan_arm64_boot(image, kRamBase, c.memory_size, initrd.size());

    aarch64::FdtMachine fdt;
    fdt.memory.push_back({kRamBase, c.memory_size});
    fdt.cpus = c.vcpus;
    fdt.gic = vgic_->description();
    fdt.board = board_nodes_;
    fdt.devices = device_nodes_;
    fdt.bootargs = c.cmdline;
    if (!initrd.empty()) fdt.initrd = plan.initrd;
    std::vector<uint8_t> dtb;
    const std::optional<aarch64::DtbOption> user_dtb = aarch64::dtb_option(c);
    const std::optional<aarch64::DtbOption> overlay = aarch64::dtb_overlay_option(c);
    if (user_dtb && pci_node_) {
      // Its interrupt-map and msi-parent name our GIC's and ITS's phandles, which a user's
      // tree numbers its own way.
      throw UserError(fmt::format(
          "{}: PCI devices (transport=pci, --vfio) need the generated device tree (or a "
          "--dtb-overlay on it); give them transport=mmio to boot with this tree",
          user_dtb->label()));
    }
    if (!user_dtb && !overlay) {
      dtb = aarch64::build_fdt(fdt);
    } else {
      // The user's tree (or ours), then the overlay, then vmm's patches: memory, chosen and
      // the devices are what this VM has, whatever the overlay says.
      std::vector<uint8_t> base =
          user_dtb ? read_file(user_dtb->path, user_dtb->what) : aarch64::build_fdt(fdt);
      std::string label = user_dtb ? user_dtb->label() : "the generated device tree";
      if (overlay) {
        base = apply_fdt_overlay(base, label, read_file(overlay->path, overlay->what),
                                 overlay->label());
        label += " with ";  // appended: GCC 12 -O3 -Wrestrict
        label += overlay->label();
      }
      dtb = aarch64::patch_fdt(base, fdt, label);
    }
    if (dtb.size() > plan.dtb.size) {
      throw UserError(fmt::format(
          "{}: the device tree ({} bytes) is larger than the {} bytes the boot protocol allows",
          user_dtb ? user_dtb->label() : "device tree", dtb.size(), plan.dtb.size));
    }
    boot_ = aarch64::load_arm64(vm.memory, image, plan, initrd, dtb);
    kernel_ = image;
    kernel_.bytes = {};
    kernel_file.check_intact();
    initrd_file.check_intact();
    log::debug(
        "kernel at [{:#x}, {:#x}), entry {:#x}, initrd at [{:#x}, {:#x}), dtb at [{:#x}, {:#x})",
        boot_.kernel.gpa, boot_.kernel.end(), boot_.entry_gpa, boot_.initrd.gpa, boot_.initrd.end(),
        boot_.dtb.gpa, boot_.dtb.end());
  }

  void setup_vcpu(MachineContext& vm, KvmVcpu& vcpu) override {
    aarch64::init_vcpu(vm.kvm, vcpu);
    if (vcpu.index() == 0) {
      // What the guest's CPU translates, as KVM shows it (a 16 KiB kernel on a CPU without
      // that granule would stop before its first console line).
      uint64_t mmfr0 = 0;
      bool known = true;
      try {
        mmfr0 = vcpu.get_one_reg(aarch64::sys_reg_id(3, 0, 0, 7, 0));  // ID_AA64MMFR0_EL1
      } catch (const SystemError& e) {
        known = false;  // a check, not a need: the guest may boot all the same
        log::debug("the guest CPU's translation granules are unknown: {}", e.what());
      }
      if (known) aarch64::check_arm64_page_size(kernel_, mmfr0);
      // Secondary vCPUs start powered off; KVM sets their state on the guest's PSCI CPU_ON.
      vcpu.set_one_reg(aarch64::core_reg_id(reg_pstate()), kBootPstate);
      vcpu.set_one_reg(aarch64::core_reg_id(reg_pc()), boot_.entry_gpa);
      vcpu.set_one_reg(aarch64::core_reg_id(reg_x(0)), boot_.dtb_gpa);
      for (unsigned n = 1; n <= 3; ++n) vcpu.set_one_reg(aarch64::core_reg_id(reg_x(n)), 0);
    }
    if (vcpu.index() + 1 == vm.config.vcpus) vgic_->initialize();
  }

  uint64_t instruction_pointer(KvmVcpu& vcpu) const override {
    return vcpu.get_one_reg(aarch64::core_reg_id(reg_pc()));
  }
  std::vector<SeccompRule> seccomp_rules(ThreadRole role, const SeccompFds& fds) const override {
    return instruction_pointer_rule(role, fds, KVM_GET_ONE_REG);
  }

  void describe_virtio_mmio(uint64_t base, uint64_t size, uint32_t irq) override {
    device_nodes_.push_back(VirtioMmioFdt::at(base, size, irq));
  }

  // pci-host-ecam-generic in the device tree; MSIs through the GICv3 ITS where KVM has one.
  void describe_pci(MachineContext& vm, const pci::HostBridgeLayout& layout) override {
    pci_node_ = std::make_shared<PciEcamFdt>();
    pci_node_->layout = layout;
    if (vgic_->add_its(vm.kvm)) {
      pci_node_->msi_parent = "its";
      log::debug("PCI: MSIs through the vGICv3 ITS at {:#x}", kGicItsBase);
    } else {
      log::info("PCI: {}, so PCI devices interrupt through INTx lines (no MSIs)",
                vgic_->description().version == GicVersion::v2
                    ? "a GICv2 has no ITS"
                    : "this host's KVM has no vGICv3 ITS");
    }
    device_nodes_.push_back(pci_node_);
  }
  bool describe_pci_intx(uint8_t device, uint8_t pin, uint32_t irq) override {
    if (!pci_node_) return false;
    pci_node_->intx.push_back({device, pin, irq});
    return true;
  }
  bool pci_msi() const override { return vgic_ && vgic_->has_its(); }
  // With the ITS: the vGIC's own routes (GSI n = SPI n, as KVM sets them by default) for the
  // board's SPIs, then MSI routes carrying each function's requester ID.
  std::optional<GsiRouting> gsi_routing() const override {
    if (!pci_msi()) return std::nullopt;
    GsiRouting routing;
    const uint32_t spis = board().irq_count() - aarch64::kFirstSpiIntid;
    routing.irqchip_routes = identity_irqchip_routes(spis);
    routing.first_msi_gsi = spis;
    routing.msi_devid = true;
    return routing;
  }

  // Irqfds take GSIs: with the vGIC, GSI n is SPI n, i.e. INTID n + 32. KVM_IRQ_LINE takes the
  // interrupt's type and INTID.
  KvmIrqRoute kvm_irq(uint32_t number) const override {
    return {number - aarch64::kFirstSpiIntid,
            (uint32_t{KVM_ARM_IRQ_TYPE_SPI} << KVM_ARM_IRQ_TYPE_SHIFT) | number};
  }

  bool handle_exit(MachineContext& vm, KvmVcpu& vcpu) override {
    kvm_run& run = vcpu.state();
    if (run.exit_reason != KVM_EXIT_ARM_NISV) return false;
    report_undecodable_abort(vm, vcpu, run.arm_nisv.fault_ipa, run.arm_nisv.esr_iss);
    return true;
  }

 private:
  // A data abort on a device address whose instruction KVM cannot describe (no valid ISV:
  // load/store pair, writeback, SIMD, ...): we cannot emulate it, so the VM stops.
  void report_undecodable_abort(MachineContext& vm, KvmVcpu& vcpu, uint64_t ipa, uint64_t iss) {
    const bool write = (iss & (1u << 6)) != 0;  // ESR_ELx.WnR
    const Bus::Entry* device = vm.mmio.find(ipa);
    uint64_t pc = 0;
    try {
      pc = instruction_pointer(vcpu);
    } catch (const std::exception&) {
    }
    log::error(
        "guest fault: vCPU {} {} at guest-physical {:#x} (instruction pointer {:#x}) with an "
        "instruction KVM cannot decode (no valid syndrome, ESR ISS {:#x})",
        vcpu.index(), write ? "write" : "read", ipa, pc, iss);
    // KVM sends writes to read-only memory (a map with readonly) this way too.
    const GuestMapping* mapping = vm.memory.find(ipa);
    if (device == nullptr && mapping != nullptr && mapping->readonly) {
      log::error(
          "  the address belongs to memory '{}' at [{:#x}, {:#x}), which is read-only for "
          "the guest",
          mapping->region->name(), mapping->gpa, mapping->end());
      log::error("  to fix it: give the guest a writable map there if it is to write it");
    } else {
      log::error("  the address belongs to {}",
                 device ? fmt::format("device '{}' at [{:#x}, {:#x})", device->device->name(),
                                      device->base, device->end())
                        : std::string("no device: nothing is mapped there"));
      log::error(
          "  to fix it: access device registers with single loads/stores without writeback "
          "(Linux's readl/writel do), not load/store pairs, pre/post-indexing or SIMD");
    }
    vm.request_stop(StopReason::fault, fmt::format("vCPU {}: undecodable {} at {:#x}", vcpu.index(),
                                                   write ? "write" : "read", ipa));
  }

  std::optional<Vgic> vgic_;
  bool nisv_to_user_ = false;
  std::shared_ptr<Pl061> gpio_;  // the power key's controller
  UniqueFd key_release_;         // timerfd: releases the power key
  // Written by whichever loop presses the button (vmm presses every VM's from the first VM's
  // loop), read by this VM's release timer: atomic.
  std::atomic<std::chrono::steady_clock::rep> key_pressed_at_{0};
  static constexpr std::chrono::seconds kPowerKeyLongestHold{10};
  // What describes itself in the device tree: the board's devices (PL011) and the ones placed
  // for the config (virtio-mmio).
  std::vector<std::shared_ptr<const FdtNodeSource>> board_nodes_;
  std::vector<std::shared_ptr<const FdtNodeSource>> device_nodes_;
  std::shared_ptr<PciEcamFdt> pci_node_;  // when the VM has PCI devices (in device_nodes_)
  aarch64::ArmBootInfo boot_;
  aarch64::ArmImage kernel_;  // the header's facts, for the vCPU checks (bytes unmapped)
};

}  // namespace

std::unique_ptr<Machine> make_host_machine() {
  return std::make_unique<Aarch64Machine>();
}

}  // namespace libvmm
