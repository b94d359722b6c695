// Where a character device (UART, virtIO console) sends guest output and gets host input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace libvmm {

class EventLoop;

class CharBackend {
 public:
  using InputSink = std::function<void(std::span<const uint8_t>)>;
  static constexpr size_t kUnbounded = SIZE_MAX;  // write_room() of a backend that takes all

  virtual ~CharBackend() = default;

  // Guest output, from any thread (vCPU or event loop, under a device's lock). Never blocks:
  // takes what fits in the backend's bounded output queue and returns how many bytes (a
  // prefix of `bytes`) it took. A device keeps the rest and offers it again once the output
  // listener ran, which is how a guest's output waits for a slow reader without loss, and
  // without a host thread waiting in a system call. Output with nowhere to go (the reader
  // gone for good, no client connected, `none`) is taken and discarded.
  virtual size_t write(std::span<const uint8_t> bytes) = 0;
  // Any thread: how many bytes write() would take now. 0 asks for the listener as a refused
  // write() does.
  virtual size_t write_room() { return kUnbounded; }
  // Called on the event loop thread, with no lock of the backend held, once output that was
  // refused (a write() that took less than offered, or a write_room() of 0) has room again;
  // also when the output failed for good (from then on everything is taken). Set it before
  // start(); one listener per backend, whose owner outlives the loop's running.
  virtual void set_output_listener(std::function<void()> on_room) { static_cast<void>(on_room); }

  // Starts delivering host input to `sink` on the event loop thread.
  virtual void start(EventLoop& loop, InputSink sink) = 0;

  // Flow control from the device: stop reading host input while its buffer is full.
  // Called on the event loop thread (from the sink) or posted there.
  virtual void pause_input() {}
  virtual void resume_input() {}

  // Whether someone is at the host end to take output and give input: a socket's client.
  // Other backends count as connected while they are open. Any thread.
  virtual bool connected() const { return true; }
  // Called on the event loop thread when connected() changed. Set it before start(); one
  // listener per backend, whose owner outlives the loop's running.
  virtual void set_connection_listener(std::function<void()> on_change) {
    static_cast<void>(on_change);
  }

  // The size of the terminal that shows this backend's output, for a console that tells the
  // guest (virtIO's VIRTIO_CONSOLE_F_SIZE): nullopt without a terminal (a file, a pipe, a
  // socket); {0, 0} for a terminal that does not know its size. Any thread.
  struct TerminalSize {
    uint16_t cols = 0;
    uint16_t rows = 0;
    bool operator==(const TerminalSize&) const = default;
  };
  virtual std::optional<TerminalSize> terminal_size() const { return std::nullopt; }
  // Called on the event loop thread when terminal_size() may have changed (the terminal was
  // resized). Set it before start(); one listener per backend, whose owner outlives the loop's
  // running.
  virtual void set_resize_listener(std::function<void()> on_resize) {
    static_cast<void>(on_resize);
  }

  // Human-readable description, e.g. "stdio", "file:/tmp/x".
  virtual std::string describe() const = 0;
};

}  // namespace libvmm
