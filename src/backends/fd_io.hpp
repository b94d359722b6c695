// Private helpers of the character backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace libvmm {

// What a character backend reads from its fd at a time (a console takes it in pieces anyway).
inline constexpr size_t kCharReadChunk = 4096;

// Writes all of `bytes` to `fd`: retries short writes and EINTR, and waits for POLLOUT on
// EAGAIN (the fd may be non-blocking), for `timeout_ms` in all: a reader that stopped reading
// must not hold the caller (the event loop) for good. Returns false with errno set on any
// other error (ETIMEDOUT when the time ran out).
bool write_all(int fd, std::span<const uint8_t> bytes, int timeout_ms);

}  // namespace libvmm
