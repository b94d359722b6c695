// `vmm check` prints the layout the resource planner computes; a running VM must have its
// devices exactly there. For every example system of this architecture: build its VMs (KVM,
// nothing run) and compare each VM's placed virtIO devices with the printed layout.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "libvmm/system/system.hpp"
#include "support/temp_path.hpp"

using namespace libvmm;
namespace fs = std::filesystem;

namespace system_plan_test {

// "  virtio   [0x00d0000000, 0x00d0001000) IRQ  5 virtio-blk vda ..." -> "0xd0000000-0xd0001000 5",
// "  virtio   PCI 00:01.0 MSI-X              virtio-blk vda ..." -> "PCI 00:01.0 virtio-blk"
std::multiset<std::string> printed_devices(const std::string& layout) {
  std::multiset<std::string> out;
  const std::regex mmio(R"(virtio +\[(0x[0-9a-f]+), (0x[0-9a-f]+)\) IRQ +([0-9]+))");
  for (std::sregex_iterator it(layout.begin(), layout.end(), mmio), end; it != end; ++it) {
    out.insert(fmt::format("{:#x}-{:#x} {}", std::stoull((*it)[1], nullptr, 16),
                           std::stoull((*it)[2], nullptr, 16), (*it)[3].str()));
  }
  const std::regex pci(R"(virtio +PCI (00:[0-9a-f]{2}\.0) +\S+ +(\S+))");
  for (std::sregex_iterator it(layout.begin(), layout.end(), pci), end; it != end; ++it) {
    out.insert(fmt::format("PCI {} {}", (*it)[1].str(), (*it)[2].str()));
  }
  return out;
}

// The examples: the source tree's, or a copy elsewhere (linux.guests, in the emulated host).
fs::path examples_dir() {
  const char* source = std::getenv("LIBVMM_SOURCE_DIR");
  return fs::path(source != nullptr ? source : LIBVMM_SOURCE_DIR) / "examples";
}

// A readable file of zeros under the test's temporary directory: a kernel for checks that do
// not boot it.
fs::path stand_in_kernel(const std::string& name) {
  const fs::path kernel = fs::path(test::temp_path(name));
  std::ofstream(kernel) << std::string(4096, '\0');
  return kernel;
}

// A <virtual_machine> (`attributes` after its name) with `maps` (whole lines), booting `kernel`.
std::string vm_element(const std::string& name, const std::string& attributes,
                       const std::string& maps, const fs::path& kernel) {
  return "    <virtual_machine name=\"" + name + "\"" + attributes + ">\n" + maps +
         "      <kernel path=\"" + kernel.string() +
         "\" />\n"
         "    </virtual_machine>\n";
}

// A description of one VM with 32 MiB of RAM (region guest_ram, line 2) booting `kernel`;
// `regions` (whole lines) come after guest_ram, from line 3.
std::string one_vm_system(const fs::path& kernel, const std::string& regions = "") {
  return "<system>\n"
         "  <memory_region name=\"guest_ram\" size=\"32M\" />\n" +
         regions + "  <protection_domain name=\"vmm\">\n" +
         vm_element("vm", "", "      <map mr=\"guest_ram\" vaddr=\"0x0\" perms=\"rwx\" />\n",
                    kernel) +
         "  </protection_domain>\n"
         "</system>\n";
}

TEST(SystemPlan, PrintedLayoutIsWhereTheRunningVmPutsItsDevices) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/kvm";
  // Stand-in images: a VM is built, not booted, so any readable files serve.
  const fs::path guest = fs::path(test::temp_path("plan-test-guest"));
  fs::create_directories(guest);
  for (const char* name : {"bzImage", "Image", "initramfs.cpio.gz", "vda.img", "vdb.img"}) {
    std::ofstream(guest / name) << std::string(4096, '\0');
  }
  ::setenv("LIBVMM_GUEST", guest.c_str(), 1);

  int checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(examples_dir())) {
    if (entry.path().extension() != ".system") continue;
    std::vector<std::string> problems;
    std::ifstream in(entry.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SystemDescription d = SystemDescription::parse(text, entry.path().string(), problems);
    if (!problems.empty() || !d.problems().empty()) continue;  // another architecture's example
    SCOPED_TRACE(entry.path().string());
    const std::string layout = d.layout();
    System system(std::move(d));
    std::multiset<std::string> running;
    for (Vm* vm : system.vms()) {
      for (const PlacedDevice& p : vm->devices()) {
        running.insert(p.pci_device
                           ? fmt::format("PCI 00:{:02x}.0 {}", *p.pci_device, p.name)
                           : fmt::format("{:#x}-{:#x} {}", p.base, p.base + p.size, p.irq));
      }
    }
    EXPECT_EQ(printed_devices(layout), running) << layout;
    ++checked;
  }
  EXPECT_GE(checked, 2) << "the x86_64 examples (simple, virtio) should both be checked";
}

