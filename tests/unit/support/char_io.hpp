// Helpers for tests of character backends and devices: byte views of text, a sink that collects
// host input, and the process's CPU time (to catch an event loop spinning).
#pragma once

#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "libvmm/backends/char_backend.hpp"

namespace libvmm::test {

inline std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// What a backend delivered, with a way to wait for it.
class Received {
 public:
  CharBackend::InputSink sink() {
    return [this](std::span<const uint8_t> bytes) {
      std::lock_guard lock(mutex_);
      data_.append(bytes.begin(), bytes.end());
      changed_.notify_all();
    };
  }
  // The bytes received once there are at least `size`, or after a timeout.
  std::string wait_for(size_t size, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return data_.size() >= size; });
    return data_;
  }
  std::string now() {
    std::lock_guard lock(mutex_);
    return data_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string data_;
};

// Feeds guest output to a backend as a device does: what write() does not take is offered again
// when the backend's output listener runs (on its loop thread).
class OutputFeeder {
 public:
  OutputFeeder(CharBackend& backend, std::string data) : backend_(backend), data_(std::move(data)) {
    backend_.set_output_listener([this] { offer(); });
  }
  ~OutputFeeder() { backend_.set_output_listener(nullptr); }
  OutputFeeder(const OutputFeeder&) = delete;
  OutputFeeder& operator=(const OutputFeeder&) = delete;

  // Offers what is left; returns how much the backend has taken so far.
  size_t offer() {
    std::lock_guard lock(mutex_);
    taken_ += backend_.write(bytes_of(std::string_view(data_).substr(taken_)));
    changed_.notify_all();
    return taken_;
  }
  // Whether the backend took everything within `timeout`.
  bool wait_all_taken(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return taken_ == data_.size(); });
  }

 private:
  CharBackend& backend_;
  const std::string data_;
  std::mutex mutex_;
  std::condition_variable changed_;
  size_t taken_ = 0;
};

// `size` bytes of a pattern that shows reordering or loss.
inline std::string numbered_lines(size_t size) {
  std::string s;
  for (size_t line = 0; s.size() < size; ++line) s += "line " + std::to_string(line) + "\n";
  s.resize(size);
  return s;
}

// Reads `size` bytes from a (possibly non-blocking) fd, waiting up to `timeout` in all.
inline std::string read_fd(int fd, size_t size,
                           std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string got;
  char buffer[4096];
  while (got.size() < size && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    const ssize_t n = ::read(fd, buffer, std::min(sizeof buffer, size - got.size()));
    if (n == 0) break;
    if (n > 0) got.append(buffer, static_cast<size_t>(n));
  }
  return got;
}

// User plus system CPU time this process has used, in seconds.
inline double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

}  // namespace libvmm::test
