#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "libvmm/backends/open_char_backend.hpp"
#include "libvmm/core/error.hpp"

namespace libvmm {
namespace backends_factory_test {

std::string error_of(std::string_view spec, std::string_view flag = "--serial") {
  try {
    open_char_backend(spec, flag, nullptr);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(OpenCharBackendTest, None) {
  EXPECT_EQ(open_char_backend("none", "--serial", nullptr)->describe(), "none");
}

TEST(OpenCharBackendTest, Stdio) {
  EXPECT_EQ(open_char_backend("stdio", "--serial", nullptr)->describe(), "stdio");
}

TEST(OpenCharBackendTest, StdinHasOneReader) {
  auto serial = open_char_backend("stdio", "--serial", nullptr);
  EXPECT_EQ(error_of("stdio", "--console"),
            "--console stdio: stdin is already used by another stdio backend");
  serial.reset();
  EXPECT_NO_THROW(open_char_backend("stdio", "--console", nullptr));
}

TEST(OpenCharBackendTest, File) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("libvmm-factory-" + std::to_string(::getpid()) + ".log");
  auto backend = open_char_backend("file:" + path.string(), "--serial", nullptr);
  EXPECT_EQ(backend->describe(), "file:" + path.string());
  EXPECT_TRUE(std::filesystem::exists(path));
  std::filesystem::remove(path);
}

TEST(OpenCharBackendTest, UnknownSpecs) {
  const std::string expected = "(expected stdio, file:PATH, socket:PATH, pty or none)";
  EXPECT_EQ(error_of("foo"), "--serial: unknown backend 'foo' " + expected);
  EXPECT_EQ(error_of(""), "--serial: unknown backend '' " + expected);
  EXPECT_EQ(error_of("stdio:x"), "--serial: unknown backend 'stdio:x' " + expected);
  EXPECT_EQ(error_of("none:"), "--serial: unknown backend 'none:' " + expected);
  EXPECT_EQ(error_of("Stdio", "--console"), "--console: unknown backend 'Stdio' " + expected);
}

TEST(OpenCharBackendTest, FileNeedsAPath) {
  EXPECT_EQ(error_of("file"), "--serial: backend 'file' needs a PATH (file:PATH)");
  EXPECT_EQ(error_of("file:"), "--serial: backend 'file:' needs a PATH (file:PATH)");
}

TEST(OpenCharBackendTest, UnopenableFile) {
  EXPECT_EQ(error_of("file:/nonexistent-libvmm-dir/y"),
            "--serial file:/nonexistent-libvmm-dir/y: cannot open: No such file or directory");
  EXPECT_EQ(error_of("file:/"), "--serial file:/: cannot open: Is a directory");
}

}  // namespace backends_factory_test
}  // namespace libvmm
