// Guest output to a host file (`file:PATH`), created or truncated when opened. No input.
//
// PATH may be a FIFO (it must have a reader when opened). Writing never blocks the caller: what
// the file does not take at once (a FIFO nobody reads) waits in a queue of kOutputLimit bytes,
// drained by the event loop; beyond that write() takes nothing and the device holds its output
// back (CharBackend::write). When the reader is gone for good, output is discarded with one
// warning.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class OutputQueue;

class FileBackend : public CharBackend {
 public:
  static constexpr size_t kOutputLimit = 64 * 1024;

  // Throws SystemError (with errno) when `path` cannot be opened for writing.
  explicit FileBackend(std::string path, size_t output_limit = kOutputLimit);
  // Writes what still waits, for a bounded time. Destroy it only after the loop stopped running.
  ~FileBackend() override;
  FileBackend(const FileBackend&) = delete;
  FileBackend& operator=(const FileBackend&) = delete;

  size_t write(std::span<const uint8_t> bytes) override;
  size_t write_room() override;
  void set_output_listener(std::function<void()> on_room) override;
  // Drains queued output on `loop` from now on. No input.
  void start(EventLoop& loop, InputSink sink) override;
  std::string describe() const override { return "file:" + path_; }

  // Output waiting for the file to take it.
  size_t queued_bytes() const;

 private:
  const std::string path_;
  UniqueFd fd_;  // non-blocking
  std::unique_ptr<OutputQueue> output_;
};

}  // namespace libvmm
