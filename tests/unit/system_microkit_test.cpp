// Microkit descriptions as written (docs/SYSTEM_FORMAT.md, "Coming from libvmm / Microkit"):
// what each element and attribute of libvmm's examples becomes, checked for either
// architecture on any host, and each refusal with its line.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "libvmm/system/description.hpp"

using namespace libvmm;

namespace system_microkit_test {

// The manual's QEMU virt system (lines: 1 <system>, 2-4 regions, 5 PD, 6 program_image,
// 7 VMM map, 8 VM, 9 RAM map, 10 uart map, 11 gic_vcpu map, 12 vm_extra, 13 </vm>, 14 pd_extra).
std::string manual(const std::string& vm_extra = "", const std::string& pd_extra = "",
                   const std::string& top_extra = "", const std::string& pd_attributes = "") {
  return "<system>\n"
         "  <memory_region name=\"guest_ram\" size=\"0x10_000_000\" />\n"
         "  <memory_region name=\"uart\" size=\"0x1_000\" phys_addr=\"0x9000000\" />\n"
         "  <memory_region name=\"gic_vcpu\" size=\"0x1_000\" phys_addr=\"0x8040000\" />\n"
         "  <protection_domain name=\"VMM\" priority=\"254\"" +
         pd_attributes +
         ">\n"
         "    <program_image path=\"vmm.elf\" />\n"
         "    <map mr=\"guest_ram\" vaddr=\"0x40000000\" perms=\"rw\" "
         "setvar_vaddr=\"guest_ram_vaddr\" />\n"
         "    <virtual_machine name=\"linux\" id=\"0\">\n"
         "      <map mr=\"guest_ram\" vaddr=\"0x40000000\" perms=\"rwx\" />\n"
         "      <map mr=\"uart\" vaddr=\"0x9000000\" perms=\"rw\" />\n"
         "      <map mr=\"gic_vcpu\" vaddr=\"0x8010000\" perms=\"rw\" />\n"
         "      " +
         vm_extra +
         "\n"
         "    </virtual_machine>\n"
         "    " +
         pd_extra +
         "\n"
         "  </protection_domain>\n"
         "  " +
         top_extra +
         "\n"
         "</system>\n";
}

struct MicrokitTest : ::testing::Test {
  // Parsed, read for `arch` (board devices interpreted) and checked as `vmm check` does.
  std::vector<std::string> problems_of(const std::string& text, const std::string& arch) {
    std::vector<std::string> problems;
    description = SystemDescription::parse(text, "t.system", problems);
    description.arch = arch;
    description.interpret_board_devices(problems);
    CheckOptions options;
    options.kernel_required = false;
    for (auto& p : description.problems(HostFiles::assume_present(), options)) {
      problems.push_back(p);
    }
    return problems;
  }

  void expect_problem(const std::string& text, const std::string& arch,
                      const std::string& expected) {
    const auto problems = problems_of(text, arch);
    ASSERT_EQ(problems.size(), 1u) << (problems.empty() ? "no problem" : problems.front()) << "\n"
                                   << text;
    EXPECT_EQ(problems.front(), expected);
  }

