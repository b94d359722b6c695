// A device for ports a guest pokes harmlessly (port 0x80, the POST code / I/O delay port):
// writes are accepted and dropped, reads return all-ones like an unclaimed ISA port.
// Stateless, so one instance can be attached at any number of ports.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "libvmm/core/bus.hpp"

namespace libvmm {

class PortSink : public BusDevice {
 public:
  static constexpr uint64_t kPostPort = 0x80;

  explicit PortSink(std::string name = "port-sink") : name_(std::move(name)) {}

  std::string name() const override { return name_; }
  void read(uint64_t /*offset*/, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0xFF);
  }
  void write(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) override {}

 private:
  const std::string name_;
};

}  // namespace libvmm
