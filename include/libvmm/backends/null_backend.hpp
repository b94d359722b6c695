// The `none` backend: guest output is discarded, and there is no input.
#pragma once

#include <span>
#include <string>

#include "libvmm/backends/char_backend.hpp"

namespace libvmm {

class NullBackend : public CharBackend {
 public:
  size_t write(std::span<const uint8_t> bytes) override { return bytes.size(); }
  void start(EventLoop& /*loop*/, InputSink /*sink*/) override {}
  std::string describe() const override { return "none"; }
};

}  // namespace libvmm
