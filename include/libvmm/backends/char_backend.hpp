// Where a character device (UART, virtIO console) sends guest output and gets host input.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace libvmm {

class EventLoop;

class CharBackend {
 public:
  using InputSink = std::function<void(std::span<const uint8_t>)>;

  virtual ~CharBackend() = default;

  // Guest output. Called from vCPU or device threads; must not block for long.
  virtual void write(std::span<const uint8_t> bytes) = 0;

  // Starts delivering host input to `sink` on the event loop thread.
  virtual void start(EventLoop& loop, InputSink sink) = 0;

  // Flow control from the device: stop reading host input while its buffer is full.
  // Called on the event loop thread (from the sink) or posted there.
  virtual void pause_input() {}
  virtual void resume_input() {}

  // Human-readable description, e.g. "stdio", "file:/tmp/x".
  virtual std::string describe() const = 0;
};

}  // namespace libvmm
