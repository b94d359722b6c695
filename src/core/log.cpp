#include "libvmm/core/log.hpp"

#include <unistd.h>

#include <string>

namespace libvmm::log {
namespace {
std::atomic<Level> g_level{Level::info};
}

void set_level(Level level) {
  g_level.store(level, std::memory_order_relaxed);
}
Level level() {
  return g_level.load(std::memory_order_relaxed);
}

void write(Level lvl, std::string_view message) {
  // One write() per line so lines from several threads do not interleave. "\r\n" keeps the
  // line readable when the terminal is in raw mode for the guest console.
  std::string line = "vmm: ";
  if (lvl == Level::warn) line += "warning: ";
  if (lvl == Level::error) line += "error: ";
  line += message;
  line += isatty(STDERR_FILENO) ? "\r\n" : "\n";
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace libvmm::log