  SystemDescription description;
};

TEST_F(MicrokitTest, TheManualsSystemChecksForAarch64OnAnyHost) {
  const auto problems = problems_of(manual(), "aarch64");
  ASSERT_TRUE(problems.empty()) << problems.front();
  const VirtualMachineSpec& vm = *description.vms().front();
  // The device maps are no memory maps: the PL011 and the vGICv2 stand in for them.
  ASSERT_EQ(vm.maps.size(), 1u);
  ASSERT_EQ(vm.board_maps.size(), 2u);
  EXPECT_EQ(vm.board_maps[0].device, "the PL011 UART");
  EXPECT_EQ(vm.board_maps[1].guest_addr, 0x8010000u);
  EXPECT_EQ(vm.config.serial, "stdio");
  ASSERT_EQ(vm.config.machine_options.size(), 1u);
  EXPECT_EQ(vm.config.machine_options[0].kind, "gic");
  EXPECT_EQ(*vm.config.machine_options[0].get("version"), "2");
  EXPECT_EQ(description.domains[0].program_image, "vmm.elf");
  const std::string layout = description.layout();
  EXPECT_NE(layout.find("program_image vmm.elf: not loaded (the VMM is this vmm process)"),
            std::string::npos)
      << layout;
  EXPECT_NE(layout.find("1 aarch64 vCPU"), std::string::npos) << layout;
  EXPECT_NE(layout.find("board    'uart' at 0x9000000: the PL011 UART -> the emulated PL011"),
            std::string::npos)
      << layout;
  EXPECT_NE(layout.find("serial   PL011 (ttyAMA0) -> stdio"), std::string::npos) << layout;
  EXPECT_NE(layout.find("gic      v2"), std::string::npos) << layout;
  EXPECT_NE(layout.find("kernel   (none: give it with vmm run FILE --kernel IMAGE)"),
            std::string::npos)
      << layout;
}

TEST_F(MicrokitTest, TheManualsSystemNeedsAKernelToRun) {
  std::vector<std::string> problems;
  description = SystemDescription::parse(manual(), "t.system", problems);
  description.arch = "aarch64";
  description.interpret_board_devices(problems);
  EXPECT_EQ(description.problems(HostFiles::assume_present()),
            std::vector<std::string>{"t.system:8: virtual machine 'linux' needs a <kernel "
                                     "path=\"...\"/> (or: vmm run FILE --kernel IMAGE)"});
}

TEST_F(MicrokitTest, VcpuElementsCountAndPin) {
  const auto problems = problems_of(
      manual("<vcpu id=\"0\" cpu=\"2\" /><vcpu id=\"1\" /><vcpu id=\"2\" cpu=\"0\" />"), "aarch64");
  ASSERT_TRUE(problems.empty()) << problems.front();
  const VmConfig& c = description.vms().front()->config;
  EXPECT_EQ(c.vcpus, 3u);
  EXPECT_EQ(c.vcpu_host_cpus, (std::map<uint32_t, uint32_t>{{0, 2}, {2, 0}}));
  EXPECT_NE(description.layout().find("vcpu 0   on host CPU 2"), std::string::npos);
}

TEST_F(MicrokitTest, VcpuIdsAreZeroToNMinusOne) {
  expect_problem(manual("<vcpu id=\"0\" /><vcpu id=\"5\" />"), "aarch64",
                 "t.system:12: <vcpu id=\"5\">: with 2 <vcpu> elements the ids are 0 to 1 (one "
                 "per vCPU)");
  expect_problem(manual("<vcpu id=\"0\" /><vcpu id=\"0\" />"), "aarch64",
                 "t.system:12: <vcpu id=\"0\">: duplicate vCPU id");
  expect_problem(manual("<vcpu id=\"0\" /><vcpus count=\"2\" />"), "aarch64",
                 "t.system:12: <vcpus> and <vcpu> elements together: give either <vcpus "
                 "count=\"N\"/> or one <vcpu id=\"...\"/> per vCPU");
}

TEST_F(MicrokitTest, SchedulingAttributesAreAccepted) {
  const auto problems = problems_of(
      manual("", "<irq irq=\"33\" id=\"1\" />", "",
             " budget=\"1000\" period=\"1000\" stack_size=\"0x2000\" passive=\"false\" cpu=\"0\""),
      "aarch64");
  ASSERT_TRUE(problems.empty()) << problems.front();
  EXPECT_EQ(description.domains[0].cpu, 0u);
  EXPECT_EQ(description.vms().front()->board_maps[0].irq, 33u);
  EXPECT_NE(description.layout().find("runs on host CPU 0"), std::string::npos);
}

TEST_F(MicrokitTest, GicVersionConflict) {
  expect_problem(manual("<gic version=\"3\" />"), "aarch64",
                 "t.system:11: <map mr=\"gic_vcpu\">: the GICv2 virtual CPU interface asks for a "
                 "GICv2, but t.system:12: <gic> asks for version 3; remove one");
}

TEST_F(MicrokitTest, DeviceMapAtTheWrongPlace) {
  std::string text = manual();
  text.replace(text.find("vaddr=\"0x9000000\""), 17, "vaddr=\"0x9100000\"");
  expect_problem(text, "aarch64",
                 "t.system:10: map of 'uart' (the PL011 UART at phys_addr 0x9000000) at vaddr "
                 "0x9100000: on KVM it is the emulated PL011 (ttyAMA0) at 0x9000000; map it there");
}

// Found in review: a board device's map left the maps the validator checks before its perms
// and size were looked at.
TEST_F(MicrokitTest, ABoardDevicesMapHasItsPermsAndSizeChecked) {
  std::string text = manual();
  text.replace(text.find("vaddr=\"0x9000000\" perms=\"rw\""), 28,
               "vaddr=\"0x9000000\" perms=\"bogus\"");
  expect_problem(
      text, "aarch64",
      "t.system:10: map of 'uart': perms=\"bogus\" may only hold the letters r, w and x");
  text = manual();
  text.replace(text.find("vaddr=\"0x9000000\" perms=\"rw\""), 28, "vaddr=\"0x9000000\" size=\"0\"");
  expect_problem(text, "aarch64", "t.system:10: map of 'uart': size 0");
}

TEST_F(MicrokitTest, OtherDeviceRegionsAreRefused) {
  expect_problem(manual("<map mr=\"eth\" vaddr=\"0xa003000\" />", "",
                        "<memory_region name=\"eth\" size=\"0x1000\" phys_addr=\"0xa003000\" />"),
                 "aarch64",
                 "t.system:12: map of 'eth' (phys_addr 0xa003000, in QEMU virt's device space): a "
                 "device of the real board, which a KVM guest cannot be given; pass a host device "
                 "through with <vfio device=\"...\"/>, or back the region with path= or shm= to "
                 "share it with a host program");
}

TEST_F(MicrokitTest, ProtectionDomainIrqOfNoBoardDevice) {
  const auto problems = problems_of(manual("", "<irq irq=\"40\" id=\"2\" />"), "aarch64");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].rfind("t.system:14: <irq irq=\"40\">: on KVM a protection domain's "
                              "interrupt has a meaning only as the interrupt of a board device",
                              0),
            0u)
      << problems[0];
}

