// Runs part of a test in a forked child, for what would change the test process for good: a
// seccomp filter, a network namespace of its own.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>

namespace libvmm::test {

// Runs `scenario` in a child and expects it to succeed: it returns nullptr, or what went wrong,
// which the child writes to stderr before exiting with status 1.
inline void expect_in_child(const std::function<const char*()>& scenario) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const char* failed = scenario();
    if (failed != nullptr) std::fprintf(stderr, "child: %s\n", failed);
    ::_exit(failed == nullptr ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child says why on stderr";
}

}  // namespace libvmm::test
