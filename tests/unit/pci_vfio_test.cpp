// The host-side checks of VFIO passthrough (pci/vfio.hpp) on a fake sysfs tree: every refusal
// is one line naming the device and what to do. The device itself needs a real IOMMU: the
// emulated host of tests/integration/linux_vfio.sh.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include "libvmm/core/error.hpp"
#include "libvmm/pci/vfio.hpp"

namespace libvmm::pci {
namespace pci_vfio_test {
namespace fs = std::filesystem;

class VfioSysfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/libvmm-vfio-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    host_.sysfs = root_ / "sys";
    host_.dev = root_ / "dev";
    fs::create_directories(host_.sysfs / "bus/pci/devices");
    fs::create_directories(host_.sysfs / "bus/pci/drivers/vfio-pci");
    fs::create_directories(host_.sysfs / "bus/pci/drivers/nvme");
    fs::create_directories(host_.sysfs / "bus/pci/drivers/ahci");
  }
  void TearDown() override { fs::remove_all(root_); }

  // A device directory (as sysfs has it under /sys/devices), linked from bus/pci/devices, with
  // a driver and an IOMMU group ("" and -1: none).
  void add_device(const std::string& address, const std::string& driver, int group) {
    const fs::path dir = host_.sysfs / "devices/pci0000:00" / address;
    fs::create_directories(dir);
    fs::create_directory_symlink(dir, host_.sysfs / "bus/pci/devices" / address);
    if (!driver.empty()) {
      fs::create_directory_symlink(host_.sysfs / "bus/pci/drivers" / driver, dir / "driver");
    }
    if (group >= 0) {
      const fs::path g = host_.sysfs / "kernel/iommu_groups" / std::to_string(group);
      fs::create_directories(g / "devices");
      fs::create_directory_symlink(g, dir / "iommu_group");
      fs::create_directory_symlink(dir, g / "devices" / address);
    }
  }

  std::string refusal(const std::string& address) {
    try {
      check_vfio_device(host_, address, "--vfio " + address);
    } catch (const UserError& e) {
      return e.what();
    }
    return "(accepted)";
  }

  fs::path root_;
  VfioHost host_;
};

TEST(VfioAddress, CanonicalForm) {
  EXPECT_EQ(parse_pci_address("0000:01:00.0"), "0000:01:00.0");
  EXPECT_EQ(parse_pci_address("01:00.0"), "0000:01:00.0");
  EXPECT_EQ(parse_pci_address("0000:0A:1F.7"), "0000:0a:1f.7");
  for (const char* bad :
       {"", "01:00", "0000:01:00.8", "0000:01:20.0", "000:01:00.0", "0000:01:00.0 ", "x000:01:00.0",
        "0000:01-00.0", "0000:01:00:0", "0000:0001:00.0", "a:b:c:d"}) {
    EXPECT_EQ(parse_pci_address(bad), std::nullopt) << bad;
  }
}

TEST_F(VfioSysfsTest, NoSuchDevice) {
  EXPECT_EQ(refusal("0000:01:00.0"), "--vfio 0000:01:00.0: no such PCI device on this host (" +
                                         (host_.sysfs / "bus/pci/devices/0000:01:00.0").string() +
                                         " is missing; lspci -D lists the host's devices)");
}

TEST_F(VfioSysfsTest, BoundToAnotherDriverPrintsTheOverrideCommands) {
  add_device("0000:01:00.0", "nvme", 5);
  EXPECT_EQ(refusal("0000:01:00.0"),
            "--vfio 0000:01:00.0: the device is bound to driver nvme, not to vfio-pci; hand it "
            "to vfio-pci (as root): echo vfio-pci > "
            "/sys/bus/pci/devices/0000:01:00.0/driver_override; echo 0000:01:00.0 > "
            "/sys/bus/pci/devices/0000:01:00.0/driver/unbind; echo 0000:01:00.0 > "
            "/sys/bus/pci/drivers_probe");
}

TEST_F(VfioSysfsTest, UnboundDeviceNeedsNoUnbind) {
  add_device("0000:01:00.0", "", 5);
  const std::string why = refusal("0000:01:00.0");
  EXPECT_NE(why.find("bound to no driver, not to vfio-pci"), std::string::npos) << why;
  EXPECT_EQ(why.find("unbind"), std::string::npos) << why;
}

