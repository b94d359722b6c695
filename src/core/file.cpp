#include "libvmm/core/file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "libvmm/core/error.hpp"
#include "libvmm/core/sigbus_guard.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {
namespace {

UserError file_error(const std::string& label, std::string_view why) {
  return UserError(fmt::format("{}: {}", label, why));
}

// The open file and its size; a UserError for anything but a readable regular file.
UniqueFd open_regular(const std::string& label, const std::filesystem::path& path, size_t& size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw file_error(label, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw file_error(label, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw file_error(label, "not a regular file");
  size = static_cast<size_t>(st.st_size);
  return fd;
}

std::string label_of(const std::filesystem::path& path, std::string_view flag) {
  return fmt::format("{} {}", flag, path.string());
}

}  // namespace

std::vector<uint8_t> read_file(const std::filesystem::path& path, std::string_view flag) {
  const std::string label = label_of(path, flag);
  size_t size = 0;
  const UniqueFd fd = open_regular(label, path, size);
  std::vector<uint8_t> data(size);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw file_error(label, std::strerror(errno));
    if (n == 0) throw file_error(label, "file shrank while being read");
    done += static_cast<size_t>(n);
  }
  return data;
}

MappedFile MappedFile::open(const std::filesystem::path& path, std::string_view flag) {
  std::string label = label_of(path, flag);
  size_t size = 0;
  const UniqueFd fd = open_regular(label, path, size);
  if (size == 0) return MappedFile(std::move(label), nullptr, 0);  // mmap refuses length 0
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (base == MAP_FAILED) throw file_error(label, std::strerror(errno));
  return MappedFile(std::move(label), static_cast<const uint8_t*>(base), size);
}

MappedFile MappedFile::open_if_given(const std::filesystem::path& path, std::string_view flag) {
  if (path.empty()) return MappedFile(std::string(flag), nullptr, 0);
  return open(path, flag);
}

MappedFile::MappedFile(std::string label, const uint8_t* base, size_t size)
    : label_(std::move(label)), base_(base), size_(size) {
  if (base_ == nullptr) return;
  try {
    guard_ = std::make_unique<SigbusGuard>(const_cast<uint8_t*>(base_), size_, -1);
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(base_), size_);
    throw;
  }
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : label_(std::move(other.label_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      guard_(std::move(other.guard_)) {}

MappedFile::~MappedFile() {
  guard_.reset();
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

void MappedFile::check_intact() const {
  if (guard_ && guard_->tripped()) throw file_error(label_, "file shrank while being read");
}

}  // namespace libvmm