// Found in review: private regions are mapped without a reservation, so a description asking
// for more than the host has started, for the OOM killer to end once the guest touched it.
// (Each region on its own: several may overcommit the host together.)
TEST(SystemPlan, PrivateRegionsBeyondTheHostsRamAreRefused) {
  const std::string text =
      one_vm_system(stand_in_kernel("plan-test-big-kernel"),
                    "  <memory_region name=\"huge\" size=\"0x100000000000\" />\n");
  std::vector<std::string> problems;
  SystemDescription d = SystemDescription::parse(text, "big.system", problems);
  ASSERT_TRUE(problems.empty()) << problems.front();
  try {
    System system(std::move(d));
    ADD_FAILURE() << "16 TiB of private regions were accepted";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("big.system:3: memory region 'huge': 16 TiB is more "
                                          "than this host's ",
                                          0),
              0u)
        << e.what();
  }
}

// A VM from a description names where its images were given, not the flags.
TEST(SystemPlan, ImageProblemsNameTheDescriptionLine) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/kvm";
  const fs::path kernel = stand_in_kernel("plan-test-not-a-kernel");
  const std::string text = one_vm_system(kernel);
  std::vector<std::string> problems;
  SystemDescription d = SystemDescription::parse(text, "t.system", problems);
  ASSERT_TRUE(problems.empty() && d.problems().empty());
  System system(std::move(d));
  try {
    system.vms().front()->prepare();
    ADD_FAILURE() << "a kernel of zeros was accepted";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("t.system:6: <kernel> " + kernel.string() + ": ", 0), 0u)
        << e.what();
  }
}

// Each memfd region of a description gets its backing from choose_ram_backing(): a VM that
// needs a shareable fd (VmConfig::ram_shared, vhost-user) keeps memfd for its RAM and every
// region it maps; otherwise the host's choice (anonymous memory where THP is on); page_size
// 2 MiB asks for hugetlb (not built here: it needs reserved pages).
TEST(SystemPlan, RegionBackingsFollowWhoNeedsAnFd) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/kvm";
  const fs::path kernel = stand_in_kernel("plan-test-backing-kernel");
  const std::string text =
      "<system>\n"
      "  <memory_region name=\"guest_ram\" size=\"32M\" />\n"
      "  <memory_region name=\"shared\" size=\"2M\" />\n"
      "  <memory_region name=\"other_ram\" size=\"32M\" />\n"
      "  <protection_domain name=\"vmm\">\n" +
      vm_element("a", "",
                 "      <map mr=\"guest_ram\" vaddr=\"0x0\" perms=\"rwx\" />\n"
                 "      <map mr=\"shared\" vaddr=\"0x40000000\" perms=\"rw\" />\n",
                 kernel) +
      vm_element("b", " id=\"1\" ram=\"other_ram\"",
                 "      <map mr=\"other_ram\" vaddr=\"0x0\" perms=\"rwx\" />\n", kernel) +
      "  </protection_domain>\n"
      "</system>\n";
  std::string problem;
  const MemoryBacking host_choice =
      choose_ram_backing(RamBacking::automatic, false, HostThp::read(), problem)->backing;
  for (const bool shared : {false, true}) {
    SCOPED_TRACE(shared ? "VM a has ram_shared" : "no VM needs an fd");
    std::vector<std::string> problems;
    SystemDescription d = SystemDescription::parse(text, "t.system", problems);
    ASSERT_TRUE(problems.empty()) << problems.front();
    for (auto* vm : d.vms()) {
      if (vm->config.name == "a") vm->config.ram_shared = shared;
      if (vm->config.name == "b") vm->config.ram_backing = RamBacking::memfd;
    }
    ASSERT_TRUE(d.problems().empty()) << d.problems().front();
    System system(std::move(d));
    const MemoryBacking a = shared ? MemoryBacking::memfd : host_choice;
    EXPECT_EQ(system.region("guest_ram")->backing(), a);
    EXPECT_EQ(system.region("shared")->backing(), a);
    EXPECT_EQ(system.region("guest_ram")->fd() >= 0, a != MemoryBacking::anonymous);
    EXPECT_EQ(system.region("other_ram")->backing(), MemoryBacking::memfd) << "b asked for memfd";
  }
}

}  // namespace system_plan_test