TEST_F(VfioSysfsTest, NoIommuNamesTheKernelParameters) {
  add_device("0000:01:00.0", "vfio-pci", -1);
  const std::string why = refusal("0000:01:00.0");
  EXPECT_EQ(why.rfind("--vfio 0000:01:00.0: the device is in no IOMMU group: this host has no "
                      "IOMMU enabled",
                      0),
            0u)
      << why;
  EXPECT_NE(why.find("intel_iommu=on"), std::string::npos) << why;
  EXPECT_NE(why.find("amd_iommu=on"), std::string::npos) << why;
}

TEST_F(VfioSysfsTest, GroupNotViableNamesTheOtherDevices) {
  add_device("0000:00:1f.0", "vfio-pci", 3);
  add_device("0000:00:1f.2", "ahci", 3);
  add_device("0000:00:1f.3", "nvme", 3);
  add_device("0000:00:1f.4", "", 3);  // no driver: fine
  EXPECT_EQ(refusal("0000:00:1f.0"),
            "--vfio 0000:00:1f.0: IOMMU group 3 is not viable: 0000:00:1f.2 (driver ahci), "
            "0000:00:1f.3 (driver nvme) are in the same group and still bound to a host driver; "
            "bind every device of the group to vfio-pci (or unbind it) first");
}

TEST_F(VfioSysfsTest, ViableGroupGivesItsNumber) {
  add_device("0000:01:00.0", "vfio-pci", 12);
  add_device("0000:01:00.1", "vfio-pci", 12);
  EXPECT_EQ(check_vfio_device(host_, "0000:01:00.0", "--vfio 0000:01:00.0"), 12u);
}

TEST_F(VfioSysfsTest, GroupDeviceMissingOrForbidden) {
  add_device("0000:01:00.0", "vfio-pci", 7);
  EXPECT_EQ(check_vfio_device(host_, "0000:01:00.0", "x"), 7u);
  // The container and group nodes are opened from host.dev: none here.
  VfioContainer container(host_);
  try {
    container.group(7, "--vfio 0000:01:00.0");
    FAIL() << "opened a group without /dev/vfio";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), "--vfio 0000:01:00.0: " + (host_.dev / "vfio/vfio").string() +
                                         " is missing: load the vfio-pci module (modprobe "
                                         "vfio-pci)");
  }
  EXPECT_EQ(vfio_group_open_error("--vfio 0000:01:00.0", "/dev/vfio/7", EACCES),
            "--vfio 0000:01:00.0: cannot open /dev/vfio/7: permission denied; run vmm as root or "
            "give this user the group's device (chown USER /dev/vfio/7) and a RLIMIT_MEMLOCK for "
            "guest RAM");
  EXPECT_EQ(vfio_group_open_error("--vfio 0000:01:00.0", "/dev/vfio/7", EBUSY),
            "--vfio 0000:01:00.0: /dev/vfio/7 is busy: another process (another VM?) has the "
            "device's IOMMU group open");
}

// The permission error as an unprivileged user really meets it: a child that drops to
// nobody opens a node only root may open.
TEST_F(VfioSysfsTest, PermissionDeniedAsAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to another user";
  fs::create_directories(host_.dev / "vfio");
  const fs::path node = host_.dev / "vfio/vfio";
  std::ofstream(node).put('x');
  fs::permissions(node, fs::perms::owner_read | fs::perms::owner_write);
  fs::permissions(root_, fs::perms::all);
  fs::permissions(host_.dev, fs::perms::all);
  fs::permissions(host_.dev / "vfio", fs::perms::all);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipefd[0]);
    std::string message = "(accepted)";
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
      message = "setresuid failed";
    } else {
      try {
        VfioContainer container(host_);
        container.group(7, "--vfio 0000:01:00.0");
      } catch (const std::exception& e) {
        message = e.what();
      }
    }
    static_cast<void>(::write(pipefd[1], message.data(), message.size()));
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string message;
  char buffer[512];
  ssize_t n;
  while ((n = ::read(pipefd[0], buffer, sizeof buffer)) > 0) message.append(buffer, n);
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(message, "--vfio 0000:01:00.0: cannot open " + node.string() +
                         ": permission denied; run vmm as root or give this user the group's "
                         "device (chown USER " +
                         node.string() + ") and a RLIMIT_MEMLOCK for guest RAM");
}

