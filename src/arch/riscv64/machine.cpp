// The RISC-V machine, laid out like QEMU's `virt` board (board.hpp): RAM from 0x8000_0000, a
// 16550A at 0x1000_0000, virtio-mmio devices from 0x1000_1000, the interrupt controller at
// 0x0c00_0000 and, in a VM with PCI devices, a PCI host bridge at 0x3000_0000. KVM provides the
// harts, their timer (Sstc or SBI TIME) and most of SBI: HSM starts the secondary harts (KVM
// keeps every hart but the first stopped until the guest asks), SRST comes back as
// KVM_EXIT_SYSTEM_EVENT; the SBI calls KVM hands to user space are answered "not supported"
// here, each reported once. The interrupt controller is KVM's in-kernel AIA where the host's KVM
// has it (an APLIC in MSI mode and one IMSIC supervisor interrupt file per hart, device lines
// through KVM_IRQ_LINE, PCI functions' MSIs straight to the IMSIC files), else a PLIC emulated
// by vmm (plic.hpp), one supervisor context per hart, whose outputs raise and lower each hart's
// external interrupt with KVM_INTERRUPT; --irqchip chooses. Linux boots from its riscv64 `Image`
// with a device tree generated (or a user's patched) at run time, its harts' ISA and timebase
// as KVM reports.
#include "../machine.hpp"

#include <fmt/format.h>
#include <linux/kvm.h>

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "../device_tree_options.hpp"
#include "board.hpp"
#include "libvmm/arch/pci_ecam_fdt.hpp"
#include "libvmm/arch/riscv64/fdt.hpp"
#include "libvmm/arch/riscv64/image.hpp"
#include "libvmm/arch/riscv64/plic.hpp"
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
#include "libvmm/core/vm_config.hpp"
#include "libvmm/devices/uart16550.hpp"
#include "options.hpp"

