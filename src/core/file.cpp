#include "libvmm/core/file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "libvmm/core/error.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

std::vector<uint8_t> read_file(const std::filesystem::path& path, std::string_view flag) {
  auto fail = [&](const char* why) {
    return UserError(fmt::format("{} {}: {}", flag, path.string(), why));
  };
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw fail(std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw fail(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw fail("not a regular file");
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(std::strerror(errno));
    if (n == 0) throw fail("file shrank while being read");
    done += static_cast<size_t>(n);
  }
  return data;
}

}  // namespace libvmm