TEST_F(MicrokitTest, ProtectionDomainIrqWithoutANumber) {
  for (const char* irq : {"<irq id=\"1\" />", "<irq irq=\"x\" />", "<irq pin=\"-1\" />"}) {
    const auto problems = problems_of(manual("", irq), "aarch64");
    ASSERT_EQ(problems.size(), 1u) << irq;
    EXPECT_EQ(problems[0].rfind("t.system:14: <irq", 0), 0u) << problems[0];
  }
}

TEST_F(MicrokitTest, ChannelsAndComponentsAreRefused) {
  const std::string driver =
      "<protection_domain name=\"serial_driver\" priority=\"200\"><program_image "
      "path=\"uart_driver.elf\" /></protection_domain>";
  const auto problems =
      problems_of(manual("", "",
                         driver + "<channel><end pd=\"VMM\" id=\"1\" /><end pd=\"serial_driver\" "
                                  "id=\"2\" /></channel>"),
                  "aarch64");
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0],
            "t.system:16: protection domain 'serial_driver' (program_image uart_driver.elf) is an "
            "seL4 component with no virtual machine; on KVM the VM's serial port is vmm's "
            "(<serial backend=\"stdio\"/>, --serial; or <virtio_console>): remove it");
  EXPECT_EQ(problems[1].rfind("t.system:16: <channel>: seL4 notifications between protection "
                              "domains have no place on KVM",
                              0),
            0u)
      << problems[1];
}

TEST_F(MicrokitTest, X86Com1Ioport) {
  const std::string text =
      "<system>\n"
      "  <memory_region name=\"guest_ram\" size=\"0x8_000_000\" />\n"
      "  <protection_domain name=\"VMM\" priority=\"0\" stack_size=\"0x2000\">\n"
      "    <program_image path=\"vmm.elf\" />\n"
      "    <virtual_machine name=\"linux\">\n"
      "      <vcpu id=\"0\" />\n"
      "      <map mr=\"guest_ram\" vaddr=\"0\" perms=\"rwx\" cached=\"true\" />\n"
      "    </virtual_machine>\n"
      "    <ioport id=\"0\" addr=\"0x3f8\" size=\"8\" />\n"
      "    <irq pin=\"4\" vector=\"41\" id=\"1\" ioapic=\"0\" trigger=\"edge\" />\n"
      "  </protection_domain>\n"
      "</system>\n";
  auto problems = problems_of(text, "x86_64");
  ASSERT_TRUE(problems.empty()) << problems.front();
  const VirtualMachineSpec& vm = *description.vms().front();
  EXPECT_EQ(vm.config.serial, "stdio");
  ASSERT_EQ(vm.board_maps.size(), 1u);
  EXPECT_EQ(vm.board_maps[0].irq, 4u);
  // The same on AArch64: port I/O is x86's, pin= is the IOAPIC's.
  problems = problems_of(text, "aarch64");
  ASSERT_GE(problems.size(), 2u);
  EXPECT_EQ(problems[0].rfind("t.system:9: <ioport addr=\"0x3f8\">: port I/O exists only on "
                              "x86_64",
                              0),
            0u)
      << problems[0];
  // Another port range.
  std::string com2 = text;
  com2.replace(com2.find("0x3f8"), 5, "0x2f8");
  problems = problems_of(com2, "x86_64");
  ASSERT_EQ(problems.size(), 2u);  // the port, and the pin that is now nobody's
  EXPECT_EQ(problems[0].rfind("t.system:9: <ioport addr=\"0x2f8\" size=\"8\">: host I/O ports "
                              "cannot be handed to a KVM guest without VFIO",
                              0),
            0u)
      << problems[0];
}

TEST_F(MicrokitTest, UnknownArchitecture) {
  EXPECT_EQ(problems_of(manual(), "sparc64"),
            std::vector<std::string>{"--arch sparc64: unknown architecture (known: x86_64, "
                                     "aarch64, riscv64)"});
}

TEST_F(MicrokitTest, TheX86ExampleIsRefusedOnAarch64AndViceVersa) {
  const auto problems = problems_of(manual(), "x86_64");
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems[0].find("must be mapped at 0x0 on x86_64"), std::string::npos) << problems[0];
}

}  // namespace system_microkit_test