namespace libvmm {

const Board& riscv64_board();

namespace {

using namespace riscv64;  // the board's addresses (board.hpp)

// One-reg ids (asm/kvm.h): registers are unsigned long, 64 bits here.
constexpr uint64_t reg_id(uint64_t type, uint64_t index) {
  return KVM_REG_RISCV | KVM_REG_SIZE_U64 | type | index;
}
constexpr uint64_t core_reg(size_t offset_in_kvm_riscv_core) {
  return reg_id(KVM_REG_RISCV_CORE, offset_in_kvm_riscv_core / sizeof(unsigned long));
}
constexpr uint64_t kRegPc = core_reg(offsetof(kvm_riscv_core, regs.pc));
constexpr uint64_t kRegA0 = core_reg(offsetof(kvm_riscv_core, regs.a0));
constexpr uint64_t kRegA1 = core_reg(offsetof(kvm_riscv_core, regs.a1));
constexpr uint64_t kRegMode = core_reg(offsetof(kvm_riscv_core, mode));
constexpr uint64_t kRegIsa = reg_id(KVM_REG_RISCV_CONFIG, KVM_REG_RISCV_CONFIG_REG(isa));
constexpr uint64_t kRegSatpMode = reg_id(KVM_REG_RISCV_CONFIG, KVM_REG_RISCV_CONFIG_REG(satp_mode));
constexpr uint64_t kRegTimebase = reg_id(KVM_REG_RISCV_TIMER, KVM_REG_RISCV_TIMER_REG(frequency));
constexpr uint64_t isa_ext_reg(uint64_t id) {
  return reg_id(KVM_REG_RISCV_ISA_EXT, KVM_REG_RISCV_ISA_SINGLE | id);
}
constexpr uint64_t sbi_ext_reg(uint64_t id) {
  return reg_id(KVM_REG_RISCV_SBI_EXT, KVM_REG_RISCV_SBI_SINGLE | id);
}

// The multi-letter extensions KVM can give a hart, by KVM_RISCV_ISA_EXT_* id, as riscv,isa
// names them. Zicbom and Zicboz are left out: their block sizes would need device-tree
// properties this tree does not write.
struct MultiLetter {
  uint64_t id;
  const char* name;
};
constexpr MultiLetter kMultiLetter[] = {
    {KVM_RISCV_ISA_EXT_ZICNTR, "zicntr"},
    {KVM_RISCV_ISA_EXT_ZICOND, "zicond"},
    {KVM_RISCV_ISA_EXT_ZICSR, "zicsr"},
    {KVM_RISCV_ISA_EXT_ZIFENCEI, "zifencei"},
    {KVM_RISCV_ISA_EXT_ZIHINTNTL, "zihintntl"},
    {KVM_RISCV_ISA_EXT_ZIHINTPAUSE, "zihintpause"},
    {KVM_RISCV_ISA_EXT_ZIHPM, "zihpm"},
    {KVM_RISCV_ISA_EXT_ZIMOP, "zimop"},
    {KVM_RISCV_ISA_EXT_ZACAS, "zacas"},
    {KVM_RISCV_ISA_EXT_ZAWRS, "zawrs"},
    {KVM_RISCV_ISA_EXT_ZFA, "zfa"},
    {KVM_RISCV_ISA_EXT_ZFH, "zfh"},
    {KVM_RISCV_ISA_EXT_ZFHMIN, "zfhmin"},
    {KVM_RISCV_ISA_EXT_ZCA, "zca"},
    {KVM_RISCV_ISA_EXT_ZCB, "zcb"},
    {KVM_RISCV_ISA_EXT_ZCD, "zcd"},
    {KVM_RISCV_ISA_EXT_ZCF, "zcf"},
    {KVM_RISCV_ISA_EXT_ZCMOP, "zcmop"},
    {KVM_RISCV_ISA_EXT_ZBA, "zba"},
    {KVM_RISCV_ISA_EXT_ZBB, "zbb"},
    {KVM_RISCV_ISA_EXT_ZBC, "zbc"},
    {KVM_RISCV_ISA_EXT_ZBKB, "zbkb"},
    {KVM_RISCV_ISA_EXT_ZBKC, "zbkc"},
    {KVM_RISCV_ISA_EXT_ZBKX, "zbkx"},
    {KVM_RISCV_ISA_EXT_ZBS, "zbs"},
    {KVM_RISCV_ISA_EXT_ZKND, "zknd"},
    {KVM_RISCV_ISA_EXT_ZKNE, "zkne"},
    {KVM_RISCV_ISA_EXT_ZKNH, "zknh"},
    // Not Zkr: see setup_vcpu().
    {KVM_RISCV_ISA_EXT_ZKSED, "zksed"},
    {KVM_RISCV_ISA_EXT_ZKSH, "zksh"},
    {KVM_RISCV_ISA_EXT_ZKT, "zkt"},
    {KVM_RISCV_ISA_EXT_ZTSO, "ztso"},
    {KVM_RISCV_ISA_EXT_ZVBB, "zvbb"},
    {KVM_RISCV_ISA_EXT_ZVBC, "zvbc"},
    {KVM_RISCV_ISA_EXT_ZVFH, "zvfh"},
    {KVM_RISCV_ISA_EXT_ZVFHMIN, "zvfhmin"},
    {KVM_RISCV_ISA_EXT_ZVKB, "zvkb"},
    {KVM_RISCV_ISA_EXT_ZVKG, "zvkg"},
    {KVM_RISCV_ISA_EXT_ZVKNED, "zvkned"},
    {KVM_RISCV_ISA_EXT_ZVKNHA, "zvknha"},
    {KVM_RISCV_ISA_EXT_ZVKNHB, "zvknhb"},
    {KVM_RISCV_ISA_EXT_ZVKSED, "zvksed"},
    {KVM_RISCV_ISA_EXT_ZVKSH, "zvksh"},
    {KVM_RISCV_ISA_EXT_ZVKT, "zvkt"},
    {KVM_RISCV_ISA_EXT_SMSTATEEN, "smstateen"},
    {KVM_RISCV_ISA_EXT_SSAIA, "ssaia"},
    {KVM_RISCV_ISA_EXT_SSCOFPMF, "sscofpmf"},
    {KVM_RISCV_ISA_EXT_SSTC, "sstc"},
    {KVM_RISCV_ISA_EXT_SVINVAL, "svinval"},
    {KVM_RISCV_ISA_EXT_SVNAPOT, "svnapot"},
    {KVM_RISCV_ISA_EXT_SVPBMT, "svpbmt"},
};

constexpr long kSbiErrNotSupported = -2;  // SBI_ERR_NOT_SUPPORTED
// Unimplemented SBI extensions reported, at most: the extension ID is any 64-bit value a guest
// puts in a7.
constexpr size_t kSbiExtensionsReported = 32;

// Zkr's entropy source CSR and its "unrecoverable" answer (OPST = DEAD, bits 31:30): a guest
// that reads it stops asking.
constexpr unsigned long kCsrSeed = 0x015;
constexpr unsigned long kSeedOpstDead = 3ul << 30;

// What KVM tells about a hart, for the device tree.
struct HartView {
  std::string isa;
  std::string mmu_type = "riscv,sv39";
  uint64_t timebase_hz = 0;
};

HartView read_hart_view(KvmVcpu& vcpu) {
  HartView view;
  std::vector<std::string> extensions;
  for (const MultiLetter& ext : kMultiLetter) {
    try {
      if (vcpu.get_one_reg(isa_ext_reg(ext.id)) != 0) extensions.emplace_back(ext.name);
    } catch (const SystemError&) {
      // An extension this host's KVM does not know: the hart does not have it.
    }
  }
  view.isa = riscv_isa_string(vcpu.get_one_reg(kRegIsa), extensions);
  try {
    if (auto mmu = mmu_type_of_satp_mode(vcpu.get_one_reg(kRegSatpMode))) view.mmu_type = *mmu;
  } catch (const SystemError&) {
    // Hosts before 6.4 do not report it; every rv64 MMU has Sv39.
  }
  view.timebase_hz = vcpu.get_one_reg(kRegTimebase);
  return view;
}

// KVM's in-kernel AIA (KVM_DEV_TYPE_RISCV_AIA): its APLIC at kIrqchipBase takes the wired
// sources 1..kIrqSources-1 and sends them as MSIs to the harts' IMSIC supervisor files, one
// page each from kImsicBase. The IMSIC addresses name vCPUs, so they are set as each vCPU is
// created; CTRL_INIT comes with the last one (KVM wants every vCPU's IMSIC address).
class Aia {
 public:
  Aia(const KvmVm& vm, uint32_t vcpus) : device_(vm, KVM_DEV_TYPE_RISCV_AIA, "AIA") {
    const uint32_t sources = kIrqSources - 1;
    set_config(KVM_DEV_RISCV_AIA_CONFIG_SRCS, sources, "number of wired interrupt sources");
    uint32_t hart_bits = 0;
    while ((1u << hart_bits) < vcpus) ++hart_bits;
    set_config(KVM_DEV_RISCV_AIA_CONFIG_HART_BITS, hart_bits, "hart index bits");
    // The interrupt identities of each file: KVM's default, the most this host's IMSIC has.
    device_.get_attr(KVM_DEV_RISCV_AIA_GRP_CONFIG, KVM_DEV_RISCV_AIA_CONFIG_IDS, &ids_,
                     "number of interrupt identities");
    device_.get_attr(KVM_DEV_RISCV_AIA_GRP_CONFIG, KVM_DEV_RISCV_AIA_CONFIG_MODE, &mode_, "mode");
    const uint64_t aplic = kIrqchipBase;
    device_.set_attr(KVM_DEV_RISCV_AIA_GRP_ADDR, KVM_DEV_RISCV_AIA_ADDR_APLIC, &aplic,
                     "APLIC address");
  }

