#include "libvmm/core/error.hpp"

#include <cerrno>
#include <cstring>

namespace libvmm {

SystemError::SystemError(const std::string& what, int err)
    : std::runtime_error(what + ": " + std::strerror(err)), err_(err) {}

void throw_errno(const std::string& what) {
  throw SystemError(what, errno);
}

}  // namespace libvmm
