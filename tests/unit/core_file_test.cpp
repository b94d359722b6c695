#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/core/file.hpp"

namespace libvmm {
namespace core_file_test {

namespace fs = std::filesystem;

// A file of `size` bytes counting up from 0, removed at the end of the test.
struct ScratchFile {
  fs::path path = fs::temp_directory_path() / ("libvmm-file-test-" + std::to_string(::getpid()));
  explicit ScratchFile(size_t size) {
    std::ofstream out(path, std::ios::binary);
    for (size_t i = 0; i < size; ++i) out.put(static_cast<char>(i & 0xff));
  }
  ~ScratchFile() { fs::remove(path); }
};

std::string user_error(auto&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "no UserError";
}

TEST(MappedFile, HoldsTheFilesBytes) {
  ScratchFile file(3 * 4096 + 5);
  const MappedFile mapped = MappedFile::open(file.path, "--kernel");
  ASSERT_EQ(mapped.bytes().size(), 3 * 4096 + 5u);
  EXPECT_EQ(mapped.bytes()[0], 0);
  EXPECT_EQ(mapped.bytes()[4097], 1);
  EXPECT_EQ(mapped.bytes().back(), (3 * 4096 + 4) & 0xff);
  EXPECT_NO_THROW(mapped.check_intact());
  const std::vector<uint8_t> read = read_file(file.path, "--kernel");
  EXPECT_TRUE(std::equal(read.begin(), read.end(), mapped.bytes().begin(), mapped.bytes().end()));
}

TEST(MappedFile, AnEmptyFileHasNoBytes) {
  ScratchFile file(0);
  const MappedFile mapped = MappedFile::open(file.path, "--kernel");
  EXPECT_TRUE(mapped.bytes().empty());
  EXPECT_NO_THROW(mapped.check_intact());
}

TEST(MappedFile, AnOptionalInputNotGivenHasNoBytes) {
  const MappedFile none = MappedFile::open_if_given({}, "--initrd");
  EXPECT_TRUE(none.bytes().empty());
  EXPECT_NO_THROW(none.check_intact());
  ScratchFile file(4096 + 1);
  EXPECT_EQ(MappedFile::open_if_given(file.path, "--initrd").bytes().size(), 4096 + 1u);
  EXPECT_EQ(user_error([] { MappedFile::open_if_given("/nonexistent/initrd", "--initrd"); }),
            "--initrd /nonexistent/initrd: No such file or directory");
}

TEST(MappedFile, RefusalsNameTheFlagAndTheFile) {
  EXPECT_EQ(user_error([] { MappedFile::open("/nonexistent/vmlinux", "--kernel"); }),
            "--kernel /nonexistent/vmlinux: No such file or directory");
  const fs::path dir = fs::temp_directory_path();
  EXPECT_EQ(user_error([&] { MappedFile::open(dir, "<kernel>"); }),
            "<kernel> " + dir.string() + ": not a regular file");
}

TEST(MappedFile, AFileThatShrinksReadsZerosAndIsReported) {
  ScratchFile file(2 * 4096);
  const MappedFile mapped = MappedFile::open(file.path, "--kernel");
  fs::resize_file(file.path, 4096);
  // A SIGBUS without the guard; zeros with it.
  EXPECT_EQ(*static_cast<const volatile uint8_t*>(&mapped.bytes()[4096 + 3]), 0);
  EXPECT_EQ(user_error([&] { mapped.check_intact(); }),
            "--kernel " + file.path.string() + ": file shrank while being read");
}

TEST(MappedFile, MovesKeepTheMapping) {
  ScratchFile file(4096);
  MappedFile first = MappedFile::open(file.path, "--kernel");
  const uint8_t* base = first.bytes().data();
  const MappedFile second(std::move(first));
  EXPECT_EQ(second.bytes().data(), base);
  EXPECT_EQ(second.bytes()[7], 7);
}

}  // namespace core_file_test
}  // namespace libvmm
