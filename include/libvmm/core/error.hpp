// Error types shared by the whole library.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace libvmm {

// A problem the user can fix: a bad flag, a missing or malformed file, an invalid description.
// The message is one line that names the flag or file and says what is wrong (several problems
// found at once, as a description's, are one line each).
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

// Throws the UserError "WHAT: WHY", the form of every message about a bad file or flag.
[[noreturn]] void reject_input(std::string_view what, std::string_view why);

// The exit statuses of libvmm's programs (vmm, vmm-device) when they fail.
inline constexpr int kExitUserError = 2;  // a UserError: nothing was started
inline constexpr int kExitFailure = 1;    // anything else

// Runs `body`, which returns a program's exit status. An exception it throws is logged as
// errors (a UserError one log line per line of its message) and becomes kExitUserError or
// kExitFailure.
int exit_status_of(const std::function<int()>& body);

}  // namespace libvmm
