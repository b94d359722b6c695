// Private helpers of the character backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace libvmm {

// What a character backend reads from its fd at a time (a console takes it in pieces anyway).
inline constexpr size_t kCharReadChunk = 4096;

// Writes all of `bytes` to `fd`: retries short writes and EINTR, and waits for POLLOUT on
// EAGAIN (the fd may be non-blocking). Returns false with errno set on any other error.
bool write_all(int fd, std::span<const uint8_t> bytes);

}  // namespace libvmm
