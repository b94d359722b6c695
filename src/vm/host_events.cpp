#include "host_events.hpp"

#include <unistd.h>

namespace libvmm {

bool take_host_events(int fd) {
  char buffer[4096];
  bool fired = false;
  for (int i = 0; i < kHostEventReadsPerWakeup; ++i) {
    if (::read(fd, buffer, sizeof buffer) <= 0) break;  // drained (EAGAIN), closed or failing
    fired = true;
  }
  return fired;
}

}  // namespace libvmm
