#include "libvmm/backends/file_backend.hpp"

#include <fcntl.h>

#include <chrono>

#include "libvmm/core/error.hpp"
#include "output_queue.hpp"

namespace libvmm {

using namespace std::chrono_literals;

FileBackend::FileBackend(std::string path, size_t output_limit) : path_(std::move(path)) {
  // Non-blocking: a FIFO without a reader fails (ENXIO) instead of hanging the open, and one
  // whose reader stops reading makes writes wait in the queue, not in the kernel. O_NOCTTY: a
  // terminal named here (file:/dev/ttyS1) never becomes the VMM's controlling terminal.
  fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
                   0644));
  if (!fd_) throw_errno(path_);
  output_ = std::make_unique<OutputQueue>(fd_.get(), false, "file:" + path_, output_limit);
}

FileBackend::~FileBackend() {
  output_->flush(1000ms, 200ms);
}

size_t FileBackend::write(std::span<const uint8_t> bytes) {
  return output_->write(bytes);
}

size_t FileBackend::write_room() {
  return output_->room();
}

void FileBackend::set_output_listener(std::function<void()> on_room) {
  output_->set_listener(std::move(on_room));
}

void FileBackend::start(EventLoop& loop, InputSink /*sink*/) {
  output_->start(loop);
}

size_t FileBackend::queued_bytes() const {
  return output_->queued();
}

}  // namespace libvmm
