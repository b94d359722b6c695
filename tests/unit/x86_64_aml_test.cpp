#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>

#include "libvmm/arch/x86_64/acpi.hpp"
#include "libvmm/arch/x86_64/aml.hpp"

using namespace libvmm::x86;
using namespace libvmm::x86::aml;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace x86_64_aml_test {

Bytes chars(std::string_view s) {
  return Bytes(s.begin(), s.end());
}
Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(Aml, PkgLengthUsesOneToFourBytesAndCountsItself) {
  EXPECT_THAT(pkg_length(0), ElementsAre(0x01));
  EXPECT_THAT(pkg_length(62), ElementsAre(0x3F));
  // 63 + 2 = 65 = 0x41: two bytes, low nibble 1 in the lead byte, 0x04 next.
  EXPECT_THAT(pkg_length(63), ElementsAre(0x41, 0x04));
  EXPECT_THAT(pkg_length(4093), ElementsAre(0x4F, 0xFF));        // 4095, the largest 2-byte one
  EXPECT_THAT(pkg_length(4094), ElementsAre(0x81, 0x00, 0x01));  // 4097
  EXPECT_THAT(pkg_length((1u << 20) - 4), ElementsAre(0x8F, 0xFF, 0xFF));
  EXPECT_THAT(pkg_length((1u << 20) - 3), ElementsAre(0xC1, 0x00, 0x00, 0x01));
  EXPECT_THAT(pkg_length((1u << 28) - 5), ElementsAre(0xCF, 0xFF, 0xFF, 0xFF));
  EXPECT_THROW(pkg_length((1u << 28) - 4), std::invalid_argument);
}

TEST(Aml, NameStrings) {
  EXPECT_EQ(name_string("_HID"), chars("_HID"));
  EXPECT_EQ(name_string("_SB"), chars("_SB_"));  // padded with '_'
  EXPECT_EQ(name_string("\\"), Bytes({'\\', 0x00}));
  EXPECT_EQ(name_string(""), Bytes({0x00}));
  EXPECT_EQ(name_string("\\_SB.PCI0"), cat({{'\\', 0x2E}, chars("_SB_PCI0")}));
  EXPECT_EQ(name_string("\\_SB.PCI0.S08"), cat({{'\\', 0x2F, 3}, chars("_SB_PCI0S08_")}));
  EXPECT_EQ(name_string("^^PWRB"), cat({{'^', '^'}, chars("PWRB")}));
  EXPECT_THROW(name_string("TOOLONG"), std::invalid_argument);
  EXPECT_THROW(name_string("0ABC"), std::invalid_argument);    // a digit may not lead
  EXPECT_THROW(name_string("ab"), std::invalid_argument);      // lower case
  EXPECT_THROW(name_string("_SB."), std::invalid_argument);    // trailing dot
  EXPECT_THROW(name_string("_SB..X"), std::invalid_argument);  // empty segment
}

TEST(Aml, IntegersTakeTheShortestEncoding) {
  EXPECT_THAT(integer(0), ElementsAre(0x00));
  EXPECT_THAT(integer(1), ElementsAre(0x01));
  EXPECT_THAT(integer(2), ElementsAre(0x0A, 0x02));
  EXPECT_THAT(integer(0xFF), ElementsAre(0x0A, 0xFF));
  EXPECT_THAT(integer(0x100), ElementsAre(0x0B, 0x00, 0x01));
  EXPECT_THAT(integer(0x12345678), ElementsAre(0x0C, 0x78, 0x56, 0x34, 0x12));
  EXPECT_THAT(integer(0x100000000), ElementsAre(0x0E, 0, 0, 0, 0, 1, 0, 0, 0));
  EXPECT_THAT(dword(1), ElementsAre(0x0C, 1, 0, 0, 0));
}

TEST(Aml, StringsEisaIdsAndUuids) {
  EXPECT_THAT(string("AB"), ElementsAre(0x0D, 'A', 'B', 0x00));
  EXPECT_THROW(string("caf\xc3\xa9"), std::invalid_argument);
  EXPECT_EQ(eisa_id_value("PNP0A08"), 0x080AD041u);  // as iasl compiles EISAID("PNP0A08")
  EXPECT_EQ(eisa_id_value("PNP0501"), 0x0105D041u);
  EXPECT_THAT(eisa_id("PNP0C0C"), ElementsAre(0x0C, 0x41, 0xD0, 0x0C, 0x0C));
  EXPECT_THROW(eisa_id("PNP0A0"), std::invalid_argument);
  EXPECT_THROW(eisa_id("pnp0A08"), std::invalid_argument);
  EXPECT_THROW(eisa_id("PNP0A0G"), std::invalid_argument);
  // The PCI host bridge _OSC UUID: first three fields little-endian, the rest as written.
  EXPECT_THAT(uuid("33DB4D5B-1FF7-401C-9657-7441C03DD766"),
              ElementsAre(0x11, 0x13, 0x0A, 0x10, 0x5B, 0x4D, 0xDB, 0x33, 0xF7, 0x1F, 0x1C, 0x40,
                          0x96, 0x57, 0x74, 0x41, 0xC0, 0x3D, 0xD7, 0x66));
  EXPECT_THROW(uuid("33DB4D5B1FF7-401C-9657-7441C03DD766"), std::invalid_argument);
}

TEST(Aml, PackagesBuffersAndNames) {
  // Name (_S5, Package () { 5, 0 }): the bytes the DSDT used to hold literally.
  EXPECT_THAT(name("_S5", package({integer(5), integer(0)})),
              ElementsAre(0x08, '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0A, 0x05, 0x00));
  EXPECT_THAT(buffer({1, 2, 3}), ElementsAre(0x11, 0x06, 0x0A, 0x03, 1, 2, 3));
  EXPECT_THAT(buffer({}), ElementsAre(0x11, 0x02, 0x00));
  EXPECT_THROW(package(std::vector<Bytes>(256, integer(0))), std::invalid_argument);
  // A package long enough for a two-byte PkgLength: 100 one-byte elements.
  const Bytes big = package(std::vector<Bytes>(100, integer(1)));
  EXPECT_THAT(Bytes(big.begin(), big.begin() + 4), ElementsAre(0x12, 0x47, 0x06, 100));
  EXPECT_EQ(big.size(), 1 + 2 + 1 + 100u);
}

TEST(Aml, ScopesDevicesMethodsAndStatements) {
  EXPECT_EQ(device("COM1", {name("_UID", integer(1))}),
            cat({{0x5B, 0x82, 0x0B}, chars("COM1"), {0x08}, chars("_UID"), {0x01}}));
  EXPECT_EQ(scope("\\_SB", {}), cat({{0x10, 0x06, '\\'}, chars("_SB_")}));
  EXPECT_EQ(method("_STA", 0, false, {return_value(integer(0x0F))}),
            cat({{0x14, 0x09}, chars("_STA"), {0x00, 0xA4, 0x0A, 0x0F}}));
  EXPECT_EQ(method("_EVT", 1, true, {})[6], 0x09);  // 1 argument, Serialized
  EXPECT_EQ(notify("PWRB", integer(0x80)), cat({{0x86}, chars("PWRB"), {0x0A, 0x80}}));
  EXPECT_THAT(store(arg(0), local(1)), ElementsAre(0x70, 0x68, 0x61));
  EXPECT_THAT(and_op(local(0), integer(1)), ElementsAre(0x7B, 0x60, 0x01, 0x00));
  EXPECT_THAT(or_op(local(0), integer(2), local(0)), ElementsAre(0x7D, 0x60, 0x0A, 0x02, 0x60));
  EXPECT_THAT(if_then(l_equal(arg(0), integer(1)), {}), ElementsAre(0xA0, 0x04, 0x93, 0x68, 0x01));
  EXPECT_THAT(else_then({l_not(local(0))}), ElementsAre(0xA1, 0x03, 0x92, 0x60));
  EXPECT_EQ(create_dword_field(arg(3), integer(4), "CDW2"),
            cat({{0x8A, 0x6B, 0x0A, 0x04}, chars("CDW2")}));
  EXPECT_THROW(local(8), std::invalid_argument);
  EXPECT_THROW(arg(7), std::invalid_argument);
  EXPECT_THROW(method("_FOO", 8, false, {}), std::invalid_argument);
}

TEST(Aml, ResourceDescriptors) {
  EXPECT_THAT(io(0x3F8, 0x3F8, 8, 8), ElementsAre(0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 8, 8));
  EXPECT_THAT(memory32_fixed(0xD0000000, 0x200),
              ElementsAre(0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x02, 0x00, 0x00));
  EXPECT_THAT(memory32_fixed(0x1000, 0x10, false)[3], 0x00);  // ReadOnly
  EXPECT_THAT(extended_interrupt({5}, {.edge = true}),
              ElementsAre(0x89, 0x06, 0x00, 0x03, 0x01, 5, 0, 0, 0));
  EXPECT_THAT(extended_interrupt({16, 17}, {.consumer = false, .active_low = true, .shared = true}),
              ElementsAre(0x89, 0x0A, 0x00, 0x0C, 0x02, 16, 0, 0, 0, 17, 0, 0, 0));
  EXPECT_THROW(extended_interrupt({}, {}), std::invalid_argument);

  // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xFF, 0, 0x100).
  EXPECT_THAT(word_bus_number(0, 0xFF),
              ElementsAre(0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0, 0, 0xFF, 0, 0, 0, 0, 1));
  // WordIO (..., EntireRange, 0, 0x1000, 0xFFFF, 0, 0xF000).
  EXPECT_THAT(word_io(0x1000, 0xFFFF), ElementsAre(0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0x00,
                                                   0x10, 0xFF, 0xFF, 0, 0, 0x00, 0xF0));
  const Bytes d = dword_memory(0xE0000000, 0xEFFFFFFF, Cacheability::non_cacheable);
  EXPECT_THAT(Bytes(d.begin(), d.begin() + 6), ElementsAre(0x87, 0x17, 0x00, 0x00, 0x0C, 0x01));
  EXPECT_EQ(d.size(), 3 + 0x17u);
  const Bytes q = qword_memory(0x8000000000, 0x8FFFFFFFFF, Cacheability::prefetchable);
  EXPECT_THAT(Bytes(q.begin(), q.begin() + 6), ElementsAre(0x8A, 0x2B, 0x00, 0x00, 0x0C, 0x07));
  EXPECT_EQ(q.size(), 3 + 0x2Bu);
  EXPECT_THROW(word_io(0x10, 0x0F), std::invalid_argument);  // ends before it starts
  AddressSpace too_wide;
  too_wide.max = 0x10000;
  EXPECT_THROW(word_address(too_wide), std::invalid_argument);
  EXPECT_NO_THROW(dword_address(too_wide));

  // ResourceTemplate: a Buffer ending in the End Tag.
  EXPECT_THAT(
      resource_template({io(0x60, 0x60, 1, 1)}),
      ElementsAre(0x11, 0x0D, 0x0A, 0x0A, 0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 1, 1, 0x79, 0x00));
}

TEST(Acpi, DsdtDescribesSerialAndVirtioDevices) {
  const Bytes dsdt =
      build_dsdt({serial_port_node("COM1", 1, 0x3F8, 4), virtio_mmio_node(0, 0xD0000000, 0x1000, 5),
                  virtio_mmio_node(1, 0xD0001000, 0x1000, 6)});
  ASSERT_GT(dsdt.size(), 36u);
  uint32_t len;
  std::memcpy(&len, dsdt.data() + 4, 4);
  EXPECT_EQ(len, dsdt.size());
  EXPECT_EQ(acpi_checksum(dsdt.data(), dsdt.size()), 0);  // the table sums to zero
  const std::string text(dsdt.begin(), dsdt.end());
  EXPECT_THAT(text, HasSubstr("LNRO0005"));
  EXPECT_THAT(text, HasSubstr("VR00"));
  EXPECT_THAT(text, HasSubstr("VR01"));
  EXPECT_THROW(virtio_mmio_node(0, 0xFFFFF000, 0x2000, 5), std::length_error);
  EXPECT_THROW(virtio_mmio_node(256, 0xD0000000, 0x1000, 5), std::length_error);
}

TEST(Acpi, CommandLineTurnsAcpiOff) {
  EXPECT_FALSE(cmdline_disables_acpi(""));
  EXPECT_FALSE(cmdline_disables_acpi("console=ttyS0 quiet"));
  EXPECT_TRUE(cmdline_disables_acpi("console=ttyS0 acpi=off"));
  EXPECT_TRUE(cmdline_disables_acpi("acpi=off quiet"));
  EXPECT_FALSE(cmdline_disables_acpi("acpi=off acpi=force"));  // the last one wins
  EXPECT_FALSE(cmdline_disables_acpi("xacpi=off acpi=offx"));
  EXPECT_FALSE(cmdline_disables_acpi("acpi=noirq"));
}

TEST(Acpi, DevicesThatDoNotFitAreRefused) {
  std::vector<Bytes> many(100, Bytes(1000, 0xA3));  // 100 KB of (Noop) terms
  EXPECT_THROW(build_acpi_tables(kAcpiTablesAddr, 1, many), std::length_error);
}

// iasl (Debian's acpica-tools) decompiles the DSDT without errors, and compiling its listing
// gives back the same AML: the writer's bytes mean what ASL says.
class Iasl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("command -v iasl >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "iasl is not installed (Debian package acpica-tools, tools/install-deps)";
    }
    char tmpl[] = "/tmp/libvmm-aml-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  static std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  // Runs a shell command in dir_, returns its exit status; output goes to dir_/log.
  int run(const std::string& command) {
    return std::system(("cd '" + dir_.string() + "' && " + command + " >>log 2>&1").c_str());
  }
  std::filesystem::path dir_;
};

TEST_F(Iasl, DecompilesTheDsdtAndRecompilesItToTheSameAml) {
  // The machine's nodes plus a PCI-host-bridge-like node using every other construct.
  const Bytes pci = device(
      "PCI0",
      {name("_HID", eisa_id("PNP0A08")), name("_CID", eisa_id("PNP0A03")), name("_SEG", integer(0)),
       name("_UID", integer(0)),
       name("_CRS", resource_template(
                        {word_bus_number(0, 0xFF), word_io(0x1000, 0xFFFF),
                         dword_memory(0xE0000000, 0xEFFFFFFF, Cacheability::non_cacheable),
                         qword_memory(0x8000000000, 0x8FFFFFFFFF, Cacheability::prefetchable)})),
       name("_PRT", package({package({dword(0x0001FFFF), integer(0), integer(0), integer(16)}),
                             package({dword(0x0001FFFF), integer(1), integer(0), integer(17)})})),
       method("_OSC", 4, false,
              {create_dword_field(arg(3), integer(0), "CDW1"),
               if_then(l_equal(arg(0), uuid("33DB4D5B-1FF7-401C-9657-7441C03DD766")),
                       {create_dword_field(arg(3), integer(4), "CDW2"),
                        and_op(name_string("CDW2"), integer(0x1F), local(0))}),
               else_then({or_op(name_string("CDW1"), integer(4), name_string("CDW1"))}),
               return_value(arg(3))}),
       method("_STA", 0, false, {return_value(integer(0x0F))})});
  const Bytes pwrb = device("PWRB", {name("_HID", eisa_id("PNP0C0C")), name("_UID", integer(0))});
  const Bytes ged =
      device("GED0", {name("_HID", string("ACPI0013")),
                      name("_CRS", resource_template({extended_interrupt({9}, {.shared = true})})),
                      method("_EVT", 1, true, {notify("PWRB", integer(0x80))})});
  const Bytes dsdt =
      build_dsdt({serial_port_node("COM1", 1, 0x3F8, 4), virtio_mmio_node(0, 0xD0000000, 0x1000, 5),
                  virtio_mmio_node(1, 0xD0001000, 0x1000, 16), pci, pwrb, ged});
  {
    std::ofstream out(dir_ / "dsdt.dat", std::ios::binary);
    out.write(reinterpret_cast<const char*>(dsdt.data()), static_cast<long>(dsdt.size()));
  }
  ASSERT_EQ(run("iasl -d dsdt.dat"), 0) << slurp(dir_ / "log");
  const std::string dsl = slurp(dir_ / "dsdt.dsl");
  EXPECT_THAT(dsl, HasSubstr("Name (_S5, Package (0x02)"));
  EXPECT_THAT(dsl, HasSubstr("Scope (_SB)"));
  EXPECT_THAT(dsl, HasSubstr("Device (COM1)"));
  EXPECT_THAT(dsl, HasSubstr("EisaId (\"PNP0501\")"));
  EXPECT_THAT(dsl, HasSubstr("IO (Decode16,"));
  EXPECT_THAT(dsl, HasSubstr("Device (VR01)"));
  EXPECT_THAT(dsl, HasSubstr("\"LNRO0005\""));
  EXPECT_THAT(dsl, HasSubstr("Memory32Fixed (ReadWrite,"));
  EXPECT_THAT(dsl, HasSubstr("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )"));
  EXPECT_THAT(dsl, HasSubstr("WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,"));
  EXPECT_THAT(dsl,
              HasSubstr("WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,"));
  EXPECT_THAT(dsl, HasSubstr("DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, "
                             "NonCacheable, ReadWrite,"));
  EXPECT_THAT(dsl, HasSubstr("QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, "
                             "Prefetchable, ReadWrite,"));
  EXPECT_THAT(dsl, HasSubstr("ToUUID (\"33db4d5b-1ff7-401c-9657-7441c03dd766\")"));
  EXPECT_THAT(dsl, HasSubstr("Method (_EVT, 1, Serialized)"));
  EXPECT_THAT(dsl, HasSubstr("Notify (PWRB, 0x80)"));
  EXPECT_THAT(dsl, ::testing::Not(HasSubstr("Unknown")));

  // Compile the listing back and compare the AML after the table header.
  ASSERT_EQ(run("iasl -p again dsdt.dsl"), 0) << slurp(dir_ / "log");
  const std::string again = slurp(dir_ / "again.aml");
  ASSERT_GT(again.size(), 36u);
  EXPECT_EQ(std::string(dsdt.begin() + 36, dsdt.end()), again.substr(36)) << "iasl's listing:\n"
                                                                          << dsl;
}

TEST_F(Iasl, DecompilesTheMachineTablesDsdt) {
  // As the machine writes them: COM1 and 16 virtio-mmio devices.
  std::vector<Bytes> devices{serial_port_node("COM1", 1, 0x3F8, 4)};
  for (uint32_t i = 0; i < 16; ++i)
    devices.push_back(virtio_mmio_node(i, 0xD0000000 + i * 0x1000, 0x1000, 5 + i));
  const std::vector<uint8_t> tables = build_acpi_tables(kAcpiTablesAddr, 2, devices);
  uint64_t fadt_addr, dsdt_addr;
  std::memcpy(&fadt_addr, tables.data() + 0x40 + 36, 8);  // XSDT entry 0
  std::memcpy(&dsdt_addr, tables.data() + (fadt_addr - kAcpiTablesAddr) + 140, 8);
  const size_t dsdt = dsdt_addr - kAcpiTablesAddr;
  uint32_t len;
  std::memcpy(&len, tables.data() + dsdt + 4, 4);
  ASSERT_LE(dsdt + len, tables.size());
  {
    std::ofstream out(dir_ / "dsdt.dat", std::ios::binary);
    out.write(reinterpret_cast<const char*>(tables.data() + dsdt), len);
  }
  ASSERT_EQ(run("iasl -d dsdt.dat"), 0) << slurp(dir_ / "log");
  const std::string dsl = slurp(dir_ / "dsdt.dsl");
  EXPECT_THAT(dsl, HasSubstr("Device (VR0F)"));
  EXPECT_THAT(slurp(dir_ / "log"), ::testing::Not(HasSubstr("Error")));
}

TEST_F(Iasl, DecompilesThePciHostBridgeAndTheMcfg) {
  // The x86_64 board's PCI layout with a 64-bit window added, and two INTx routes.
  const libvmm::pci::HostBridgeLayout layout{{0xE0000000, 0x100000},
                                             {0xC0000000, 0x10000000},
                                             {0x8000000000, 0x1000000000},
                                             {0xC000, 0x4000}};
  std::vector<Bytes> devices{serial_port_node("COM1", 1, 0x3F8, 4)};
  for (auto& node : pci_host_bridge_nodes(layout, {{1, 0, 16}, {2, 0, 17}})) {
    devices.push_back(node);
  }
  const Bytes dsdt = build_dsdt(devices);
  const std::vector<uint8_t> tables =
      build_acpi_tables(kAcpiTablesAddr, 1, devices, McfgEntry{0xE0000000, 0, 0});
  uint64_t mcfg_addr;
  std::memcpy(&mcfg_addr, tables.data() + 0x40 + 36 + 16, 8);  // XSDT entry 2
  {
    std::ofstream out(dir_ / "dsdt.dat", std::ios::binary);
    out.write(reinterpret_cast<const char*>(dsdt.data()), static_cast<long>(dsdt.size()));
    std::ofstream mcfg(dir_ / "mcfg.dat", std::ios::binary);
    mcfg.write(reinterpret_cast<const char*>(tables.data() + (mcfg_addr - kAcpiTablesAddr)), 60);
  }
  ASSERT_EQ(run("iasl -d dsdt.dat"), 0) << slurp(dir_ / "log");
  const std::string dsl = slurp(dir_ / "dsdt.dsl");
  EXPECT_THAT(dsl, HasSubstr("Device (PCI0)"));
  EXPECT_THAT(dsl, HasSubstr("Name (_HID, EisaId (\"PNP0A08\")"));
  EXPECT_THAT(dsl, HasSubstr("Name (_CID, EisaId (\"PNP0A03\")"));
  EXPECT_THAT(dsl, HasSubstr("WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,"));
  EXPECT_THAT(dsl, HasSubstr("IO (Decode16,\n                    0x0CF8,"));
  EXPECT_THAT(dsl, HasSubstr("0xC000,             // Range Minimum"));
  EXPECT_THAT(dsl, HasSubstr("0xFFFF,             // Range Maximum"));
  EXPECT_THAT(dsl, HasSubstr("0xC0000000,         // Range Minimum"));
  EXPECT_THAT(dsl, HasSubstr("0xCFFFFFFF,         // Range Maximum"));
  EXPECT_THAT(dsl, HasSubstr("0x0000008000000000, // Range Minimum"));
  EXPECT_THAT(dsl, HasSubstr("0x0000008FFFFFFFFF, // Range Maximum"));
  EXPECT_THAT(dsl, HasSubstr("Name (_PRT, Package (0x02)"));
  EXPECT_THAT(dsl, HasSubstr("0x0002FFFF"));
  EXPECT_THAT(dsl, HasSubstr("Method (_OSC, 4, NotSerialized)"));
  EXPECT_THAT(dsl, HasSubstr("Device (PCIM)"));
  EXPECT_THAT(dsl, HasSubstr("Name (_HID, EisaId (\"PNP0C02\")"));
  EXPECT_THAT(dsl, HasSubstr("0xE0000000,         // Address Base"));
  EXPECT_THAT(dsl, HasSubstr("0x00100000,         // Address Length"));
  EXPECT_THAT(dsl, ::testing::Not(HasSubstr("Unknown")));
  // Back to the same AML.
  ASSERT_EQ(run("iasl -p again dsdt.dsl"), 0) << slurp(dir_ / "log");
  const std::string again = slurp(dir_ / "again.aml");
  ASSERT_GT(again.size(), 36u);
  EXPECT_EQ(std::string(dsdt.begin() + 36, dsdt.end()), again.substr(36)) << dsl;

  ASSERT_EQ(run("iasl -d mcfg.dat"), 0) << slurp(dir_ / "log");
  const std::string mcfg = slurp(dir_ / "mcfg.dsl");
  EXPECT_THAT(mcfg, HasSubstr("Signature : \"MCFG\""));
  EXPECT_THAT(mcfg, HasSubstr("Table Length : 0000003C"));
  EXPECT_THAT(mcfg, HasSubstr("Base Address : 00000000E0000000"));
  EXPECT_THAT(mcfg, HasSubstr("Start Bus Number : 00"));
  EXPECT_THAT(mcfg, HasSubstr("End Bus Number : 00"));
  EXPECT_THAT(slurp(dir_ / "log"), HasSubstr("Acpi Data Table [MCFG] decoded"));
}

}  // namespace x86_64_aml_test