  // vCPU `index` exists: its IMSIC file's address.
  void add_vcpu(uint32_t index) {
    const uint64_t imsic = kImsicBase + uint64_t{index} * kImsicPageSize;
    device_.set_attr(KVM_DEV_RISCV_AIA_GRP_ADDR, KVM_DEV_RISCV_AIA_ADDR_IMSIC(index), &imsic,
                     "IMSIC address");
  }
  // Every vCPU exists and has its IMSIC address.
  void initialize() {
    device_.set_attr(KVM_DEV_RISCV_AIA_GRP_CTRL, KVM_DEV_RISCV_AIA_CTRL_INIT, nullptr,
                     "initialization");
  }

  uint32_t ids() const { return ids_; }
  const char* mode() const {
    switch (mode_) {
      case KVM_DEV_RISCV_AIA_MODE_EMUL:
        return "IMSIC trapped and emulated";
      case KVM_DEV_RISCV_AIA_MODE_HWACCEL:
        return "IMSIC guest interrupt files";
      default:
        return "IMSIC guest interrupt files where free, else emulated";
    }
  }

 private:
  void set_config(uint64_t attr, uint32_t value, const char* what) {
    device_.set_attr(KVM_DEV_RISCV_AIA_GRP_CONFIG, attr, &value, what);
  }

