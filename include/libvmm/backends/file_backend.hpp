// Guest output to a host file (`file:PATH`), created or truncated when opened. No input.
#pragma once

#include <mutex>
#include <span>
#include <string>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class FileBackend : public CharBackend {
 public:
  // Throws SystemError (with errno) when `path` cannot be opened for writing.
  explicit FileBackend(std::string path);

  void write(std::span<const uint8_t> bytes) override;
  void start(EventLoop& /*loop*/, InputSink /*sink*/) override {}
  std::string describe() const override { return "file:" + path_; }

 private:
  const std::string path_;
  UniqueFd fd_;
  std::mutex mutex_;  // whole writes from concurrent callers stay whole
  bool failed_ = false;
};

}  // namespace libvmm
