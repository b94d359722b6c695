// A NetBackend in host memory for device tests: frames to receive are queued in `incoming`,
// frames the device sends are recorded in `sent`, and flow control is observable.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "libvmm/backends/net_backend.hpp"

namespace libvmm::test {

class FakeNetBackend final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t> buffer) override {
    ++reads;
    if (fail_with != 0) return -fail_with;
    if (incoming.empty()) return 0;
    std::vector<uint8_t> frame = std::move(incoming.front());
    incoming.pop_front();
    const size_t n = std::min(frame.size(), buffer.size());
    std::memcpy(buffer.data(), frame.data(), n);
    return static_cast<ssize_t>(n);
  }
  bool send(std::span<const iovec> iov) override {
    std::vector<uint8_t> frame;
    for (const iovec& v : iov) {
      const auto* p = static_cast<const uint8_t*>(v.iov_base);
      frame.insert(frame.end(), p, p + v.iov_len);
    }
    sent_iovecs.push_back(iov.size());
    sent.push_back(std::move(frame));
    return accept;
  }
  void set_offloads(uint64_t features) override { offloads = features; }
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override { paused = true; }
  void resume_receive() override { paused = false; }
  void set_enabled(bool on) override {
    EXPECT_TRUE(on || paused) << "detached while watched";
    enabled = on;
  }
  std::string describe() const override { return "fake"; }
  bool link_up() const override { return link; }
  void watch_link(EventLoop&, std::function<void()> changed) override {
    link_changed = std::move(changed);
  }

  std::deque<std::vector<uint8_t>> incoming;
  std::vector<std::vector<uint8_t>> sent;
  std::vector<size_t> sent_iovecs;
  bool accept = true;
  int fail_with = 0;  // an errno for receive() to report
  bool paused = false;
  bool enabled = true;
  uint64_t offloads = 0;
  int reads = 0;
  bool link = true;                    // what link_up() answers
  std::function<void()> link_changed;  // what watch_link() was given
};

}  // namespace libvmm::test
