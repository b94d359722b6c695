// Private helpers of the character backends.
#pragma once

#include <cstdint>
#include <span>

namespace libvmm {

// Writes all of `bytes` to `fd`: retries short writes and EINTR, and waits for POLLOUT on
// EAGAIN (the fd may be non-blocking). Returns false with errno set on any other error.
bool write_all(int fd, std::span<const uint8_t> bytes);

}  // namespace libvmm