  KvmDevice device_;
  uint32_t ids_ = 0;
  uint32_t mode_ = 0;
};

// A wired source of KVM's APLIC, driven with KVM_IRQ_LINE; a pulse raises and lowers it. Not
// through irqfds: KVM's irqfd only ever raises a line (its fast path injects level 1, never 0),
// so an edge-triggered source (virtio-mmio) would see its first edge and no other. Devices'
// eventfds are read by the event loop instead (Machine::emulated_irq).
class AiaLine final : public IrqLine {
 public:
  AiaLine(KvmVm& vm, uint32_t source) : vm_(vm), source_(source) {}
  uint32_t number() const override { return source_; }
  void set_level(bool asserted) override { vm_.irq_line(source_, asserted); }
  void pulse() override {
    vm_.irq_line(source_, true);
    vm_.irq_line(source_, false);
  }

 private:
  KvmVm& vm_;
  uint32_t source_;
};

class Riscv64Machine : public Machine {
 public:
  const Board& board() const override { return riscv64_board(); }

  void create_interrupt_controller(MachineContext& vm) override {
    const VmConfig& c = vm.config;
    const std::optional<IrqchipOption> asked = irqchip_option(c);
    const bool host_aia = vm.kvm.supports_device(KVM_DEV_TYPE_RISCV_AIA);
    if (asked && asked->kind == IrqchipKind::aia && !host_aia) {
      throw UserError(fmt::format(
          "{}: this host's KVM has no in-kernel AIA (it needs Linux 6.5 or later on harts with "
          "Ssaia and an IMSIC); use --irqchip plic",
          asked->label));
    }
    harts_.assign(c.vcpus, -1);
    irqchip_.base = kIrqchipBase;
    irqchip_.sources = kIrqSources;
    if (asked ? asked->kind == IrqchipKind::aia : host_aia) {
      aia_.emplace(vm.kvm, c.vcpus);
      kvm_ = &vm.kvm;
      irqchip_.kind = IrqchipKind::aia;
      irqchip_.size = kAplicSize;
      irqchip_.imsic_base = kImsicBase;
      irqchip_.imsic_stride = kImsicPageSize;
      irqchip_.imsic_ids = aia_->ids();
      log::debug("interrupt controller: KVM's AIA (APLIC, {} sources; IMSIC, {} ids per hart; {})",
                 kIrqSources - 1, aia_->ids(), aia_->mode());
      return;
    }
    plic_ = std::make_shared<Plic>(kIrqSources, c.vcpus, [this](uint32_t context, bool asserted) {
      set_external_interrupt(context, asserted);
    });
    vm.mmio.attach(kIrqchipBase, kPlicSize, plic_);
    irqchip_.kind = IrqchipKind::plic;
    irqchip_.size = kPlicSize;
    log::debug("interrupt controller: PLIC emulated by vmm ({} sources, {} contexts){}",
               kIrqSources - 1, c.vcpus, host_aia ? "" : " (this host's KVM has no AIA)");
  }

  void add_platform_devices(MachineContext& vm) override {
    std::shared_ptr<CharBackend> serial =
        open_char_backend(vm.config.serial, vm.config.label("serial"),
                          [&vm] { vm.request_stop(StopReason::quit, "quit from the console"); });
    auto uart = std::make_shared<Uart16550>("uart", serial, vm.irq(kUartIrq));
    vm.mmio.attach(kUartBase, kUartSize, uart);
    uart->start(vm.loop);
    board_nodes_.push_back(std::make_shared<Uart16550Fdt>(kUartBase, kUartIrq));
  }

