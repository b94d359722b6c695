#include "libvmm/core/error.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "libvmm/core/log.hpp"

namespace libvmm {

SystemError::SystemError(const std::string& what, int err)
    : std::runtime_error(what + ": " + std::strerror(err)), err_(err) {}

void throw_errno(const std::string& what) {
  throw SystemError(what, errno);
}

void reject_input(std::string_view what, std::string_view why) {
  throw UserError(fmt::format("{}: {}", what, why));
}

int exit_status_of(const std::function<int()>& body) {
  try {
    return body();
  } catch (const UserError& e) {
    std::string_view rest = e.what();
    for (size_t end = rest.find('\n'); end != std::string_view::npos; end = rest.find('\n')) {
      log::error("{}", rest.substr(0, end));
      rest.remove_prefix(end + 1);
    }
    log::error("{}", rest);
    return kExitUserError;
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return kExitFailure;
  }
}

}  // namespace libvmm
