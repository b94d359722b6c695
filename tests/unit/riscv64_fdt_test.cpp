// The generated riscv64 device tree, read back with libfdt and compared with dtc's
// decompilation: the machine's nodes from build_fdt(), the interrupt controller's (PLIC, or
// APLIC + IMSIC), the 16550A's and the virtio-mmio devices' from their own describe_fdt().
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libfdt.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "libvmm/arch/pci_ecam_fdt.hpp"
#include "libvmm/arch/riscv64/fdt.hpp"
#include "libvmm/arch/virtio_mmio_fdt.hpp"
#include "libvmm/core/error.hpp"

using namespace libvmm;
using namespace libvmm::riscv64;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace riscv64_fdt_test {

std::shared_ptr<VirtioMmioFdt> virtio_device(uint64_t base, uint32_t irq,
                                             FdtTrigger trigger = FdtTrigger::edge_rising,
                                             std::string name = "") {
  auto device = std::make_shared<VirtioMmioFdt>();
  device->base = base;
  device->irq = irq;
  device->trigger = trigger;
  device->name = std::move(name);
  return device;
}

// A machine like the riscv64 one: RAM at 2 GiB, the 16550A and two virtio-mmio devices.
FdtMachine sample_machine(IrqchipKind kind = IrqchipKind::aia, uint32_t console_irq = 33) {
  FdtMachine m;
  m.memory = {{0x8000'0000, 256 * MiB}};
  m.cpus = 2;
  m.isa = riscv_isa_string((1u << ('i' - 'a')) | (1u << ('m' - 'a')) | (1u << ('a' - 'a')) |
                               (1u << ('f' - 'a')) | (1u << ('d' - 'a')) | (1u << ('c' - 'a')),
                           {"zicsr", "zifencei", "sstc"});
  m.mmu_type = "riscv,sv57";
  m.timebase_hz = 10'000'000;
  m.irqchip.kind = kind;
  m.irqchip.base = 0x0c00'0000;
  m.irqchip.size = kind == IrqchipKind::plic ? 0x400'0000 : 0x4000;
  m.irqchip.sources = 64;
  m.irqchip.imsic_base = 0x2800'0000;
  m.irqchip.imsic_stride = 0x1000;
  m.irqchip.imsic_ids = 255;
  m.board = {std::make_shared<Uart16550Fdt>(0x1000'0000, 10)};
  m.devices = {virtio_device(0x1000'1000, 32, FdtTrigger::edge_rising, "virtio-blk disk0"),
               virtio_device(0x1000'2000, console_irq, FdtTrigger::level_high, "console")};
  m.bootargs = "console=ttyS0 quiet";
  m.initrd = GpaRange{0x8f00'0000, 0x10'0001};
  return m;
}

int node(const std::vector<uint8_t>& blob, const char* path) {
  return fdt_path_offset(blob.data(), path);
}

std::vector<uint32_t> cells(const std::vector<uint8_t>& blob, const char* path, const char* prop) {
  int len = 0;
  const auto* raw =
      static_cast<const fdt32_t*>(fdt_getprop(blob.data(), node(blob, path), prop, &len));
  std::vector<uint32_t> out;
  for (int i = 0; raw != nullptr && i < len / 4; ++i) out.push_back(fdt32_to_cpu(raw[i]));
  return out;
}

std::string string_prop(const std::vector<uint8_t>& blob, const char* path, const char* prop) {
  int len = 0;
  const auto* raw =
      static_cast<const char*>(fdt_getprop(blob.data(), node(blob, path), prop, &len));
  return raw == nullptr ? std::string("(absent)") : std::string(raw, static_cast<size_t>(len));
}

uint32_t phandle_of(const std::vector<uint8_t>& blob, const char* path) {
  return fdt_get_phandle(blob.data(), node(blob, path));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

bool have_dtc() {
  return std::system("dtc --version >/dev/null 2>&1") == 0;
}

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("libvmm-riscv64-" + std::to_string(getpid()) + "-" + name);
}

std::string slurp(const std::filesystem::path& path) {
  std::stringstream text;
  text << std::ifstream(path, std::ios::binary).rdbuf();
  return text.str();
}

// dtc -I dtb -O dts of `blob`; its warnings go to `warnings`.
std::string decompile(const std::vector<uint8_t>& blob, std::string* warnings) {
  const auto in = temp_path("in");
  const auto out = temp_path("out");
  const auto err = temp_path("err");
  std::ofstream(in, std::ios::binary)
      .write(reinterpret_cast<const char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
  const std::string cmd =
      "dtc -I dtb -O dts -o " + out.string() + " " + in.string() + " 2>" + err.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string text = slurp(out);
  *warnings = slurp(err);
  for (const auto& path : {in, out, err}) std::filesystem::remove(path);
  return text;
}

std::vector<uint8_t> compile_dts(const std::string& dts) {
  const auto in = temp_path("dts");
  const auto out = temp_path("dtb");
  std::ofstream(in) << dts;
  const std::string cmd = "dtc -q -I dts -O dtb -o " + out.string() + " " + in.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string text = slurp(out);
  for (const auto& path : {in, out}) std::filesystem::remove(path);
  return {text.begin(), text.end()};
}

// A board's tree as a user may give it: one hart, a PLIC at the board's address, a UART.
std::string user_dts(const std::string& irqchip, const std::string& root_parent = "") {
  return R"(/dts-v1/;
/ {
  #address-cells = <2>; #size-cells = <2>;
  compatible = "vendor,board";
)" + root_parent +
         R"(
  cpus {
    #address-cells = <1>; #size-cells = <0>; timebase-frequency = <1000000>;
    cpu@0 { device_type = "cpu"; reg = <0>; compatible = "riscv"; riscv,isa = "rv64imac";
      intc0: interrupt-controller { compatible = "riscv,cpu-intc"; interrupt-controller;
        #interrupt-cells = <1>; #address-cells = <0>; }; };
  };
)" + irqchip +
         R"(
  memory@80000000 { device_type = "memory"; reg = <0 0x80000000 0 0x1000000>; };
  chosen { bootargs = "old"; linux,initrd-start = <0x81000000>; linux,initrd-end = <0x82000000>;
    stdout-path = "/my-uart@10000000"; };
  my-uart@10000000 { compatible = "ns16550a"; reg = <0 0x10000000 0 0x100>; };
};
)";
}

const std::string kUserPlic = R"(
  plic: plic@c000000 { compatible = "sifive,plic-1.0.0", "riscv,plic0"; interrupt-controller;
    #interrupt-cells = <1>; #address-cells = <0>; reg = <0 0xc000000 0 0x4000000>;
    interrupts-extended = <&intc0 9>; riscv,ndev = <63>; };)";

TEST(Riscv64Fdt, IsaStringInCanonicalOrder) {
  uint64_t letters = 0;
  for (char c : std::string("cdafmisuhv")) letters |= uint64_t{1} << (c - 'a');
  EXPECT_EQ(riscv_isa_string(letters, {}), "rv64imafdcvh");  // S and U are modes, not listed
  EXPECT_EQ(riscv_isa_string(letters & ~(uint64_t{1} << ('h' - 'a')), {"zicsr", "sstc"}),
            "rv64imafdcv_zicsr_sstc");
  EXPECT_EQ(mmu_type_of_satp_mode(8), "riscv,sv39");
  EXPECT_EQ(mmu_type_of_satp_mode(10), "riscv,sv57");
  EXPECT_EQ(mmu_type_of_satp_mode(0), std::nullopt);
}

TEST(Riscv64Fdt, BuildsTheWholeTreeWithAia) {
  const auto blob = build_fdt(sample_machine());
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);
  EXPECT_LE(blob.size(), kDtbMaxSize);

  EXPECT_THAT(cells(blob, "/", "#address-cells"), ElementsAre(2u));
  EXPECT_THAT(cells(blob, "/", "#size-cells"), ElementsAre(2u));
  EXPECT_THAT(cells(blob, "/", "interrupt-parent"),
              ElementsAre(phandle_of(blob, "/aplic@c000000")));
  EXPECT_THAT(cells(blob, "/memory@80000000", "reg"), ElementsAre(0u, 0x8000'0000u, 0u, 256 * MiB));

  EXPECT_THAT(cells(blob, "/cpus", "timebase-frequency"), ElementsAre(10'000'000u));
  EXPECT_THAT(cells(blob, "/cpus/cpu@1", "reg"), ElementsAre(1u));
  EXPECT_EQ(string_prop(blob, "/cpus/cpu@0", "riscv,isa"),
            std::string("rv64imafdc_zicsr_zifencei_sstc\0", 31));
  EXPECT_EQ(string_prop(blob, "/cpus/cpu@1", "mmu-type"), std::string("riscv,sv57\0", 11));
  EXPECT_EQ(string_prop(blob, "/cpus/cpu@0/interrupt-controller", "compatible"),
            std::string("riscv,cpu-intc\0", 15));
  EXPECT_LT(node(blob, "/cpus/cpu@2"), 0);
  const uint32_t intc0 = phandle_of(blob, "/cpus/cpu@0/interrupt-controller");
  const uint32_t intc1 = phandle_of(blob, "/cpus/cpu@1/interrupt-controller");

  EXPECT_EQ(string_prop(blob, "/imsics@28000000", "compatible"), std::string("riscv,imsics\0", 13));
  EXPECT_THAT(cells(blob, "/imsics@28000000", "reg"), ElementsAre(0u, 0x2800'0000u, 0u, 0x2000u));
  EXPECT_THAT(cells(blob, "/imsics@28000000", "interrupts-extended"),
              ElementsAre(intc0, 9u, intc1, 9u));
  EXPECT_THAT(cells(blob, "/imsics@28000000", "riscv,num-ids"), ElementsAre(255u));
  EXPECT_EQ(string_prop(blob, "/aplic@c000000", "compatible"), std::string("riscv,aplic\0", 12));
  EXPECT_THAT(cells(blob, "/aplic@c000000", "msi-parent"),
              ElementsAre(phandle_of(blob, "/imsics@28000000")));
  EXPECT_THAT(cells(blob, "/aplic@c000000", "riscv,num-sources"), ElementsAre(63u));
  EXPECT_THAT(cells(blob, "/aplic@c000000", "#interrupt-cells"), ElementsAre(2u));

  EXPECT_EQ(string_prop(blob, "/serial@10000000", "compatible"), std::string("ns16550a\0", 9));
  EXPECT_THAT(cells(blob, "/serial@10000000", "interrupts"), ElementsAre(10u, 4u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@10001000", "interrupts"), ElementsAre(32u, 1u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@10002000", "interrupts"), ElementsAre(33u, 4u));

  EXPECT_EQ(string_prop(blob, "/chosen", "bootargs"), std::string("console=ttyS0 quiet\0", 20));
  EXPECT_THAT(cells(blob, "/chosen", "linux,initrd-start"), ElementsAre(0u, 0x8f00'0000u));
  EXPECT_THAT(cells(blob, "/chosen", "linux,initrd-end"), ElementsAre(0u, 0x8f10'0001u));
  EXPECT_EQ(string_prop(blob, "/chosen", "stdout-path"), std::string("/serial@10000000\0", 17));
}

TEST(Riscv64Fdt, PlicHasOneSupervisorContextPerHart) {
  const auto blob = build_fdt(sample_machine(IrqchipKind::plic));
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);
  EXPECT_LT(node(blob, "/imsics@28000000"), 0);
  EXPECT_EQ(string_prop(blob, "/plic@c000000", "compatible"),
            std::string("sifive,plic-1.0.0\0riscv,plic0\0", 30));
  EXPECT_THAT(cells(blob, "/plic@c000000", "reg"), ElementsAre(0u, 0x0c00'0000u, 0u, 0x400'0000u));
  EXPECT_THAT(cells(blob, "/plic@c000000", "interrupts-extended"),
              ElementsAre(phandle_of(blob, "/cpus/cpu@0/interrupt-controller"), 9u,
                          phandle_of(blob, "/cpus/cpu@1/interrupt-controller"), 9u));
  EXPECT_THAT(cells(blob, "/plic@c000000", "riscv,ndev"), ElementsAre(63u));
  EXPECT_THAT(cells(blob, "/", "interrupt-parent"), ElementsAre(phandle_of(blob, "/plic@c000000")));
  EXPECT_THAT(cells(blob, "/serial@10000000", "interrupts"), ElementsAre(10u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@10002000", "interrupts"), ElementsAre(33u));
}

// A PCI host bridge as the riscv64 machine adds it: QEMU virt's windows, INTx pins of devices
// 1 and 2 on sources 34 and 35, MSIs to the IMSICs (AIA only: the PLIC has none).
FdtMachine pci_machine(IrqchipKind kind) {
  FdtMachine m = sample_machine(kind);
  auto pci = std::make_shared<PciEcamFdt>();
  pci->layout = {
      {0x3000'0000, 0x10'0000}, {0x4000'0000, 0x4000'0000}, {0x80'0000'0000, 0x10'0000'0000}, {}};
  pci->intx = {{1, 0, 34}, {2, 0, 35}};
  if (kind == IrqchipKind::aia) {
    pci->msi_parent = "imsic";
    pci->msi_device_ids = false;
  }
  m.devices.push_back(pci);
  return m;
}

TEST(Riscv64Fdt, PciHostBridgeWithImsicMsis) {
  const auto blob = build_fdt(pci_machine(IrqchipKind::aia));
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);
  const char* pci = "/pcie@30000000";
  EXPECT_EQ(string_prop(blob, pci, "compatible"), std::string("pci-host-ecam-generic\0", 22));
  EXPECT_THAT(cells(blob, pci, "reg"), ElementsAre(0u, 0x3000'0000u, 0u, 0x10'0000u));
  EXPECT_THAT(cells(blob, pci, "bus-range"), ElementsAre(0u, 0u));
  EXPECT_THAT(cells(blob, pci, "ranges"),
              ElementsAre(0x0200'0000u, 0u, 0x4000'0000u, 0u, 0x4000'0000u, 0u, 0x4000'0000u,  //
                          0x0300'0000u, 0x80u, 0u, 0x80u, 0u, 0x10u, 0u));
  // The IMSIC takes no device ID: a plain msi-parent, no msi-map.
  EXPECT_THAT(cells(blob, pci, "msi-parent"), ElementsAre(phandle_of(blob, "/imsics@28000000")));
  EXPECT_EQ(fdt_getprop(blob.data(), node(blob, pci), "msi-map", nullptr), nullptr);
  // INTA of devices 1 and 2 -> APLIC sources 34 and 35, level-high (the APLIC's #address-cells
  // is 0, so no parent unit address).
  const uint32_t aplic = phandle_of(blob, "/aplic@c000000");
  EXPECT_THAT(cells(blob, pci, "interrupt-map-mask"), ElementsAre(0xf800u, 0u, 0u, 7u));
  EXPECT_THAT(cells(blob, pci, "interrupt-map"),
              ElementsAre(0x0800u, 0u, 0u, 1u, aplic, 34u, 4u,  //
                          0x1000u, 0u, 0u, 1u, aplic, 35u, 4u));
  if (have_dtc()) {
    std::string warnings;
    decompile(blob, &warnings);
    EXPECT_EQ(warnings, "");
  }
}

TEST(Riscv64Fdt, PciHostBridgeOnThePlicHasIntxOnly) {
  const auto blob = build_fdt(pci_machine(IrqchipKind::plic));
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);
  const char* pci = "/pcie@30000000";
  const uint32_t plic = phandle_of(blob, "/plic@c000000");
  EXPECT_THAT(cells(blob, pci, "interrupt-map"), ElementsAre(0x0800u, 0u, 0u, 1u, plic, 34u,  //
                                                             0x1000u, 0u, 0u, 1u, plic, 35u));
  EXPECT_EQ(fdt_getprop(blob.data(), node(blob, pci), "msi-parent", nullptr), nullptr);
  EXPECT_EQ(fdt_getprop(blob.data(), node(blob, pci), "msi-map", nullptr), nullptr);
}

TEST(Riscv64Fdt, PciIntxLinesAreClaimedLikeDeviceInterrupts) {
  FdtMachine m = pci_machine(IrqchipKind::aia);
  auto pci =
      std::make_shared<PciEcamFdt>(*std::static_pointer_cast<const PciEcamFdt>(m.devices.back()));
  pci->intx.push_back({3, 0, 32});  // the virtio-blk's source
  m.devices.back() = pci;
  EXPECT_THAT(error_of([&] { build_fdt(m); }), HasSubstr("is already used by virtio-blk disk0"));
  pci->intx.back().irq = 64;  // not an APLIC source
  EXPECT_THAT(error_of([&] { build_fdt(m); }), HasSubstr("interrupt 64 is not a source"));
}

// --dtb-overlay: vmm patches the generated tree (an overlay applied) with the same machine, so
// the PCI node is replaced, not doubled, and keeps naming the APLIC and the IMSIC.
TEST(Riscv64FdtPatch, PatchingTheGeneratedTreeKeepsOnePciHostBridge) {
  const FdtMachine m = pci_machine(IrqchipKind::aia);
  const auto blob = patch_fdt(build_fdt(m), m, "the generated device tree");
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);
  EXPECT_EQ(fdt_node_offset_by_compatible(blob.data(), node(blob, "/pcie@30000000"),
                                          "pci-host-ecam-generic"),
            -FDT_ERR_NOTFOUND);
  const uint32_t aplic = phandle_of(blob, "/aplic@c000000");
  EXPECT_THAT(cells(blob, "/pcie@30000000", "msi-parent"),
              ElementsAre(phandle_of(blob, "/imsics@28000000")));
  EXPECT_THAT(cells(blob, "/pcie@30000000", "interrupt-map"),
              ElementsAre(0x0800u, 0u, 0u, 1u, aplic, 34u, 4u,  //
                          0x1000u, 0u, 0u, 1u, aplic, 35u, 4u));
}

TEST(Riscv64Fdt, RejectsBadDescriptions) {
  for (IrqchipKind kind : {IrqchipKind::aia, IrqchipKind::plic}) {
    EXPECT_EQ(error_of([&] { build_fdt(sample_machine(kind, 64)); }),
              fmt::format("console: interrupt 64 is not a source of the {} (1-63)",
                          kind == IrqchipKind::plic ? "PLIC" : "APLIC"));
    EXPECT_THAT(error_of([&] { build_fdt(sample_machine(kind, 0)); }),
                HasSubstr("interrupt 0 is not a source"));
    EXPECT_THAT(error_of([&] { build_fdt(sample_machine(kind, 32)); }), HasSubstr("console"));
  }
  FdtMachine m = sample_machine();
  m.cpus = 0;
  EXPECT_THAT(error_of([&] { build_fdt(m); }), HasSubstr("no harts"));
  m = sample_machine();
  m.memory.clear();
  EXPECT_THAT(error_of([&] { build_fdt(m); }), HasSubstr("no memory"));
  m = sample_machine();
  m.isa = "rv32imac";
  EXPECT_THROW(build_fdt(m), std::invalid_argument);
}

TEST(Riscv64Fdt, DtcDecompilesToTheExpectedSource) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  for (const auto& [kind, file] : {std::pair{IrqchipKind::aia, "riscv64_virt_aia.dts"},
                                   std::pair{IrqchipKind::plic, "riscv64_virt_plic.dts"}}) {
    std::string warnings;
    const std::string dts = decompile(build_fdt(sample_machine(kind)), &warnings);
    EXPECT_EQ(dts, slurp(std::string(LIBVMM_TEST_DATA_DIR "/") + file))
        << "after a deliberate change: dtc -I dtb -O dts on build_fdt(sample_machine()): " << dts;
    EXPECT_EQ(warnings, "");  // dtc's checks (unit addresses, interrupt providers, ...) pass
  }
}

// The machine user_dts() describes: one hart.
FdtMachine user_machine(IrqchipKind kind) {
  FdtMachine m = sample_machine(kind);
  m.cpus = 1;
  return m;
}

TEST(Riscv64FdtPatch, PatchesMemoryChosenTimebaseAndDevicesKeepsTheRest) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto user = compile_dts(user_dts(kUserPlic, "interrupt-parent = <&plic>;"));
  ASSERT_FALSE(user.empty());
  const auto blob = patch_fdt(user, user_machine(IrqchipKind::plic), "user.dtb");
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);

  EXPECT_THAT(cells(blob, "/memory@80000000", "reg"), ElementsAre(0u, 0x8000'0000u, 0u, 256 * MiB));
  EXPECT_EQ(string_prop(blob, "/chosen", "bootargs"), std::string("console=ttyS0 quiet\0", 20));
  EXPECT_THAT(cells(blob, "/chosen", "linux,initrd-start"), ElementsAre(0u, 0x8f00'0000u));
  EXPECT_EQ(string_prop(blob, "/chosen", "stdout-path"), std::string("/my-uart@10000000\0", 18));
  EXPECT_THAT(cells(blob, "/cpus", "timebase-frequency"), ElementsAre(10'000'000u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@10001000", "interrupts"), ElementsAre(32u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@10002000", "interrupts"), ElementsAre(33u));
  EXPECT_LT(fdt_getprop(blob.data(), node(blob, "/virtio_mmio@10001000"), "interrupt-parent",
                        nullptr) != nullptr,
            1);  // the root's
  // Kept as the user wrote them.
  EXPECT_EQ(string_prop(blob, "/", "compatible"), std::string("vendor,board\0", 13));
  EXPECT_EQ(string_prop(blob, "/cpus/cpu@0", "riscv,isa"), std::string("rv64imac\0", 9));
  EXPECT_LT(node(blob, "/cpus/cpu@1"), 0);
  EXPECT_LT(node(blob, "/serial@10000000"), 0);
}

TEST(Riscv64FdtPatch, NewDevicesPointAtTheControllerWhenTheRootDoesNot) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  std::string dts = user_dts(kUserPlic);
  const std::string uart = "compatible = \"ns16550a\";";
  dts.replace(dts.find(uart), uart.size(), uart + " interrupts-extended = <&plic 10>;");
  const auto blob = patch_fdt(compile_dts(dts), user_machine(IrqchipKind::plic), "user.dtb");
  const uint32_t plic = phandle_of(blob, "/plic@c000000");
  ASSERT_NE(plic, 0u);
  EXPECT_THAT(cells(blob, "/virtio_mmio@10001000", "interrupt-parent"), ElementsAre(plic));
}

TEST(Riscv64FdtPatch, RefusesTreesForAnotherControllerInOneLine) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto plic_tree = compile_dts(user_dts(kUserPlic));
  EXPECT_EQ(error_of([&] { patch_fdt(plic_tree, user_machine(IrqchipKind::aia), "u.dtb"); }),
            "u.dtb: the interrupt controller plic@c000000 is a PLIC, the VM has an APLIC "
            "(--irqchip plic for this tree)");
  std::string moved = kUserPlic;
  moved.replace(moved.find("0xc000000 0"), 9, "0xd000000");
  const auto moved_tree = compile_dts(user_dts(moved));
  EXPECT_EQ(
      error_of([&] { patch_fdt(moved_tree, user_machine(IrqchipKind::plic), "u.dtb"); }),
      "u.dtb: the interrupt controller plic@c000000 is not at 0xc000000, where the VM has it");
  EXPECT_EQ(error_of([&] { patch_fdt(plic_tree, user_machine(IrqchipKind::plic), "u.dtb"); }),
            "u.dtb: the interrupt controller plic@c000000 has no phandle for the added devices to "
            "name");
  const auto none = compile_dts(user_dts(""));
  EXPECT_EQ(error_of([&] { patch_fdt(none, user_machine(IrqchipKind::plic), "u.dtb"); }),
            "u.dtb: no interrupt controller (PLIC or APLIC) for the added devices");
}

// Found in review: a board's PLIC lists each hart's M-mode context first; vmm's has one
// S-mode context per hart, so Linux enabled the devices' interrupts where no hart gets them.
TEST(Riscv64FdtPatch, RefusesAPlicWithOtherContextsAndADirectApplic) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  std::string board = kUserPlic;
  board.replace(board.find("<&intc0 9>"), 10, "<&intc0 11 &intc0 9>");
  const auto m_mode_first = compile_dts(user_dts(board, "interrupt-parent = <&plic>;"));
  EXPECT_THAT(
      error_of([&] { patch_fdt(m_mode_first, user_machine(IrqchipKind::plic), "u.dtb"); }),
      ::testing::MatchesRegex("u.dtb: the PLIC plic@c000000's context 0 is <0x[0-9a-f]+ 11>, not "
                              "hart 0's supervisor external interrupt: vmm's PLIC has one context "
                              "per hart, <&hart-intc 9>, in hart order"));
  const std::string direct_aplic = R"(
  aplic: aplic@c000000 { compatible = "riscv,aplic"; interrupt-controller;
    #interrupt-cells = <2>; #address-cells = <0>; reg = <0 0xc000000 0 0x8000>;
    interrupts-extended = <&intc0 9>; riscv,num-sources = <96>; };)";
  const auto direct = compile_dts(user_dts(direct_aplic, "interrupt-parent = <&aplic>;"));
  EXPECT_EQ(error_of([&] { patch_fdt(direct, user_machine(IrqchipKind::aia), "u.dtb"); }),
            "u.dtb: the APLIC aplic@c000000 delivers interrupts itself (no msi-parent); this VM's "
            "APLIC sends them as MSIs to the harts' IMSICs");
}

TEST(Riscv64FdtPatch, RefusesATreeWithAnotherHartCount) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto one_hart = compile_dts(user_dts(kUserPlic, "interrupt-parent = <&plic>;"));
  EXPECT_EQ(error_of([&] { patch_fdt(one_hart, sample_machine(IrqchipKind::plic), "u.dtb"); }),
            "u.dtb: /cpus lists 1 hart, the VM has 2 vCPUs (--vcpus)");
  std::string disabled = user_dts(kUserPlic, "interrupt-parent = <&plic>;");
  const std::string isa = "riscv,isa";
  disabled.insert(disabled.find(isa), "status = \"disabled\"; ");
  EXPECT_EQ(
      error_of([&] { patch_fdt(compile_dts(disabled), user_machine(IrqchipKind::plic), "u.dtb"); }),
      "u.dtb: /cpus lists 0 harts, the VM has 1 vCPU (--vcpus)");
}

TEST(Riscv64FdtPatch, RejectsBadUserBlobsNamingTheFile) {
  const std::vector<uint8_t> garbage(100, 0x42);
  EXPECT_THAT(error_of([&] { patch_fdt(garbage, sample_machine(), "my.dtb"); }),
              ::testing::StartsWith("my.dtb: not a device tree blob"));
  auto truncated = build_fdt(sample_machine());
  truncated.resize(truncated.size() / 2);
  EXPECT_THAT(error_of([&] { patch_fdt(truncated, sample_machine(), "my.dtb"); }),
              ::testing::StartsWith("my.dtb: invalid device tree"));
  std::vector<uint8_t> bare(4096);
  ASSERT_EQ(fdt_create_empty_tree(bare.data(), static_cast<int>(bare.size())), 0);
  EXPECT_EQ(error_of([&] { patch_fdt(bare, sample_machine(), "my.dtb"); }),
            "my.dtb: no /cpus node (a RISC-V tree names each hart and its interrupt controller "
            "there)");
}

TEST(Riscv64FdtPatch, CorruptedBlobsGiveAValidTreeOrAUserError) {
  // The user's file is untrusted input: no mutation may crash or produce an invalid tree.
  for (IrqchipKind kind : {IrqchipKind::aia, IrqchipKind::plic}) {
    const auto good = build_fdt(sample_machine(kind));
    std::mt19937 random(12345);
    int accepted = 0;
    for (int round = 0; round < 2000; ++round) {
      auto blob = good;
      const int flips = 1 + static_cast<int>(random() % 4);
      for (int i = 0; i < flips; ++i) blob[random() % blob.size()] = static_cast<uint8_t>(random());
      if (round % 7 == 0) blob.resize(random() % blob.size());
      try {
        const auto patched = patch_fdt(blob, sample_machine(kind), "fuzz.dtb");
        ASSERT_EQ(fdt_check_full(patched.data(), patched.size()), 0) << "round " << round;
        ++accepted;
      } catch (const UserError& e) {
        ASSERT_THAT(e.what(), ::testing::StartsWith("fuzz.dtb: ")) << "round " << round;
      }
    }
    EXPECT_GT(accepted, 0);  // some flips only touch property values
  }
}

}  // namespace riscv64_fdt_test