  void load_guest(MachineContext& vm) override {
    const VmConfig& c = vm.config;
    // Mapped, not read: the Image's bytes are copied once, into guest RAM.
    kernel_file_.emplace(MappedFile::open(c.kernel, c.label("kernel")));
    image_ =
        parse_riscv64_image(kernel_file_->bytes(), c.label("kernel") + " " + c.kernel.string());
    // The initrd too (a distribution's is tens of MiB): copied once, not zero-filled, read, copied.
    initrd_file_.emplace(MappedFile::open_if_given(c.initrd, c.label("initrd")));
    plan_ = plan_riscv64_boot(image_, kRamBase, c.memory_size, initrd_file_->bytes().size());
    // The device tree needs the harts' ISA and timebase, which KVM tells once a vCPU exists:
    // it is written with vCPU 0's setup (setup_vcpu), before any vCPU runs.
  }

  void setup_vcpu(MachineContext& vm, KvmVcpu& vcpu) override {
    {
      std::lock_guard lock(harts_mutex_);
      harts_.at(vcpu.index()) = vcpu.fd();
    }
    // SBI v0.1 (legacy console, ...) would give the guest a second hvc0 (hvc_riscv_sbi)
    // whose calls come to us; Linux uses the v0.2+ extensions KVM implements.
    try {
      vcpu.set_one_reg(sbi_ext_reg(KVM_RISCV_SBI_EXT_V01), 0);
    } catch (const SystemError& e) {
      log::debug("vCPU {}: SBI v0.1 stays enabled: {}", vcpu.index(), e.what());
    }
    // Zkr stays out of the ISA string the guest reads: KVM sends its seed CSR here
    // (KVM_EXIT_RISCV_CSR), and a vCPU thread has no entropy source under its seccomp filter
    // (Linux then seeds KASLR and its pool from the device tree and virtio-rng). KVM does not
    // let Zkr be turned off, so a guest that probes the CSR all the same is answered in
    // handle_exit().
    if (vcpu.index() == 0) {
      write_boot_images(vm, read_hart_view(vcpu));
      vcpu.set_one_reg(kRegMode, KVM_RISCV_MODE_S);
      vcpu.set_one_reg(kRegPc, boot_.entry_gpa);
      vcpu.set_one_reg(kRegA0, 0);  // the hart id
      vcpu.set_one_reg(kRegA1, boot_.dtb_gpa);
    }
    // (The others: KVM keeps them stopped until the guest's SBI HSM start.)
    if (aia_) {
      aia_->add_vcpu(vcpu.index());
      if (vcpu.index() + 1 == vm.config.vcpus) aia_->initialize();
    }
  }

  uint64_t instruction_pointer(KvmVcpu& vcpu) const override { return vcpu.get_one_reg(kRegPc); }

  std::vector<SeccompRule> seccomp_rules(ThreadRole role, const SeccompFds& fds) const override {
    std::vector<SeccompRule> r = instruction_pointer_rule(role, fds, KVM_GET_ONE_REG);
    if (!plic_ || role == ThreadRole::vhost_backend) return r;
    static constexpr std::string_view kPlicReason =
        "the PLIC vmm emulates: a hart's external interrupt raised or lowered by a device's "
        "interrupt, or by the guest's claim and complete";
    // Every role loads its filter once the vCPUs exist (I/O threads wait for it): their
    // descriptors only.
    std::lock_guard lock(harts_mutex_);
    for (const int hart : harts_) {
      if (hart < 0) continue;
      r.push_back({"ioctl",
                   {SeccompArg::equals(0, static_cast<uint64_t>(hart)),
                    SeccompArg::equals(1, KVM_INTERRUPT)},
                   kPlicReason});
    }
    return r;
  }

  void describe_virtio_mmio(uint64_t base, uint64_t size, uint32_t irq) override {
    device_nodes_.push_back(VirtioMmioFdt::at(base, size, irq));
  }

  // pci-host-ecam-generic in the device tree; MSIs straight to the harts' IMSIC files with KVM's
  // AIA, INTx lines through the PLIC vmm emulates (it has no MSIs).
  void describe_pci(MachineContext& /*vm*/, const pci::HostBridgeLayout& layout) override {
    pci_node_ = std::make_shared<PciEcamFdt>();
    pci_node_->layout = layout;
    if (aia_) {
      pci_node_->msi_parent = "imsic";
      pci_node_->msi_device_ids = false;
      log::debug("PCI: MSIs to the harts' IMSIC files from {:#x}", kImsicBase);
    } else {
      log::info("PCI: the PLIC has no MSIs, so PCI devices interrupt through INTx lines");
    }
    device_nodes_.push_back(pci_node_);
  }
  bool describe_pci_intx(uint8_t device, uint8_t pin, uint32_t irq) override {
    if (!pci_node_) return false;
    pci_node_->intx.push_back({device, pin, irq});
    return true;
  }
  bool pci_msi() const override { return aia_.has_value(); }
  // With KVM's AIA: its own routes (GSI n = APLIC source n, as KVM sets them by default), then
  // MSI routes, which KVM delivers to the IMSIC file their address names.
  std::optional<GsiRouting> gsi_routing() const override {
    if (!aia_) return std::nullopt;
    GsiRouting routing;
    routing.irqchip_routes = identity_irqchip_routes(kIrqSources);
    routing.first_msi_gsi = kIrqSources;
    return routing;
  }

