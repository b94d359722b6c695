// The console escape keys of an interactive stdio backend, as in QEMU: Ctrl-A is the prefix.
//   Ctrl-A x       quit the VMM
//   Ctrl-A s       ask the guest to shut down (as the first SIGTERM: the power button)
//   Ctrl-A h (?)   print help
//   Ctrl-A Ctrl-A  send one Ctrl-A to the guest
//   Ctrl-A other   send both bytes to the guest
// A pure state machine over input bytes, so it is tested without a terminal.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace libvmm {

class EscapeFilter {
 public:
  static constexpr uint8_t kPrefix = 0x01;  // Ctrl-A
  enum class Command { none, quit, shutdown, help };

  // Consumes one byte of host input; bytes meant for the guest are appended to `to_guest`.
  Command feed(uint8_t byte, std::vector<uint8_t>& to_guest);

  // True after a prefix byte, until the next byte decides what it meant.
  bool pending_prefix() const { return after_prefix_; }

  // Help for the user, with "\r\n" line ends for a terminal in raw mode.
  static std::string_view help_text();

 private:
  bool after_prefix_ = false;
};

}  // namespace libvmm
