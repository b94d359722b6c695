// Mappings of memory another process controls, such as a vhost-user front-end's guest RAM
// shared as a file descriptor: if that process shrinks the file, the next touch of a page past
// its new end raises SIGBUS, which would end this process. While a SigbusGuard covers such a
// mapping, the SIGBUS handler instead maps anonymous zero pages over all of it, the access goes
// on (it reads zeros, its writes go nowhere), and the owner is told through its eventfd; it then
// drops the peer, whose memory it can no longer see.
//
// Process-wide: one SIGBUS handler, installed with the first guard; at most kMaxGuards mappings
// guarded at once. A SIGBUS anywhere else ends the process as it would have without the handler
// (the previous disposition is restored and the access faults again).
#pragma once

#include <cstddef>

namespace libvmm {

class SigbusGuard {
 public:
  static constexpr size_t kMaxGuards = 64;

  // Guards [base, base + size) until destroyed, which must happen before the mapping is
  // unmapped. `notify` (an eventfd, or -1) gets a write when the guard trips. Throws
  // std::runtime_error when kMaxGuards guards exist already.
  SigbusGuard(void* base, size_t size, int notify);
  ~SigbusGuard();
  SigbusGuard(const SigbusGuard&) = delete;
  SigbusGuard& operator=(const SigbusGuard&) = delete;

  // Whether a SIGBUS in the mapping was caught (and the mapping replaced by zero pages).
  bool tripped() const;

 private:
  size_t slot_;
};

}  // namespace libvmm
