// A CharBackend for device tests: it records guest output and flow control, and hands the test
// the input sink so that the test delivers host input itself. Its output room is unbounded
// unless the test sets `room`; make_room() then gives more and calls the output listener, as a
// real backend does when its queue drains. With `terminal` set it is on a terminal of that size.
// Not thread-safe: the test drives it from one thread at a time.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "libvmm/backends/char_backend.hpp"

namespace libvmm::test {

class FakeCharBackend : public CharBackend {
 public:
  size_t write(std::span<const uint8_t> bytes) override {
    const size_t n = std::min(bytes.size(), room);
    output.append(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    if (room != kUnbounded) room -= n;
    if (n < bytes.size()) ++refusals;
    if (on_write) on_write();
    return n;
  }
  size_t write_room() override { return room; }
  void set_output_listener(std::function<void()> on_room) override {
    listener = std::move(on_room);
  }
  // `n` more bytes of room (kUnbounded: no limit any more), and the listener told.
  void make_room(size_t n) {
    room = n == kUnbounded ? n : room + n;
    if (listener) listener();
  }
  void start(EventLoop& /*loop*/, InputSink input) override { sink = std::move(input); }
  void pause_input() override {
    if (paused) ++repeated;
    paused = true;
    ++pauses;
  }
  void resume_input() override {
    if (!paused) ++repeated;
    paused = false;
    ++resumes;
    // As a paused terminal does (StdioBackend): what it held goes to the device at once.
    if (!held.empty() && sink) {
      std::vector<uint8_t> bytes;
      bytes.swap(held);
      sink(bytes);
    }
  }
  std::string describe() const override { return "fake"; }
  std::optional<TerminalSize> terminal_size() const override { return terminal; }
  void set_resize_listener(std::function<void()> on_resize) override {
    resize_listener = std::move(on_resize);
  }
  bool connected() const override { return host_connected; }
  void set_connection_listener(std::function<void()> on_change) override {
    connection_listener = std::move(on_change);
  }
  // A client comes (true) or goes, and the listener told (as a socket backend does).
  void set_connected(bool connected) {
    host_connected = connected;
    if (connection_listener) connection_listener();
  }
  // The terminal is now `cols` x `rows`, and the listener told (as SIGWINCH does).
  void resize(uint16_t cols, uint16_t rows) {
    terminal = TerminalSize{cols, rows};
    if (resize_listener) resize_listener();
  }

  std::string output;
  size_t room = kUnbounded;  // what write() takes before it refuses
  int refusals = 0;          // writes that took less than offered
  std::function<void()> listener;
  std::function<void()> on_write;  // called after each write
  InputSink sink;
  std::vector<uint8_t> held;  // input held while paused, given to the sink by resume_input()
  bool paused = false;
  int pauses = 0;
  int resumes = 0;
  int repeated = 0;  // a pause while paused, or a resume while reading: told twice
  bool host_connected = true;
  std::function<void()> connection_listener;
  std::optional<TerminalSize> terminal;  // none: not a terminal
  std::function<void()> resize_listener;
};

}  // namespace libvmm::test
