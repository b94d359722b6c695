// --gic and --dtb: AArch64 flags, refused with one line naming the flag where they mean nothing.
#include <gtest/gtest.h>

#include <fstream>

#include "libvmm/core/error.hpp"
#include "libvmm/vm.hpp"

namespace libvmm {
namespace {

std::string error_of(const VmConfig& c) {
  try {
    validate(c);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

struct ArchFlagsTest : ::testing::Test {
  ArchFlagsTest() {
    std::ofstream(kernel) << "x";
    config.kernel = kernel;
  }
  std::string kernel = ::testing::TempDir() + "/arch-flags-kernel";
  VmConfig config;
};

#if defined(__aarch64__)
TEST_F(ArchFlagsTest, GicMustBeV2OrV3) {
  config.gic = "v3";
  EXPECT_EQ(error_of(config), "");
  config.gic = "v4";
  EXPECT_EQ(error_of(config), "--gic v4: expected v2 or v3");
}

TEST_F(ArchFlagsTest, DtbMustBeReadable) {
  config.dtb = "/nonexistent/board.dtb";
  EXPECT_EQ(error_of(config), "--dtb /nonexistent/board.dtb: No such file or directory");
}
#else
TEST_F(ArchFlagsTest, RefusedWithoutADeviceTreeMachine) {
  config.gic = "v3";
  EXPECT_EQ(error_of(config), "--gic: only AArch64 machines have a GIC");
  config.gic.clear();
  config.dtb = kernel;
  EXPECT_EQ(error_of(config), "--dtb: only AArch64 machines boot with a device tree");
}
#endif

}  // namespace
}  // namespace libvmm
