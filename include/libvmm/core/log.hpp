// Minimal leveled logging to stderr, prefixed with the program's name ("vmm: ").
#pragma once

#include <fmt/core.h>

#include <atomic>
#include <string_view>

namespace libvmm::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };

void set_level(Level level);
// The prefix of every line (default "vmm"); `name` must outlive the program (a literal).
void set_program_name(const char* name);
Level level();
void write(Level level, std::string_view message);

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::warn) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::info) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::debug) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace libvmm::log