  std::shared_ptr<IrqLine> emulated_irq(uint32_t number) override {
    if (aia_) return std::make_shared<AiaLine>(*kvm_, number);
    return plic_ ? plic_->line(number) : nullptr;
  }

  bool handle_exit(MachineContext& /*vm*/, KvmVcpu& vcpu) override {
    kvm_run& run = vcpu.state();
    if (run.exit_reason == KVM_EXIT_RISCV_CSR) return answer_csr(vcpu);
    if (run.exit_reason != KVM_EXIT_RISCV_SBI) return false;
    // An SBI call KVM leaves to user space (SBI v0.1 console, DBCN, experimental or vendor
    // extensions): none is implemented here.
    const uint64_t extension = run.riscv_sbi.extension_id;
    const uint64_t function = run.riscv_sbi.function_id;
    bool first = false;
    bool last = false;
    {
      std::lock_guard lock(sbi_mutex_);
      if (reported_sbi_.size() < kSbiExtensionsReported) {
        first = reported_sbi_.insert(extension).second;
        last = first && reported_sbi_.size() == kSbiExtensionsReported;
      }
    }
    if (first) {
      log::warn(
          "vCPU {}: the guest called SBI extension {:#x} function {} (a0 = {:#x}), which vmm "
          "does not implement: answered SBI_ERR_NOT_SUPPORTED (reported once per extension{})",
          vcpu.index(), extension, function, run.riscv_sbi.args[0],
          last ? "; this is the last extension reported" : "");
    }
    run.riscv_sbi.ret[0] = static_cast<unsigned long>(kSbiErrNotSupported);
    run.riscv_sbi.ret[1] = 0;
    return true;
  }

 private:
  // A CSR access KVM does not emulate itself: Zkr's seed on a host that kept Zkr on (answered
  // "dead": the guest stops asking), anything else read as 0 with writes ignored. Each CSR
  // (a 12-bit number) is reported once.
  bool answer_csr(KvmVcpu& vcpu) {
    kvm_run& run = vcpu.state();
    const unsigned long csr = run.riscv_csr.csr_num & 0xfff;
    run.riscv_csr.ret_value = csr == kCsrSeed ? kSeedOpstDead : 0;
    bool first = false;
    {
      std::lock_guard lock(sbi_mutex_);
      first = reported_csrs_.insert(csr).second;
    }
    if (first) {
      log::warn("vCPU {}: the guest accessed CSR {:#x}, which KVM left to vmm: {} (reported once)",
                vcpu.index(), csr,
                csr == kCsrSeed ? "Zkr's seed, answered as a failed entropy source"
                                : "read as 0, writes ignored");
    }
    return true;
  }

  // The PLIC's context `hart` changed: raise or lower that hart's supervisor external
  // interrupt. KVM_INTERRUPT is one of the ioctls a vCPU takes from any thread.
  void set_external_interrupt(uint32_t hart, bool asserted) {
    int fd = -1;
    {
      std::lock_guard lock(harts_mutex_);
      if (hart < harts_.size()) fd = harts_[hart];
    }
    if (fd < 0) return;  // no vCPU yet: its context has nothing enabled
    const kvm_interrupt irq{asserted ? KVM_INTERRUPT_SET : KVM_INTERRUPT_UNSET};
    try {
      kvm_ioctl(fd, KVM_INTERRUPT, "KVM_INTERRUPT (a hart's external interrupt)", &irq);
    } catch (const std::exception& e) {
      log::error("vCPU {}: {}", hart, e.what());
    }
  }

