// Scratch file names for tests: ctest runs each test in its own process, two at a time, so a
// fixed name under the temporary directory is shared between tests running side by side (one
// fixture's constructor emptied the kernel file another test was checking). Each process gets
// names of its own, removed (files, links or directories) when the process exits.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace libvmm::test {

inline std::string temp_path(std::string_view name) {
  struct Scratch {
    ~Scratch() {
      // A forked child that returns through exit() must not remove its parent's files.
      if (::getpid() != owner) return;
      std::error_code ignored;
      for (const auto& path : paths) std::filesystem::remove_all(path, ignored);
    }
    pid_t owner = ::getpid();
    std::vector<std::string> paths;
  };
  static Scratch scratch;
  std::string path =
      ::testing::TempDir() + "libvmm-" + std::to_string(scratch.owner) + "-" + std::string(name);
  scratch.paths.push_back(path);
  return path;
}

}  // namespace libvmm::test
