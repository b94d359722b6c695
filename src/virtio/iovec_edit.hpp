// Trimming host iovec lists built from descriptor chains: a device strips the parts of a chain
// that are not payload (a request header in front, a status byte at the end) before handing
// the rest to readv/writev-style I/O. Internal to the virtIO devices.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace libvmm {

// Removes `n` bytes from the front of `iov` (a header, or what a transfer already moved).
inline void iov_drop_front(std::vector<iovec>& iov, uint64_t n) {
  size_t done = 0;
  while (n > 0 && done < iov.size()) {
    iovec& v = iov[done];
    const uint64_t step = std::min<uint64_t>(n, v.iov_len);
    v.iov_base = static_cast<uint8_t*>(v.iov_base) + step;
    v.iov_len -= step;
    n -= step;
    if (v.iov_len == 0) ++done;
  }
  iov.erase(iov.begin(), iov.begin() + static_cast<ptrdiff_t>(done));
}

// Removes `n` bytes from the back of `iov` (a status byte ending the writable part).
inline void iov_drop_back(std::vector<iovec>& iov, uint64_t n) {
  while (n > 0 && !iov.empty()) {
    iovec& v = iov.back();
    const uint64_t step = std::min<uint64_t>(n, v.iov_len);
    v.iov_len -= step;
    n -= step;
    if (v.iov_len == 0) iov.pop_back();
  }
}

}  // namespace libvmm
