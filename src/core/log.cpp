#include "libvmm/core/log.hpp"

#include <unistd.h>

#include <string>

namespace libvmm::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<const char*> g_program{"vmm"};
}  // namespace

void set_program_name(const char* name) {
  g_program.store(name, std::memory_order_relaxed);
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
  std::string line = g_program.load(std::memory_order_relaxed);
  line += ": ";
  if (lvl == Level::warn) line += "warning: ";
  if (lvl == Level::error) line += "error: ";
  line += message;
  line += isatty(STDERR_FILENO) ? "\r\n" : "\n";
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace libvmm::log
