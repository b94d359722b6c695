// A CharBackend for device tests: it records guest output and flow control, and hands the test
// the input sink so that the test delivers host input itself. Not thread-safe: the test drives
// it from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "libvmm/backends/char_backend.hpp"

namespace libvmm::test {

class FakeCharBackend : public CharBackend {
 public:
  void write(std::span<const uint8_t> bytes) override {
    output.append(bytes.begin(), bytes.end());
    if (on_write) on_write();
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
  }
  std::string describe() const override { return "fake"; }

  std::string output;
  std::function<void()> on_write;  // called after each write
  InputSink sink;
  bool paused = false;
  int pauses = 0;
  int resumes = 0;
  int repeated = 0;  // a pause while paused, or a resume while reading: told twice
};

}  // namespace libvmm::test
