// Error types shared by the whole library.
#pragma once

#include <stdexcept>
#include <string>

namespace libvmm {

// A problem the user can fix: a bad flag, a missing or malformed file, an invalid description.
// The message is one line that names the flag or file and says what is wrong.
// The vmm program prints it and exits with status 2 before starting anything.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The host refused an operation (an ioctl, mmap, ...). Carries errno.
class SystemError : public std::runtime_error {
 public:
  SystemError(const std::string& what, int err);
  int code() const noexcept { return err_; }

 private:
  int err_;
};

// Throws SystemError for the current errno, prefixed by `what`.
[[noreturn]] void throw_errno(const std::string& what);

}  // namespace libvmm
