// Helpers for tests of character backends and devices: byte views of text, a sink that collects
// host input, and the process's CPU time (to catch an event loop spinning).
#pragma once

#include <sys/resource.h>

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

// User plus system CPU time this process has used, in seconds.
inline double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

}  // namespace libvmm::test
