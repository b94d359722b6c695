// The generated arm64 device tree and the patching of a user's DTB, read back with libfdt and
// compared with dtc's decompilation. The machine's nodes come from build_fdt/patch_fdt, the
// GIC's, the PL011's and the virtio-mmio devices' from their own describe_fdt().
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libfdt.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "libvmm/arch/aarch64/fdt.hpp"
#include "libvmm/arch/aarch64/pl011_fdt.hpp"
#include "libvmm/arch/pci_ecam_fdt.hpp"
#include "libvmm/arch/virtio_mmio_fdt.hpp"
#include "libvmm/core/error.hpp"

using namespace libvmm;
using namespace libvmm::aarch64;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace aarch64_fdt_test {

std::shared_ptr<VirtioMmioFdt> virtio_device(uint64_t base, uint32_t intid,
                                             FdtTrigger trigger = FdtTrigger::edge_rising,
                                             std::string name = "") {
  auto device = std::make_shared<VirtioMmioFdt>();
  device->base = base;
  device->irq = intid;
  device->trigger = trigger;
  device->name = std::move(name);
  return device;
}

// What the tests vary in the sample machine.
struct Sample {
  GicVersion version = GicVersion::v3;
  uint32_t uart_intid = 33;
  uint32_t console_intid = 49;
  uint64_t console_base = 0x0a00'0200;
};

// A machine like the aarch64 one: RAM at 1 GiB, GIC below it, PL011 and virtio-mmio devices.
FdtMachine sample_machine(const Sample& sample) {
  const GicVersion version = sample.version;
  FdtMachine m;
  m.memory = {{0x4000'0000, 256 * MiB}};
  m.cpus = 2;
  m.gic.version = version;
  m.gic.dist_base = 0x0800'0000;
  m.gic.dist_size = 0x1'0000;
  if (version == GicVersion::v3) {
    m.gic.cpu_or_redist_base = 0x080a'0000;
    m.gic.cpu_or_redist_size = 2 * 0x2'0000;
  } else {
    m.gic.cpu_or_redist_base = 0x0801'0000;
    m.gic.cpu_or_redist_size = 0x1'0000;
  }
  m.board = {std::make_shared<Pl011Fdt>(0x0900'0000, sample.uart_intid),
             std::make_shared<Pl031Fdt>(0x0901'0000)};
  m.devices = {
      virtio_device(0x0a00'0000, 48, FdtTrigger::edge_rising, "virtio-blk disk0"),
      virtio_device(sample.console_base, sample.console_intid, FdtTrigger::level_high, "console")};
  m.bootargs = "console=ttyAMA0 quiet";
  m.initrd = GpaRange{0x4f00'0000, 0x10'0001};
  return m;
}

FdtMachine sample_machine(GicVersion version = GicVersion::v3) {
  return sample_machine(Sample{.version = version});
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

bool has_prop(const std::vector<uint8_t>& blob, const char* path, const char* prop) {
  return fdt_getprop(blob.data(), node(blob, path), prop, nullptr) != nullptr;
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
         ("libvmm-aarch64-" + std::to_string(getpid()) + "-" + name);
}

std::string slurp(const std::filesystem::path& path) {
  std::stringstream text;
  text << std::ifstream(path, std::ios::binary).rdbuf();
  return text.str();
}

// Runs dtc `args` on `input` written to a file, returning its output; its warnings go to
// `warnings`.
std::string run_dtc(const std::string& args, const std::vector<uint8_t>& input,
                    std::string* warnings = nullptr) {
  const auto in = temp_path("in");
  const auto out = temp_path("out");
  const auto err = temp_path("err");
  std::ofstream(in, std::ios::binary)
      .write(reinterpret_cast<const char*>(input.data()),
             static_cast<std::streamsize>(input.size()));
  const std::string cmd =
      "dtc " + args + " -o " + out.string() + " " + in.string() + " 2>" + err.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string text = slurp(out);
  if (warnings != nullptr) *warnings = slurp(err);
  for (const auto& path : {in, out, err}) std::filesystem::remove(path);
  return text;
}

std::vector<uint8_t> compile_dts(const std::string& dts) {
  const std::string text =
      run_dtc("-q -I dts -O dtb", std::vector<uint8_t>(dts.begin(), dts.end()));
  return {text.begin(), text.end()};
}

TEST(Arm64Fdt, SpiCellIsTheIntidMinus32) {
  EXPECT_EQ(spi_cell(32, "x"), 0u);
  EXPECT_EQ(spi_cell(79, "x"), 47u);
  EXPECT_EQ(spi_cell(1019, "x"), 987u);
  const std::string error = error_of([] { spi_cell(5, "virtio-blk disk0"); });
  EXPECT_THAT(error, StartsWith("virtio-blk disk0: interrupt 5 is not an SPI INTID"));
  EXPECT_THAT(error, HasSubstr("INTID 37"));
  EXPECT_THAT(error_of([] { spi_cell(1020, "uart"); }), StartsWith("uart: interrupt 1020"));
}

TEST(Arm64Fdt, KvmDefaultMpidrPacks16CpusPerCluster) {
  EXPECT_EQ(kvm_default_mpidr(0), 0u);
  EXPECT_EQ(kvm_default_mpidr(15), 0xfu);
  EXPECT_EQ(kvm_default_mpidr(17), 0x101u);
  EXPECT_EQ(kvm_default_mpidr(4096 + 16 + 2), 0x10102u);
}

TEST(Arm64Fdt, BuildsTheWholeTree) {
  const auto blob = build_fdt(sample_machine());
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);
  EXPECT_LE(blob.size(), kDtbMaxSize);

  EXPECT_THAT(cells(blob, "/", "#address-cells"), ElementsAre(2u));
  EXPECT_THAT(cells(blob, "/", "#size-cells"), ElementsAre(2u));
  const int gic = node(blob, "/interrupt-controller@8000000");
  ASSERT_GE(gic, 0);
  EXPECT_THAT(cells(blob, "/", "interrupt-parent"), ElementsAre(fdt_get_phandle(blob.data(), gic)));

  EXPECT_EQ(string_prop(blob, "/memory@40000000", "device_type"), std::string("memory\0", 7));
  EXPECT_THAT(cells(blob, "/memory@40000000", "reg"), ElementsAre(0u, 0x4000'0000u, 0u, 256 * MiB));

  EXPECT_THAT(cells(blob, "/cpus", "#address-cells"), ElementsAre(1u));
  EXPECT_THAT(cells(blob, "/cpus", "#size-cells"), ElementsAre(0u));
  EXPECT_THAT(cells(blob, "/cpus/cpu@1", "reg"), ElementsAre(1u));
  EXPECT_EQ(string_prop(blob, "/cpus/cpu@0", "compatible"), std::string("arm,arm-v8\0", 11));
  EXPECT_EQ(string_prop(blob, "/cpus/cpu@0", "device_type"), std::string("cpu\0", 4));
  EXPECT_EQ(string_prop(blob, "/cpus/cpu@1", "enable-method"), std::string("psci\0", 5));
  EXPECT_LT(node(blob, "/cpus/cpu@2"), 0);

  EXPECT_EQ(string_prop(blob, "/psci", "compatible"),
            std::string("arm,psci-1.0\0arm,psci-0.2\0", 26));
  EXPECT_EQ(string_prop(blob, "/psci", "method"), std::string("hvc\0", 4));

  EXPECT_EQ(string_prop(blob, "/timer", "compatible"), std::string("arm,armv8-timer\0", 16));
  EXPECT_THAT(cells(blob, "/timer", "interrupts"),
              ElementsAreArray({1u, 13u, 4u, 1u, 14u, 4u, 1u, 11u, 4u, 1u, 10u, 4u}));

  EXPECT_EQ(string_prop(blob, "/interrupt-controller@8000000", "compatible"),
            std::string("arm,gic-v3\0", 11));
  EXPECT_THAT(cells(blob, "/interrupt-controller@8000000", "reg"),
              ElementsAre(0u, 0x0800'0000u, 0u, 0x1'0000u, 0u, 0x080a'0000u, 0u, 0x4'0000u));
  EXPECT_THAT(cells(blob, "/interrupt-controller@8000000", "#interrupt-cells"), ElementsAre(3u));
  EXPECT_TRUE(has_prop(blob, "/interrupt-controller@8000000", "interrupt-controller"));

  const int clock = node(blob, "/apb-pclk");
  ASSERT_GE(clock, 0);
  EXPECT_THAT(cells(blob, "/apb-pclk", "clock-frequency"), ElementsAre(24'000'000u));
  EXPECT_EQ(string_prop(blob, "/serial@9000000", "compatible"),
            std::string("arm,pl011\0arm,primecell\0", 24));
  EXPECT_THAT(cells(blob, "/serial@9000000", "interrupts"), ElementsAre(0u, 1u, 4u));  // INTID 33
  const uint32_t clock_phandle = fdt_get_phandle(blob.data(), clock);
  EXPECT_THAT(cells(blob, "/serial@9000000", "clocks"), ElementsAre(clock_phandle, clock_phandle));
  // The PL031 shares the clock (one /apb-pclk node) and has no interrupt (no alarm).
  EXPECT_EQ(string_prop(blob, "/pl031@9010000", "compatible"),
            std::string("arm,pl031\0arm,primecell\0", 24));
  EXPECT_THAT(cells(blob, "/pl031@9010000", "reg"), ElementsAre(0u, 0x0901'0000u, 0u, 0x1000u));
  EXPECT_THAT(cells(blob, "/pl031@9010000", "clocks"), ElementsAre(clock_phandle));
  EXPECT_EQ(string_prop(blob, "/pl031@9010000", "clock-names"), std::string("apb_pclk\0", 9));
  EXPECT_FALSE(has_prop(blob, "/pl031@9010000", "interrupts"));

  EXPECT_EQ(string_prop(blob, "/virtio_mmio@a000000", "compatible"),
            std::string("virtio,mmio\0", 12));
  EXPECT_THAT(cells(blob, "/virtio_mmio@a000000", "reg"),
              ElementsAre(0u, 0x0a00'0000u, 0u, 0x200u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@a000000", "interrupts"), ElementsAre(0u, 16u, 1u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@a000200", "interrupts"), ElementsAre(0u, 17u, 4u));
  EXPECT_TRUE(has_prop(blob, "/virtio_mmio@a000000", "dma-coherent"));

  EXPECT_EQ(string_prop(blob, "/chosen", "bootargs"), std::string("console=ttyAMA0 quiet\0", 22));
  EXPECT_THAT(cells(blob, "/chosen", "linux,initrd-start"), ElementsAre(0u, 0x4f00'0000u));
  EXPECT_THAT(cells(blob, "/chosen", "linux,initrd-end"), ElementsAre(0u, 0x4f10'0001u));
  EXPECT_EQ(string_prop(blob, "/chosen", "stdout-path"), std::string("/serial@9000000\0", 16));
}

TEST(Arm64Fdt, GicV2NodeAndPpiCpuMask) {
  const auto blob = build_fdt(sample_machine(GicVersion::v2));
  EXPECT_EQ(string_prop(blob, "/interrupt-controller@8000000", "compatible"),
            std::string("arm,cortex-a15-gic\0", 19));
  EXPECT_THAT(cells(blob, "/interrupt-controller@8000000", "reg"),
              ElementsAre(0u, 0x0800'0000u, 0u, 0x1'0000u, 0u, 0x0801'0000u, 0u, 0x1'0000u));
  // Level high, wired to CPUs 0 and 1.
  EXPECT_THAT(
      cells(blob, "/timer", "interrupts"),
      ElementsAreArray({1u, 13u, 0x304u, 1u, 14u, 0x304u, 1u, 11u, 0x304u, 1u, 10u, 0x304u}));
}

TEST(Arm64Fdt, ManyCpusUseKvmAffinities) {
  FdtMachine m = sample_machine();
  m.cpus = 20;
  const auto blob = build_fdt(m);
  EXPECT_THAT(cells(blob, "/cpus/cpu@f", "reg"), ElementsAre(0xfu));
  EXPECT_THAT(cells(blob, "/cpus/cpu@103", "reg"), ElementsAre(0x103u));

  m.cpus = 2;
  m.cpu_mpidrs = {0x8000'0000, 0x1'8000'0001};  // bit 31 (RES1) dropped, Aff3 = 1
  const auto aff3 = build_fdt(m);
  EXPECT_THAT(cells(aff3, "/cpus", "#address-cells"), ElementsAre(2u));
  EXPECT_THAT(cells(aff3, "/cpus/cpu@100000001", "reg"), ElementsAre(1u, 1u));
}

TEST(Arm64Fdt, NoUartNoInitrdNoBootargs) {
  FdtMachine m = sample_machine();
  m.board.clear();
  m.initrd.reset();
  m.bootargs.clear();
  const auto blob = build_fdt(m);
  EXPECT_LT(node(blob, "/apb-pclk"), 0);
  EXPECT_FALSE(has_prop(blob, "/chosen", "stdout-path"));
  EXPECT_FALSE(has_prop(blob, "/chosen", "linux,initrd-start"));
  EXPECT_FALSE(has_prop(blob, "/chosen", "bootargs"));
}

TEST(Arm64Fdt, RejectsBadDescriptions) {
  // A device tree SPI number where an INTID belongs.
  FdtMachine m = sample_machine({.console_intid = 17});
  EXPECT_THAT(error_of([&] { build_fdt(m); }), StartsWith("console: interrupt 17 is not an SPI"));

  m = sample_machine({.uart_intid = 20});
  EXPECT_THAT(error_of([&] { build_fdt(m); }), StartsWith("pl011@9000000: interrupt 20"));

  m = sample_machine({.console_intid = 48});
  EXPECT_THAT(error_of([&] { build_fdt(m); }),
              StartsWith("console: INTID 48 is already used by virtio-blk disk0"));

  m = sample_machine({.console_base = 0x0a00'0000});
  EXPECT_THAT(error_of([&] { build_fdt(m); }),
              StartsWith("console: address 0xa000000 is already used by virtio-blk disk0"));

  m = sample_machine(GicVersion::v2);
  m.cpus = 9;
  EXPECT_THAT(error_of([&] { build_fdt(m); }), StartsWith("--gic v2:"));

  m = sample_machine();
  m.memory.clear();
  EXPECT_THAT(error_of([&] { build_fdt(m); }), HasSubstr("no memory"));
}

TEST(Arm64Fdt, DtcDecompilesToTheExpectedSource) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  std::string warnings;
  const std::string dts = run_dtc("-I dtb -O dts", build_fdt(sample_machine()), &warnings);
  EXPECT_EQ(dts, slurp(LIBVMM_TEST_DATA_DIR "/aarch64_virt_gicv3.dts"))
      << "after a deliberate change: dtc -I dtb -O dts on build_fdt(sample_machine())";
  EXPECT_EQ(warnings, "");  // dtc's checks (unit addresses, interrupt providers, ...) pass

  run_dtc("-I dtb -O dts", build_fdt(sample_machine(GicVersion::v2)), &warnings);
  EXPECT_EQ(warnings, "");
}

// PCI (issue 13): the pci-host-ecam-generic node with its windows, INTx routes into the GIC
// and MSIs through the ITS, which is a child of the GIC node.
FdtMachine pci_machine(bool its) {
  FdtMachine m = sample_machine();
  if (its) {
    m.gic.its_base = 0x0808'0000;
    m.gic.its_size = 0x2'0000;
  }
  auto pci = std::make_shared<PciEcamFdt>();
  pci->layout = {
      {0x3f00'0000, 0x10'0000}, {0x1000'0000, 0x2eff'0000}, {0x80'0000'0000, 0x10'0000'0000}, {}};
  pci->intx = {{1, 0, 50}, {2, 0, 51}};
  if (its) pci->msi_parent = "its";
  m.devices.push_back(pci);
  return m;
}

TEST(Arm64Fdt, PciHostBridgeWithItsMsis) {
  const auto blob = build_fdt(pci_machine(true));
  const char* gic = "/interrupt-controller@8000000";
  const char* its = "/interrupt-controller@8000000/msi-controller@8080000";
  const char* pci = "/pcie@3f000000";
  EXPECT_EQ(string_prop(blob, its, "compatible"), std::string("arm,gic-v3-its\0", 15));
  EXPECT_TRUE(has_prop(blob, its, "msi-controller"));
  EXPECT_THAT(cells(blob, its, "#msi-cells"), ElementsAre(1));
  EXPECT_THAT(cells(blob, its, "reg"), ElementsAre(0, 0x0808'0000, 0, 0x2'0000));
  EXPECT_THAT(cells(blob, gic, "#address-cells"), ElementsAre(2));
  EXPECT_TRUE(has_prop(blob, gic, "ranges"));

  EXPECT_EQ(string_prop(blob, pci, "compatible"), std::string("pci-host-ecam-generic\0", 22));
  EXPECT_EQ(string_prop(blob, pci, "device_type"), std::string("pci\0", 4));
  EXPECT_THAT(cells(blob, pci, "reg"), ElementsAre(0, 0x3f00'0000, 0, 0x10'0000));
  EXPECT_THAT(cells(blob, pci, "bus-range"), ElementsAre(0, 0));  // 1 MiB of ECAM: bus 0
  EXPECT_THAT(cells(blob, pci, "ranges"),
              ElementsAre(0x0200'0000, 0, 0x1000'0000, 0, 0x1000'0000, 0, 0x2eff'0000,  //
                          0x0300'0000, 0x80, 0, 0x80, 0, 0x10, 0));
  EXPECT_THAT(cells(blob, pci, "interrupt-map-mask"), ElementsAre(0xf800, 0, 0, 7));
  // Device 1 INTA -> SPI 18 (INTID 50), device 2 INTA -> SPI 19, level-high; the GIC's unit
  // address is two cells with the ITS child.
  const uint32_t gic_phandle = cells(blob, gic, "phandle").at(0);
  EXPECT_THAT(cells(blob, pci, "interrupt-map"),
              ElementsAre(0x0800, 0, 0, 1, gic_phandle, 0, 0, 0, 18, 4,  //
                          0x1000, 0, 0, 1, gic_phandle, 0, 0, 0, 19, 4));
  EXPECT_THAT(cells(blob, pci, "msi-map"),
              ElementsAre(0, cells(blob, its, "phandle").at(0), 0, 0x1'0000));
  EXPECT_TRUE(has_prop(blob, pci, "dma-coherent"));
  if (have_dtc()) {
    std::string warnings;
    run_dtc("-I dtb -O dts", blob, &warnings);
    EXPECT_EQ(warnings, "");  // dtc's PCI bridge, interrupt-map and unit-address checks
  }
}

TEST(Arm64Fdt, PciHostBridgeWithoutItsHasNoMsiParent) {
  const auto blob = build_fdt(pci_machine(false));
  const char* gic = "/interrupt-controller@8000000";
  EXPECT_THAT(cells(blob, gic, "#address-cells"), ElementsAre(0));
  EXPECT_LT(node(blob, "/interrupt-controller@8000000/msi-controller@8080000"), 0);
  EXPECT_FALSE(has_prop(blob, "/pcie@3f000000", "msi-map"));
  const uint32_t gic_phandle = cells(blob, gic, "phandle").at(0);
  EXPECT_THAT(cells(blob, "/pcie@3f000000", "interrupt-map"),
              ElementsAre(0x0800, 0, 0, 1, gic_phandle, 0, 18, 4,  //
                          0x1000, 0, 0, 1, gic_phandle, 0, 19, 4));
  if (have_dtc()) {
    std::string warnings;
    run_dtc("-I dtb -O dts", blob, &warnings);
    EXPECT_EQ(warnings, "");
  }
}

TEST(Arm64Fdt, PciIntxLinesAreClaimedLikeDeviceInterrupts) {
  FdtMachine m = pci_machine(true);
  auto pci =
      std::make_shared<PciEcamFdt>(*std::static_pointer_cast<const PciEcamFdt>(m.devices.back()));
  pci->intx.push_back({3, 0, 48});  // the virtio-blk's line
  m.devices.back() = pci;
  EXPECT_THAT(error_of([&] { build_fdt(m); }), HasSubstr("is already used by virtio-blk disk0"));
}

// The power key (issue 14): a PL061 with a gpio-keys node as on QEMU virt, KEY_POWER on line 3.
TEST(Arm64Fdt, Pl061AndThePowerKey) {
  FdtMachine m = sample_machine();
  m.board.push_back(std::make_shared<Pl061Fdt>(0x0903'0000, 34));
  const std::vector<uint8_t> blob = build_fdt(m);
  EXPECT_EQ(string_prop(blob, "/pl061@9030000", "compatible"),
            std::string("arm,pl061\0arm,primecell\0", 24));
  EXPECT_THAT(cells(blob, "/pl061@9030000", "reg"), ElementsAre(0u, 0x0903'0000u, 0u, 0x1000u));
  EXPECT_THAT(cells(blob, "/pl061@9030000", "interrupts"), ElementsAre(0u, 2u, 4u));  // INTID 34
  EXPECT_TRUE(has_prop(blob, "/pl061@9030000", "gpio-controller"));
  EXPECT_THAT(cells(blob, "/pl061@9030000", "#gpio-cells"), ElementsAre(2u));
  const uint32_t gpio = fdt_get_phandle(blob.data(), node(blob, "/pl061@9030000"));
  ASSERT_NE(gpio, 0u);
  EXPECT_EQ(string_prop(blob, "/gpio-keys", "compatible"), std::string("gpio-keys\0", 10));
  EXPECT_THAT(cells(blob, "/gpio-keys/poweroff", "gpios"), ElementsAre(gpio, 3u, 0u));
  EXPECT_THAT(cells(blob, "/gpio-keys/poweroff", "linux,code"), ElementsAre(116u));  // KEY_POWER
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  std::string warnings;
  const std::string dts = run_dtc("-I dtb -O dts", blob, &warnings);
  EXPECT_EQ(warnings, "");
  EXPECT_NE(dts.find("linux,code = <0x74>;"), std::string::npos) << dts;
}

TEST(Arm64FdtPatch, PatchesMemoryChosenAndDevicesKeepsTheRest) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto user = compile_dts(R"(/dts-v1/;
/ {
  #address-cells = <2>; #size-cells = <2>;
  compatible = "vendor,board";
  interrupt-parent = <&gic>;
  gic: interrupt-controller@8000000 {
    compatible = "arm,gic-v3"; interrupt-controller; #interrupt-cells = <3>;
    reg = <0 0x8000000 0 0x10000 0 0x80a0000 0 0xf60000>;
  };
  memory@80000000 { device_type = "memory"; reg = <0 0x80000000 0 0x1000000>; };
  memory@90000000 { device_type = "memory"; reg = <0 0x90000000 0 0x1000000>; };
  chosen {
    bootargs = "old";
    linux,initrd-start = <0x81000000>; linux,initrd-end = <0x82000000>;
    stdout-path = "/my-uart@9000000";
  };
  my-uart@9000000 { compatible = "ns16550a"; reg = <0 0x9000000 0 0x1000>; };
  virtio_mmio@a000000 { compatible = "virtio,mmio"; reg = <0 0xa000000 0 0x200>; interrupts = <0 99 4>; };
};
)");
  ASSERT_FALSE(user.empty());
  const auto blob = patch_fdt(user, sample_machine(), "user.dtb");
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);

  EXPECT_LT(node(blob, "/memory@80000000"), 0);
  EXPECT_LT(node(blob, "/memory@90000000"), 0);
  EXPECT_THAT(cells(blob, "/memory@40000000", "reg"), ElementsAre(0u, 0x4000'0000u, 0u, 256 * MiB));
  EXPECT_EQ(string_prop(blob, "/chosen", "bootargs"), std::string("console=ttyAMA0 quiet\0", 22));
  EXPECT_THAT(cells(blob, "/chosen", "linux,initrd-start"), ElementsAre(0u, 0x4f00'0000u));
  EXPECT_EQ(string_prop(blob, "/chosen", "stdout-path"), std::string("/my-uart@9000000\0", 17));
  EXPECT_THAT(cells(blob, "/virtio_mmio@a000000", "interrupts"), ElementsAre(0u, 16u, 1u));
  EXPECT_THAT(cells(blob, "/virtio_mmio@a000200", "interrupts"), ElementsAre(0u, 17u, 4u));
  EXPECT_FALSE(has_prop(blob, "/virtio_mmio@a000000", "interrupt-parent"));  // the root's
  // Kept as the user wrote them.
  EXPECT_EQ(string_prop(blob, "/", "compatible"), std::string("vendor,board\0", 13));
  EXPECT_EQ(string_prop(blob, "/my-uart@9000000", "compatible"), std::string("ns16550a\0", 9));
  EXPECT_LT(node(blob, "/serial@9000000"), 0);
  // Absent in the user's tree, so added from the description.
  EXPECT_THAT(cells(blob, "/cpus/cpu@1", "reg"), ElementsAre(1u));
  EXPECT_EQ(string_prop(blob, "/psci", "method"), std::string("hvc\0", 4));
  EXPECT_GE(node(blob, "/timer"), 0);
}

TEST(Arm64FdtPatch, KeepsUserCpusAndPointsNewDevicesAtTheGic) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto user = compile_dts(R"(/dts-v1/;
/ {
  #address-cells = <2>; #size-cells = <2>;
  intc: intc@8000000 { compatible = "arm,cortex-a15-gic"; interrupt-controller; #interrupt-cells = <3>;
         reg = <0 0x8000000 0 0x10000 0 0x8010000 0 0x10000>; };
  cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = "cpu"; reg = <0>; }; };
  timer { compatible = "arm,armv8-timer"; interrupt-parent = <&intc>;
          interrupts = <1 13 4>, <1 14 4>, <1 11 4>, <1 10 4>; };
};
)");
  FdtMachine m = sample_machine(GicVersion::v2);
  m.initrd.reset();
  m.cpus = 1;
  const auto blob = patch_fdt(user, m, "user.dtb");
  EXPECT_LT(node(blob, "/cpus/cpu@1"), 0);
  EXPECT_THAT(cells(blob, "/timer", "interrupts"),
              ElementsAre(1u, 13u, 4u, 1u, 14u, 4u, 1u, 11u, 4u, 1u, 10u, 4u));
  const uint32_t gic = fdt_get_phandle(blob.data(), node(blob, "/intc@8000000"));
  ASSERT_NE(gic, 0u);
  EXPECT_THAT(cells(blob, "/virtio_mmio@a000000", "interrupt-parent"), ElementsAre(gic));
  EXPECT_TRUE(has_prop(blob, "/chosen", "bootargs"));  // /chosen created
  EXPECT_FALSE(has_prop(blob, "/chosen", "linux,initrd-start"));
}

// A user's tree the VM cannot keep its word to is refused in one line naming the file: other
// cells than the 2/2 vmm writes its nodes in, another GIC version, another number of CPUs.
TEST(Arm64FdtPatch, RefusesAUserTreeThatDisagreesWithTheVm) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto tree = [](const std::string& cells, const std::string& gic, int cpus) {
    std::string cpu_nodes;
    for (int i = 0; i < cpus; ++i) {
      cpu_nodes += "cpu@" + std::to_string(i) + " { device_type = \"cpu\"; reg = <" +
                   std::to_string(i) + ">; }; ";
    }
    // The VM's GIC registers: GICv3's redistributors for 2 vCPUs, GICv2's CPU interface.
    const std::string reg = gic == "arm,gic-v3" ? "0 0x8000000 0 0x10000 0 0x80a0000 0 0x40000"
                                                : "0 0x8000000 0 0x10000 0 0x8010000 0 0x10000";
    return compile_dts("/dts-v1/;\n/ {\n" + cells + " interrupt-parent = <&intc>;\n" +
                       "intc: intc@8000000 { compatible = \"" + gic +
                       "\"; interrupt-controller; #interrupt-cells = <3>; reg = <" + reg +
                       ">; };\n" + "cpus { #address-cells = <1>; #size-cells = <0>; " + cpu_nodes +
                       "};\n};\n");
  };
  const std::string two = "#address-cells = <2>; #size-cells = <2>;";
  EXPECT_NO_THROW(patch_fdt(tree(two, "arm,gic-v3", 2), sample_machine(), "user.dtb"));
  EXPECT_EQ(error_of([&] {
              patch_fdt(tree("#address-cells = <1>; #size-cells = <1>;", "arm,gic-v3", 2),
                        sample_machine(), "user.dtb");
            }),
            "user.dtb: the root's #address-cells/#size-cells are 1/1; vmm writes the memory and "
            "device nodes with 2/2 (as QEMU's virt board does)");
  EXPECT_EQ(error_of([&] { patch_fdt(tree("", "arm,gic-v3", 2), sample_machine(), "user.dtb"); }),
            "user.dtb: the root's #address-cells/#size-cells are 2/1; vmm writes the memory and "
            "device nodes with 2/2 (as QEMU's virt board does)");
  EXPECT_EQ(error_of([&] { patch_fdt(tree(two, "arm,gic-400", 2), sample_machine(), "user.dtb"); }),
            "user.dtb: its interrupt controller is a GICv2 (\"arm,gic-400\"), this VM's is a GICv3 "
            "(--gic)");
  EXPECT_EQ(error_of([&] {
              patch_fdt(tree(two, "arm,gic-v3", 2), sample_machine(GicVersion::v2), "user.dtb");
            }),
            "user.dtb: its interrupt controller is a GICv3 (\"arm,gic-v3\"), this VM's is a GICv2 "
            "(--gic)");
  EXPECT_EQ(error_of([&] { patch_fdt(tree(two, "arm,gic-v3", 4), sample_machine(), "user.dtb"); }),
            "user.dtb: /cpus lists 4 CPUs, the VM has 2 vCPUs (--vcpus)");
  // A disabled CPU is not counted.
  const auto disabled = compile_dts(
      "/dts-v1/;\n/ { #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&intc>;\n"
      "intc: intc@8000000 { compatible = \"arm,gic-v3\"; interrupt-controller; "
      "#interrupt-cells = <3>; reg = <0 0x8000000 0 0x10000 0 0x80a0000 0 0x40000>; };\n"
      "cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { device_type = \"cpu\"; reg = "
      "<0>; }; cpu@1 { device_type = \"cpu\"; reg = <1>; }; cpu@2 { device_type = \"cpu\"; "
      "reg = <2>; status = \"disabled\"; }; };\n};\n");
  EXPECT_NO_THROW(patch_fdt(disabled, sample_machine(), "user.dtb"));
}

// Found in review: a tree from another board (its GIC elsewhere, its timer on other PPIs) was
// taken, and the guest booted without interrupts or a clock tick, and no word why.
TEST(Arm64FdtPatch, RefusesAUserGicOrTimerElsewhere) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto tree = [](const std::string& reg, const std::string& timer) {
    return compile_dts(
        "/dts-v1/;\n/ { #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&intc>;\n"
        "intc: intc@8000000 { compatible = \"arm,gic-v3\"; interrupt-controller; "
        "#interrupt-cells = <3>; reg = <" +
        reg + ">; };\n" + timer + "};\n");
  };
  const std::string ours = "0 0x8000000 0 0x10000 0 0x80a0000 0 0x40000";
  const std::string timer =
      "timer { compatible = \"arm,armv8-timer\"; interrupts = <1 13 4>, <1 14 4>, <1 11 4>, "
      "<1 10 4>; };\n";
  EXPECT_NO_THROW(patch_fdt(tree(ours, timer), sample_machine(), "user.dtb"));
  EXPECT_NO_THROW(patch_fdt(tree("0 0x8000000 0 0x10000 0 0x80a0000 0 0xf60000", ""),
                            sample_machine(), "user.dtb"))
      << "QEMU virt's redistributor region, sized for its most CPUs";
  const std::string gic_error =
      "user.dtb: its GIC's reg does not match this VM's: the distributor at 0x8000000 and the "
      "redistributors at 0x80a0000 (0x40000 bytes or more, for every vCPU)";
  EXPECT_EQ(error_of([&] {
              patch_fdt(tree("0 0x2f000000 0 0x10000 0 0x2f100000 0 0x200000", ""),
                        sample_machine(), "user.dtb");
            }),
            gic_error);
  EXPECT_EQ(error_of([&] {
              patch_fdt(tree("0 0x8000000 0 0x10000 0 0x80a0000 0 0x20000", ""), sample_machine(),
                        "user.dtb");
            }),
            gic_error)
      << "room for one vCPU's redistributor, the VM has 2";
  EXPECT_EQ(error_of([&] {
              patch_fdt(tree(ours,
                             "timer { compatible = \"arm,armv8-timer\"; interrupts = <1 29 4>, "
                             "<1 30 4>, <1 27 4>, <1 26 4>; };\n"),
                        sample_machine(), "user.dtb");
            }),
            "user.dtb: its timer node's interrupts are not the PPIs KVM's timers raise (13, 14, "
            "11, 10: secure, non-secure, virtual and hypervisor physical timer); remove the node "
            "and vmm writes it");
}

TEST(Arm64FdtPatch, PointsAUsersSmcPsciAtKvm) {
  if (!have_dtc()) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  const auto user = compile_dts(R"(/dts-v1/;
/ {
  #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&intc>;
  intc: intc@8000000 { compatible = "arm,cortex-a15-gic"; interrupt-controller; #interrupt-cells = <3>;
         reg = <0 0x8000000 0 0x10000 0 0x8010000 0 0x10000>; };
  psci { compatible = "arm,psci-0.2", "arm,psci"; method = "smc"; cpu_on = <0xc4000003>; };
};
)");
  const auto blob = patch_fdt(user, sample_machine(GicVersion::v2), "user.dtb");
  EXPECT_EQ(string_prop(blob, "/psci", "method"), std::string("hvc\0", 4));
  EXPECT_THAT(cells(blob, "/psci", "cpu_on"), ElementsAre(0xc4000003u));  // the rest kept
}

// Any piece that describes itself is a device of the tree: its node (with the controller's
// interrupt cells and a phandle of its own) lands in a generated tree and in a patched one.
struct TestDevice final : FdtNodeSource {
  void describe_fdt(FdtWriter& fdt) const override {
    FdtNode node(node_name("test-device", 0x0c00'0000));
    node.string("compatible", "libvmm,test")
        .reg({{0x0c00'0000, 0x100}})
        .cells("interrupts", fdt.interrupts(60, FdtTrigger::level_high, "test device"))
        .u32("phandle", fdt.phandle("test-device"));
    fdt.claim_address(0x0c00'0000, "test device");
    fdt.add(std::move(node));
  }
};

TEST(Arm64FdtPatch, DevicesDescribeThemselves) {
  FdtMachine m = sample_machine();
  m.devices.push_back(std::make_shared<TestDevice>());
  const auto built = build_fdt(m);
  EXPECT_THAT(cells(built, "/test-device@c000000", "interrupts"), ElementsAre(0u, 28u, 4u));
  EXPECT_THAT(cells(built, "/test-device@c000000", "phandle"),
              ElementsAre(3u));  // after gic, clock

  const auto patched = patch_fdt(built, m, "user.dtb");
  EXPECT_THAT(cells(patched, "/test-device@c000000", "interrupts"), ElementsAre(0u, 28u, 4u));

  m.devices.push_back(std::make_shared<TestDevice>());
  EXPECT_THAT(error_of([&] { build_fdt(m); }),
              StartsWith("test device: INTID 60 is already used by test device"));
}

TEST(Arm64FdtPatch, GrowsTheBlobForManyDevices) {
  // Our own (packed) tree as the user's: patching must grow it.
  const auto user = build_fdt(sample_machine());
  FdtMachine m = sample_machine();
  m.devices.clear();
  for (uint32_t i = 0; i < 300; ++i) {
    m.devices.push_back(virtio_device(0x1000'0000 + i * 0x200ULL, 40 + i));
  }
  m.memory = {{0x4000'0000, 128 * MiB}, {0x1'0000'0000, 1 * GiB}};
  const auto blob = patch_fdt(user, m, "user.dtb");
  ASSERT_EQ(fdt_check_full(blob.data(), blob.size()), 0);
  EXPECT_GT(blob.size(), user.size() + 16 * KiB);
  EXPECT_THAT(cells(blob, "/virtio_mmio@10025600", "interrupts"), ElementsAre(0u, 307u, 1u));
  EXPECT_THAT(cells(blob, "/memory@40000000", "reg"), ElementsAre(0u, 0x4000'0000u, 0u, 128 * MiB));
  EXPECT_THAT(cells(blob, "/memory@100000000", "reg"), ElementsAre(1u, 0u, 0u, 1 * GiB));
  EXPECT_GE(node(blob, "/virtio_mmio@a000000"), 0);  // the user's own devices stay
  EXPECT_GE(node(blob, "/serial@9000000"), 0);
}

TEST(Arm64FdtPatch, RejectsBadUserBlobsNamingTheFile) {
  const std::vector<uint8_t> garbage(100, 0x42);
  EXPECT_THAT(error_of([&] { patch_fdt(garbage, sample_machine(), "my.dtb"); }),
              StartsWith("my.dtb: not a device tree blob"));

  auto truncated = build_fdt(sample_machine());
  truncated.resize(truncated.size() / 2);
  EXPECT_THAT(error_of([&] { patch_fdt(truncated, sample_machine(), "my.dtb"); }),
              StartsWith("my.dtb: invalid device tree"));

  // A version 2-15 tree names its root by path: Debian 12's libfdt would read a NULL name
  // checking one whose root lacks the '/' (dtb_patch_fuzzer's crash); refused by version.
  auto old_version = build_fdt(sample_machine());
  fdt_set_version(old_version.data(), 15);
  fdt_set_last_comp_version(old_version.data(), 2);
  EXPECT_THAT(error_of([&] { patch_fdt(old_version, sample_machine(), "my.dtb"); }),
              StartsWith("my.dtb: device tree version 15 is too old (16 or later is needed)"));

  // A tree without an interrupt controller cannot take virtio devices.
  std::vector<uint8_t> bare(4096);
  ASSERT_EQ(fdt_create_empty_tree(bare.data(), static_cast<int>(bare.size())), 0);
  ASSERT_EQ(fdt_setprop_u32(bare.data(), 0, "#address-cells", 2), 0);
  ASSERT_EQ(fdt_setprop_u32(bare.data(), 0, "#size-cells", 2), 0);
  EXPECT_THAT(error_of([&] { patch_fdt(bare, sample_machine(), "my.dtb"); }),
              StartsWith("my.dtb: no interrupt controller"));

  // Patching must not produce a tree the kernel refuses (over 2 MiB).
  std::vector<uint8_t> big(3 * MiB);
  ASSERT_EQ(fdt_create_empty_tree(big.data(), static_cast<int>(big.size())), 0);
  ASSERT_EQ(fdt_setprop_u32(big.data(), 0, "#address-cells", 2), 0);
  ASSERT_EQ(fdt_setprop_u32(big.data(), 0, "#size-cells", 2), 0);
  const std::vector<uint8_t> filler(2 * MiB, 0);
  ASSERT_EQ(fdt_setprop(big.data(), 0, "filler", filler.data(), static_cast<int>(filler.size())),
            0);
  const int gic = fdt_add_subnode(big.data(), 0, "intc");
  ASSERT_GE(gic, 0);
  ASSERT_EQ(fdt_setprop(big.data(), gic, "interrupt-controller", nullptr, 0), 0);
  ASSERT_EQ(fdt_setprop_u32(big.data(), gic, "#interrupt-cells", 3), 0);
  ASSERT_EQ(fdt_setprop_u32(big.data(), gic, "phandle", 1), 0);
  ASSERT_EQ(fdt_pack(big.data()), 0);
  const void* packed = big.data();
  big.resize(fdt_totalsize(packed));
  FdtMachine m = sample_machine();
  m.devices.clear();
  EXPECT_THAT(error_of([&] { patch_fdt(big, m, "my.dtb"); }), HasSubstr("over the arm64 limit"));
}

// Found by dtb_patch_fuzzer (a timeout): Debian 12's libfdt walks a property whose length is
// -12 back onto itself, forever. Refused before libfdt walks the tree.
TEST(Arm64FdtPatch, RefusesAPropertyLongerThanItsBlockInsteadOfLoopingForever) {
  for (const uint32_t length : {0xffff'fff4u, 0x7fff'fff0u, 0x1000u}) {
    auto blob = build_fdt(sample_machine());
    const int property = fdt_first_property_offset(blob.data(), 0);
    ASSERT_GE(property, 0);
    auto* header = reinterpret_cast<const fdt_header*>(blob.data());
    const size_t length_at = fdt_off_dt_struct(header) + static_cast<size_t>(property) + 4;
    for (int i = 0; i < 4; ++i) blob[length_at + i] = static_cast<uint8_t>(length >> (24 - 8 * i));
    EXPECT_THAT(error_of([&] { patch_fdt(blob, sample_machine(), "loop.dtb"); }),
                StartsWith("loop.dtb: invalid device tree: the property at offset"))
        << std::hex << length;
  }
}

// Found by dtb_patch_fuzzer again (a timeout): the same -12 length in a structure block that
// starts at an offset not a multiple of 4. libfdt 1.6.1 takes such a block and aligns its walk
// within it, so the check before it must too (it aligned file offsets, and missed the property).
TEST(Arm64FdtPatch, RefusesAnOverlongPropertyInAStructureBlockAtAnOddOffset) {
  auto blob = build_fdt(sample_machine());
  const int property = fdt_first_property_offset(blob.data(), 0);
  ASSERT_GE(property, 0);
  const auto* header = reinterpret_cast<const fdt_header*>(blob.data());
  const uint32_t struct_at = fdt_off_dt_struct(header);
  const uint32_t strings_at = fdt_off_dt_strings(header);
  const uint32_t reserve_at = fdt_off_mem_rsvmap(header);
  const uint32_t total = fdt_totalsize(header);
  ASSERT_LT(reserve_at, struct_at);
  // One byte more before the structure block: it and what follows it move by one.
  blob.insert(blob.begin() + struct_at, 0);
  void* moved = blob.data();
  fdt_set_off_dt_struct(moved, struct_at + 1);
  if (strings_at > struct_at) fdt_set_off_dt_strings(moved, strings_at + 1);
  fdt_set_totalsize(moved, total + 1);
  const size_t length_at = struct_at + 1 + static_cast<size_t>(property) + 4;
  for (int i = 0; i < 4; ++i)
    blob[length_at + i] = static_cast<uint8_t>(0xffff'fff4u >> (24 - 8 * i));
  EXPECT_THAT(error_of([&] { patch_fdt(blob, sample_machine(), "odd.dtb"); }),
              StartsWith("odd.dtb: invalid device tree: the property at offset"));
}

// Found by dtb_patch_fuzzer: the user's bytes may start anywhere in memory; reading the header
// in place was undefined behaviour (UBSan: member access within misaligned address).
TEST(Arm64FdtPatch, AcceptsATreeAtAnOddAddress) {
  const auto good = build_fdt(sample_machine());
  std::vector<uint8_t> shifted(good.size() + 1);
  std::copy(good.begin(), good.end(), shifted.begin() + 1);
  const auto patched = patch_fdt(std::span(shifted).subspan(1), sample_machine(), "odd.dtb");
  EXPECT_EQ(patched, patch_fdt(good, sample_machine(), "odd.dtb"));
}

TEST(Arm64FdtPatch, CorruptedBlobsGiveAValidTreeOrAUserError) {
  // The user's file is untrusted input: no mutation may crash or produce an invalid tree.
  const auto good = build_fdt(sample_machine());
  std::mt19937 random(12345);
  int accepted = 0;
  for (int round = 0; round < 2000; ++round) {
    auto blob = good;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int i = 0; i < flips; ++i) {
      blob[random() % blob.size()] = static_cast<uint8_t>(random());
    }
    if (round % 7 == 0) blob.resize(random() % blob.size());
    try {
      const auto patched = patch_fdt(blob, sample_machine(), "fuzz.dtb");
      ASSERT_EQ(fdt_check_full(patched.data(), patched.size()), 0) << "round " << round;
      ++accepted;
    } catch (const UserError& e) {
      ASSERT_THAT(e.what(), StartsWith("fuzz.dtb: ")) << "round " << round;
    }
  }
  EXPECT_GT(accepted, 0);  // some flips only touch property values
}

// An overlay as dtc -@ writes a /plugin/ with target-path fragments.
std::vector<uint8_t> test_overlay(const std::string& target) {
  FdtNode added("libvmm-overlay");
  added.string("compatible", "libvmm,test-overlay");
  FdtNode overlay("__overlay__");
  overlay.child(std::move(added));
  FdtNode fragment("fragment@0");
  fragment.string("target-path", target).child(std::move(overlay));
  FdtNode root("");
  root.child(std::move(fragment));
  return libvmm::serialize_fdt(root);
}

TEST(FdtOverlay, AppliesToATree) {
  FdtNode root("");
  root.u32("#address-cells", 2).u32("#size-cells", 2).child(FdtNode("chosen"));
  const std::vector<uint8_t> base = libvmm::serialize_fdt(root);
  const std::vector<uint8_t> out =
      libvmm::apply_fdt_overlay(base, "base.dtb", test_overlay("/chosen"), "o.dtbo");
  ASSERT_EQ(fdt_check_full(out.data(), out.size()), 0);
  const int node = fdt_path_offset(out.data(), "/chosen/libvmm-overlay");
  ASSERT_GE(node, 0);
  EXPECT_STREQ(static_cast<const char*>(fdt_getprop(out.data(), node, "compatible", nullptr)),
               "libvmm,test-overlay");
}

TEST(FdtOverlay, ATargetThatIsNotThereIsNamed) {
  FdtNode root("");
  const std::vector<uint8_t> base = libvmm::serialize_fdt(root);
  try {
    libvmm::apply_fdt_overlay(base, "base.dtb", test_overlay("/nowhere"), "o.dtbo");
    FAIL() << "applied";
  } catch (const libvmm::UserError& e) {
    EXPECT_THAT(e.what(), ::testing::StartsWith("o.dtbo: cannot apply the overlay to base.dtb: "));
  }
  const std::vector<uint8_t> junk(64, 0);
  EXPECT_THROW(libvmm::apply_fdt_overlay(base, "base.dtb", junk, "o.dtbo"), libvmm::UserError);
}

}  // namespace aarch64_fdt_test