  void write_boot_images(MachineContext& vm, const HartView& hart) {
    const VmConfig& c = vm.config;
    FdtMachine fdt;
    fdt.memory.push_back({kRamBase, c.memory_size});
    fdt.cpus = c.vcpus;
    fdt.isa = hart.isa;
    fdt.mmu_type = hart.mmu_type;
    fdt.timebase_hz = hart.timebase_hz;
    fdt.irqchip = irqchip_;
    fdt.board = board_nodes_;
    fdt.devices = device_nodes_;
    fdt.bootargs = c.cmdline;
    if (!initrd_file_->bytes().empty()) fdt.initrd = plan_.initrd;
    std::vector<uint8_t> dtb;
    const std::optional<DtbOption> user_dtb = dtb_option(c);
    const std::optional<DtbOption> overlay = dtb_overlay_option(c);
    if (user_dtb && pci_node_) {
      // Its interrupt-map and msi-parent name our controller's phandles, which a user's tree
      // numbers its own way.
      throw UserError(fmt::format(
          "{}: PCI devices (transport=pci) need the generated device tree (or a --dtb-overlay "
          "on it); give them transport=mmio to boot with this tree",
          user_dtb->label()));
    }
    if (!user_dtb && !overlay) {
      dtb = build_fdt(fdt);
    } else {
      // The user's tree (or ours), then the overlay, then vmm's patches.
      std::vector<uint8_t> base =
          user_dtb ? read_file(user_dtb->path, user_dtb->what) : build_fdt(fdt);
      std::string label = user_dtb ? user_dtb->label() : "the generated device tree";
      if (overlay) {
        base = apply_fdt_overlay(base, label, read_file(overlay->path, overlay->what),
                                 overlay->label());
        label += " with ";  // appended: GCC 12 -O3 -Wrestrict
        label += overlay->label();
      }
      dtb = patch_fdt(base, fdt, label);
    }
    if (dtb.size() > plan_.dtb.size) {
      throw UserError(fmt::format(
          "{}: the device tree ({} bytes) is larger than the {} bytes the boot protocol allows",
          user_dtb ? user_dtb->label() : "device tree", dtb.size(), plan_.dtb.size));
    }
    boot_ = load_riscv64(vm.memory, image_, plan_, initrd_file_->bytes(), dtb);
    log::debug("harts: {}, {}, timebase {} Hz", hart.isa, hart.mmu_type, hart.timebase_hz);
    log::debug(
        "kernel at [{:#x}, {:#x}), entry {:#x}, initrd at [{:#x}, {:#x}), dtb at [{:#x}, {:#x})",
        boot_.kernel.gpa, boot_.kernel.end(), boot_.entry_gpa, boot_.initrd.gpa, boot_.initrd.end(),
        boot_.dtb.gpa, boot_.dtb.end());
    image_.bytes = {};  // the file's bytes are in guest RAM now
    kernel_file_->check_intact();
    initrd_file_->check_intact();
    kernel_file_.reset();
    initrd_file_.reset();
  }

  KvmVm* kvm_ = nullptr;        // with the AIA: its lines' VM
  std::optional<Aia> aia_;      // KVM's AIA, or
  std::shared_ptr<Plic> plic_;  // the PLIC vmm emulates
  IrqchipDescription irqchip_;
  mutable std::mutex harts_mutex_;
  std::vector<int> harts_;  // vCPU fds by hart id; -1 until created
  std::mutex sbi_mutex_;
  std::set<uint64_t> reported_sbi_;        // SBI extensions, at most kSbiExtensionsReported
  std::set<unsigned long> reported_csrs_;  // CSR numbers (12 bits: at most 4096)
  std::vector<std::shared_ptr<const FdtNodeSource>> board_nodes_;
  std::vector<std::shared_ptr<const FdtNodeSource>> device_nodes_;
  std::shared_ptr<PciEcamFdt> pci_node_;  // when the VM has PCI devices (in device_nodes_)
  std::optional<MappedFile> kernel_file_;
  std::optional<MappedFile> initrd_file_;
  RiscvImage image_;
  RiscvBootPlan plan_;
  RiscvBootInfo boot_;
};

}  // namespace

std::unique_ptr<Machine> make_host_machine() {
  return std::make_unique<Riscv64Machine>();
}

}  // namespace libvmm
