// VmConfig validation: every bad input is one UserError naming the flag, before anything starts.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "libvmm/core/error.hpp"
#include "libvmm/vm.hpp"
#include "support/temp_path.hpp"

using namespace libvmm;

namespace vm_validate_test {

struct ValidateTest : ::testing::Test {
  ValidateTest() {
    kernel = test::temp_path("validate-kernel");
    std::ofstream(kernel) << "x";
    config.kernel = kernel;
  }
  std::string error_of(const VmConfig& c) {
    try {
      validate(c);
    } catch (const UserError& e) {
      return e.what();
    }
    return "";
  }
  std::string kernel;
  VmConfig config;
};

TEST_F(ValidateTest, AcceptsAGoodConfig) {
  EXPECT_EQ(error_of(config), "");
}

TEST_F(ValidateTest, Memory) {
  config.memory_size = 0;
  EXPECT_EQ(error_of(config), "--memory: must be greater than zero");
  config.memory_size = 256 * MiB + 1;
  EXPECT_EQ(error_of(config), "--memory: 268435457 bytes is not a multiple of 1 MiB");
  config.memory_size = 1ull << 50;
  EXPECT_NE(error_of(config).find("--memory: 1024 TiB is more than this host's"),
            std::string::npos);
  // Found in review: hugetlb's 2 MiB pages were refused later, naming the region, not the flag.
  config.memory_size = 1001 * MiB;
  config.ram_backing = RamBacking::hugetlb;
  EXPECT_EQ(error_of(config),
            "--memory: 1001 MiB is not a multiple of the 2 MiB huge pages --memory-backing "
            "hugetlb asks for");
  config.ram_backing = RamBacking::automatic;
}

TEST_F(ValidateTest, Vcpus) {
  config.vcpus = 0;
  EXPECT_EQ(error_of(config), "--vcpus: must be at least 1");
}

// From a .system file the refusal names the element that set the value, not a flag.
TEST_F(ValidateTest, ASystemFilesValuesAreNamedByTheirElements) {
  config.labels = {{"memory", "a.system:7: <map mr=\"guest_ram\">"},
                   {"vcpus", "a.system:9: <vcpus>"}};
  config.memory_size = 1ull << 50;
  EXPECT_NE(error_of(config).find("a.system:7: <map mr=\"guest_ram\">: 1024 TiB is more than"),
            std::string::npos)
      << error_of(config);
  config.memory_size = 256 * MiB;
  config.vcpus = 0;
  EXPECT_EQ(error_of(config), "a.system:9: <vcpus>: must be at least 1");
}

TEST_F(ValidateTest, KernelAndInitrdFiles) {
  config.kernel = "/nonexistent/bzImage";
  EXPECT_EQ(error_of(config), "--kernel /nonexistent/bzImage: No such file or directory");
  config.kernel = ::testing::TempDir();
  EXPECT_NE(error_of(config).find(": not a regular file"), std::string::npos);
  config.kernel = kernel;
  config.initrd = "/nonexistent/initrd";
  EXPECT_EQ(error_of(config), "--initrd /nonexistent/initrd: No such file or directory");
  // Given but empty: refused, not skipped as if no initrd had been given.
  const std::string empty = test::temp_path("validate-empty-initrd");
  std::ofstream{empty};
  config.initrd = empty;
  EXPECT_EQ(error_of(config), "--initrd " + empty + ": the file is empty");
  config.labels = {{"initrd", "a.system:8: <initrd>"}};
  EXPECT_EQ(error_of(config), "a.system:8: <initrd> " + empty + ": the file is empty");
  config.labels.clear();
  config.initrd = "/nonexistent/initrd";
  config.kernel.clear();
  EXPECT_EQ(error_of(config), "--kernel: no guest kernel given");
}

TEST_F(ValidateTest, SameImageTwice) {
  const std::string image = test::temp_path("validate-disk.img");
  std::ofstream(image) << std::string(512, '\0');
  const std::string link = test::temp_path("validate-disk-link.img");
  std::filesystem::remove(link);
  std::filesystem::create_symlink(image, link);
  auto disk = [](const std::string& path) {
    return DeviceSpec{"virtio_block", {{"path", path}}, "--disk " + path, ""};
  };
  config.devices = {disk(image)};
  EXPECT_EQ(error_of(config), "");
  config.devices.push_back(disk("/nonexistent.img"));
  EXPECT_EQ(error_of(config),
            "--disk /nonexistent.img: image /nonexistent.img: No such file or directory");
  config.devices.back() = disk(link);
  EXPECT_EQ(error_of(config), "--disk " + link + ": image " + link + " is already used by --disk " +
                                  image + "; give it to one device only");
}

// An output file over a file another use needs: opening it (O_TRUNC) would have emptied a disk
// image, or a WAV given as capture input, without a word.
TEST_F(ValidateTest, AnOutputFileCannotBeAnotherUsesFile) {
  const std::string image = test::temp_path("validate-out.img");
  std::ofstream(image) << std::string(512, 'x');
  config.devices = {DeviceSpec{"virtio_block", {{"path", image}}, "--disk " + image, ""}};
  config.serial = "file:" + image;
  EXPECT_EQ(error_of(config), "--disk " + image + ": " + image +
                                  " is already used by --serial file:" + image +
                                  "; give each its own file");
  EXPECT_EQ(std::filesystem::file_size(image), 512u) << "refused before anything was opened";

  // Two consoles into one log (the serial port and a virtio console).
  const std::string log = test::temp_path("validate-out.log");
  std::filesystem::remove(log);
  config.devices = {DeviceSpec{"virtio_console", {{"backend", "file:" + log}}, "--console", ""}};
  config.serial = "file:" + log;
  EXPECT_EQ(error_of(config), "--console: " + log + " is already used by --serial file:" + log +
                                  "; give each its own file");

  // A sound device's output over its own input.
  const std::string wav = test::temp_path("validate-in.wav");
  std::ofstream(wav) << "RIFF";
  config.serial = "stdio";
  config.devices = {
      DeviceSpec{"virtio_sound", {{"backend", "wav:" + wav}, {"in", wav}}, "--sound", ""}};
  EXPECT_NE(error_of(config).find("is already used by --sound"), std::string::npos)
      << error_of(config);

  // Several readers of one file, character devices and pipes are fine.
  config.devices = {DeviceSpec{"virtio_console", {{"backend", "file:/dev/null"}}, "--console", ""}};
  config.serial = "file:/dev/null";
  EXPECT_EQ(error_of(config), "");
  const std::string fifo = test::temp_path("validate-out.fifo");
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  config.devices = {DeviceSpec{"virtio_console", {{"backend", "file:" + fifo}}, "--console", ""}};
  config.serial = "file:" + fifo;
  EXPECT_EQ(error_of(config), "") << "a pipe (file:/dev/stdout into tee) is not truncated";
  std::filesystem::remove(fifo);
}

TEST_F(ValidateTest, ABadSerialBackendIsRefusedBeforeAnythingOpens) {
  config.serial = "tty";
  EXPECT_NE(error_of(config).find("--serial: "), std::string::npos) << error_of(config);
  config.labels = {{"serial", "a.system:5: <serial>"}};
  EXPECT_NE(error_of(config).find("a.system:5: <serial>: "), std::string::npos) << error_of(config);
}

TEST(VmCreate, MissingKvmDeviceIsAUserError) {
  VmConfig c;
  c.kernel = "/proc/self/exe";  // any readable file: validation passes, KVM is opened next
  c.kvm_device = "/nonexistent/kvm";
  try {
    Vm vm(c);
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()),
              "/nonexistent/kvm: no such device: this host has no KVM (load kvm-intel or kvm-amd, "
              "or enable virtualization in the firmware)");
  }
}

}  // namespace vm_validate_test
