#include "libvmm/backends/file_backend.hpp"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "fd_io.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

FileBackend::FileBackend(std::string path) : path_(std::move(path)) {
  // O_NONBLOCK only for the open: a FIFO without a reader fails (ENXIO) instead of hanging.
  fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK, 0644));
  if (!fd_) throw_errno(path_);
  const int flags = ::fcntl(fd_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags & ~O_NONBLOCK) < 0) throw_errno(path_);
}

void FileBackend::write(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  if (failed_ || write_all(fd_.get(), bytes)) return;
  // Once is enough: a full disk would otherwise log on every guest byte.
  failed_ = true;
  log::warn("file:{}: write failed, discarding further output: {}", path_, std::strerror(errno));
}

}  // namespace libvmm
