#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/backends/file_backend.hpp"
#include "libvmm/backends/null_backend.hpp"
#include "libvmm/core/error.hpp"

namespace libvmm {
namespace {

class FileBackendTest : public testing::Test {
 protected:
  ~FileBackendTest() override { std::filesystem::remove(path_); }

  std::string contents() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
  }

  const std::string path_ = (std::filesystem::temp_directory_path() /
                             ("libvmm-file-backend-" + std::to_string(::getpid()) + ".log"))
                                .string();
};

TEST_F(FileBackendTest, WritesAppendInOrder) {
  FileBackend backend(path_);
  EXPECT_EQ(backend.describe(), "file:" + path_);
  backend.write(bytes_of("Linux version"));
  backend.write(bytes_of(" 6.1\r\n"));
  EXPECT_EQ(contents(), "Linux version 6.1\r\n");
}

TEST_F(FileBackendTest, TruncatesAtOpen) {
  { std::ofstream(path_) << "old output from the last run\n"; }
  FileBackend backend(path_);
  EXPECT_EQ(contents(), "");
  backend.write(bytes_of("new"));
  EXPECT_EQ(contents(), "new");
}

TEST_F(FileBackendTest, ConcurrentWritesStayWhole) {
  FileBackend backend(path_);
  const std::string a(1000, 'a'), b(1000, 'b');
  std::vector<std::thread> threads;
  for (const std::string* s : {&a, &b}) {
    threads.emplace_back([&backend, s] {
      for (int i = 0; i < 50; ++i) backend.write(bytes_of(*s));
    });
  }
  for (auto& t : threads) t.join();
  const std::string got = contents();
  ASSERT_EQ(got.size(), 100'000u);
  for (size_t i = 0; i < got.size(); i += 1000) {
    EXPECT_EQ(got.substr(i, 1000), std::string(1000, got[i])) << "chunk at " << i;
  }
}

TEST_F(FileBackendTest, UnopenablePathThrowsSystemError) {
  EXPECT_THROW(FileBackend("/nonexistent-libvmm-dir/x"), SystemError);
}

TEST(NullBackendTest, DiscardsOutput) {
  NullBackend backend;
  const uint8_t byte = 'x';
  backend.write(std::span(&byte, 1));
  EXPECT_EQ(backend.describe(), "none");
}

}  // namespace
}  // namespace libvmm
