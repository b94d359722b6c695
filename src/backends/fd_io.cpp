#include "fd_io.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

namespace libvmm {

bool write_all(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n >= 0) {
      bytes = bytes.subspan(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) return false;
  }
  return true;
}

}  // namespace libvmm