TEST(VfioMemlock, MessageSaysHowManyBytes) {
  EXPECT_EQ(vfio_memlock_error("--vfio 0000:01:00.0", 268435456, 8388608),
            "--vfio 0000:01:00.0: guest RAM must be pinned for the device's DMA: 268435456 "
            "bytes (256 MiB) are needed but RLIMIT_MEMLOCK allows 8388608 bytes; raise it "
            "(ulimit -l 262144, or LimitMEMLOCK= in a systemd unit) or run vmm as root");
}

// can_pin() follows RLIMIT_MEMLOCK when the process lacks CAP_IPC_LOCK: a child that drops to
// nobody (no capabilities) with an 8 MiB limit cannot pin 256 MiB but can pin 4 MiB.
TEST(VfioMemlock, LimitWithoutCapability) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to drop to another user";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    struct rlimit rl {
      8u << 20, 8u << 20
    };
    if (::setrlimit(RLIMIT_MEMLOCK, &rl) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(3);
    }
    uint64_t limit = 0;
    const bool big = can_pin(256u << 20, limit);
    const bool small = can_pin(4u << 20, limit);
    ::_exit(!big && small && limit == (8u << 20) ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Which parts of a BAR go into the guest: whole pages of the mmappable areas, less the pages
// the MSI-X table and PBA touch.
TEST(VfioDirectRanges, QemuNvmeBar0KeepsTheMsixPagesTrapped) {
  // 16 KiB BAR 0: registers and doorbells, then the table at 0x2000 and the PBA at 0x3000.
  const std::vector<BarRange> whole{{0, 0x4000}};
  const std::vector<BarRange> msix{{0x2000, 65 * 16}, {0x3000, 16}};
  EXPECT_EQ(direct_ranges(whole, msix, 0x1000), (std::vector<BarRange>{{0, 0x2000}}));
}

TEST(VfioDirectRanges, TableInTheMiddleSplitsTheArea) {
  const std::vector<BarRange> whole{{0, 0x10000}};
  const std::vector<BarRange> msix{{0x8010, 0x20}, {0x9ff8, 8}};
  EXPECT_EQ(direct_ranges(whole, msix, 0x1000),
            (std::vector<BarRange>{{0, 0x8000}, {0xa000, 0x6000}}));
}

TEST(VfioDirectRanges, SparseAreasAndPartialPages) {
  // VFIO's sparse areas (out of order), one not page aligned: whole pages only.
  const std::vector<BarRange> sparse{{0x6000, 0x2000}, {0x0, 0x1800}, {0x3100, 0x2000}};
  const std::vector<BarRange> none;
  EXPECT_EQ(direct_ranges(sparse, none, 0x1000),
            (std::vector<BarRange>{{0, 0x1000}, {0x4000, 0x1000}, {0x6000, 0x2000}}));
}

TEST(VfioDirectRanges, OverlappingHolesAndHolesCoveringEverything) {
  const std::vector<BarRange> whole{{0, 0x4000}};
  const std::vector<BarRange> holes{{0x0, 0x1800}, {0x1000, 0x10}, {0x3000, 0x1000}};
  EXPECT_EQ(direct_ranges(whole, holes, 0x1000), (std::vector<BarRange>{{0x2000, 0x1000}}));
  const std::vector<BarRange> all{{0, 0x4000}};
  EXPECT_TRUE(direct_ranges(whole, all, 0x1000).empty());
  // A BAR smaller than a page has no whole page; hostile sizes do not wrap.
  const std::vector<BarRange> small{{0, 0x800}};
  EXPECT_TRUE(direct_ranges(small, {}, 0x1000).empty());
  const std::vector<BarRange> wrapping{{~0ull - 0x10, 0x1000}};
  const std::vector<BarRange> far{{~0ull - 0x10, 0x20}};
  EXPECT_TRUE(direct_ranges(wrapping, far, 0x1000).empty());
}

}  // namespace pci_vfio_test
}  // namespace libvmm::pci
