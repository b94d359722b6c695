#include "libvmm/backends/escape_filter.hpp"

namespace libvmm {

EscapeFilter::Command EscapeFilter::feed(uint8_t byte, std::vector<uint8_t>& to_guest) {
  if (!after_prefix_) {
    if (byte == kPrefix) {
      after_prefix_ = true;
    } else {
      to_guest.push_back(byte);
    }
    return Command::none;
  }
  after_prefix_ = false;
  switch (byte) {
    case 'x':
      return Command::quit;
    case 's':
      return Command::shutdown;
    case 'h':
    case '?':
      return Command::help;
    case kPrefix:
      to_guest.push_back(kPrefix);
      return Command::none;
    default:
      to_guest.push_back(kPrefix);
      to_guest.push_back(byte);
      return Command::none;
  }
}

std::string_view EscapeFilter::help_text() {
  return "\r\n"
         "C-a x    exit the VMM\r\n"
         "C-a s    ask the guest to shut down (its power button)\r\n"
         "C-a h    print this help\r\n"
         "C-a C-a  send C-a to the guest\r\n";
}

}  // namespace libvmm
